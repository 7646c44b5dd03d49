//! A paged KV cache at the op level: block tables, one decoding step's rows,
//! storing each sample's newest key and value, and the cascade decode
//! attention that reads prefixes and suffixes through the tables.
//!
//! Keys and values of a layer live in pools `[blocks · block_size, Hkv, D]`; a
//! table row lists a sequence's blocks, so its key `r` sits at pool row
//! `table[r / block_size] · block_size + r % block_size`. All layers share one
//! block numbering (`model::kv_pool::KvPool`), so a step's rows are uploaded
//! once and serve every layer.

use super::cuda;
use super::{AttnOut, AttnSpec, attention_kv, common_device, expect_rank, index_select, merge_attention};
use crate::error::Result;
use crate::tensor::{Device, Tensor};
use crate::{arg_err, shape_err};

/// A block table: `rows × width` block ids, kept on the host (what the pool
/// allocates from) and on the pool's device (what the kernels read). Changes
/// are batched: [`BlockTable::sync`] sends them in one upload.
pub struct BlockTable {
    width: usize,
    host: Vec<i32>,
    device: Tensor,
    pending: Vec<(usize, i32)>,
}

impl BlockTable {
    pub fn new(rows: usize, width: usize, device: Device) -> Result<BlockTable> {
        let host = vec![0i32; rows * width];
        let device = Tensor::from_i32(host.clone(), [rows * width], Device::Cpu)?.to_device(device)?;
        Ok(BlockTable { width, host, device, pending: Vec::new() })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn rows(&self) -> usize {
        self.host.len() / self.width.max(1)
    }

    /// Sets entry `col` of table row `row` to `block` (sent by the next sync).
    pub fn set(&mut self, row: usize, col: usize, block: u32) -> Result<()> {
        if col >= self.width || row >= self.rows() {
            return Err(arg_err!(
                "BlockTable::set",
                "entry ({row}, {col}) is outside a {} x {} table",
                self.rows(),
                self.width
            ));
        }
        let i = row * self.width + col;
        self.host[i] = block as i32;
        self.pending.push((i, block as i32));
        Ok(())
    }

    /// Table row `row` as the host sees it.
    pub fn row(&self, row: usize) -> &[i32] {
        &self.host[row * self.width..(row + 1) * self.width]
    }

    /// Sends the changes since the last sync to the device: one upload and one
    /// launch on CUDA, whatever their number.
    pub fn sync(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.device.device() {
            Device::Cpu => self.device = Tensor::from_i32(self.host.clone(), [self.host.len()], Device::Cpu)?,
            Device::Cuda(_) => cuda::scatter_i32(&mut self.device, &self.pending)?,
        }
        self.pending.clear();
        Ok(())
    }

    /// The table on its device (synced).
    pub fn device(&self) -> Result<&Tensor> {
        if !self.pending.is_empty() {
            return Err(arg_err!("BlockTable::device", "{} changes not synced", self.pending.len()));
        }
        Ok(&self.device)
    }
}

/// One decoding step's rows, shared by every layer: samples are grouped by
/// prompt (`cu_group`); each group has a prefix table row and key count, each
/// sample a suffix table row, a key count (its newest key included) and the
/// pool row its newest key and value go to. Kept on the host and packed into
/// one i32 tensor on the device (one upload per step).
pub struct DecodeRows {
    pub cu_group: Vec<usize>,
    pub group_slot: Vec<i32>,
    pub prefix_len: Vec<i32>,
    pub sample_slot: Vec<i32>,
    pub suffix_len: Vec<i32>,
    pub store_row: Vec<i32>,
    /// `[cu_group | group_slot | prefix_len | sample_slot | suffix_len | store_row]`.
    pub packed: Tensor,
}

impl DecodeRows {
    pub fn new(
        cu_group: Vec<usize>,
        group_slot: Vec<i32>,
        prefix_len: Vec<i32>,
        sample_slot: Vec<i32>,
        suffix_len: Vec<i32>,
        store_row: Vec<i32>,
        device: Device,
    ) -> Result<DecodeRows> {
        const OP: &str = "DecodeRows::new";
        let groups = cu_group.len().saturating_sub(1);
        let samples = cu_group.last().copied().unwrap_or(0);
        if cu_group.first() != Some(&0) || cu_group.windows(2).any(|w| w[1] < w[0]) {
            return Err(arg_err!(OP, "cu_group {cu_group:?} does not rise from 0"));
        }
        if group_slot.len() != groups || prefix_len.len() != groups {
            return Err(shape_err!(
                OP,
                "{groups} groups, {} group slots, {} prefix lengths",
                group_slot.len(),
                prefix_len.len()
            ));
        }
        if [sample_slot.len(), suffix_len.len(), store_row.len()].iter().any(|&n| n != samples) {
            return Err(shape_err!(
                OP,
                "{samples} samples, {} sample slots, {} suffix lengths, {} store rows",
                sample_slot.len(),
                suffix_len.len(),
                store_row.len()
            ));
        }
        let mut packed: Vec<i32> = cu_group.iter().map(|&c| c as i32).collect();
        for part in [&group_slot, &prefix_len, &sample_slot, &suffix_len, &store_row] {
            packed.extend_from_slice(part);
        }
        let n = packed.len();
        let packed = Tensor::from_i32(packed, [n], Device::Cpu)?.to_device(device)?;
        Ok(DecodeRows { cu_group, group_slot, prefix_len, sample_slot, suffix_len, store_row, packed })
    }

    pub fn samples(&self) -> usize {
        self.cu_group.last().copied().unwrap_or(0)
    }

    pub fn groups(&self) -> usize {
        self.cu_group.len().saturating_sub(1)
    }
}

/// One layer's paged KV: its pools and the (shared) block tables.
pub struct PagedKv<'a> {
    pub k_pool: &'a Tensor,
    pub v_pool: &'a Tensor,
    pub block_size: usize,
    pub prefix: &'a BlockTable,
    pub suffix: &'a BlockTable,
}

/// Pool rows of keys `0..len` of a sequence whose blocks are `table`.
fn pool_rows(table: &[i32], block_size: usize, len: usize, out: &mut Vec<i32>) {
    out.extend((0..len).map(|r| table[r / block_size] * block_size as i32 + (r % block_size) as i32));
}

/// Where [`store_kv`] writes: pool rows on the host (checked) and the same
/// rows on the pool's device, as `range` of an i32 tensor (a decoding step's
/// packed rows, or a prefill's own upload).
pub struct StoreRows<'a> {
    pub host: &'a [i32],
    pub device: &'a Tensor,
    pub range: std::ops::Range<usize>,
}

impl DecodeRows {
    /// The rows each sample's newest key and value go to.
    pub fn store_rows(&self) -> StoreRows<'_> {
        let (g, s) = (self.groups(), self.samples());
        let start = 3 * g + 1 + 2 * s;
        StoreRows { host: &self.store_row, device: &self.packed, range: start..start + s }
    }
}

/// Stores keys and values `k, v: [n, Hkv, D]` at pool rows `rows`: one launch
/// per pool on CUDA.
pub fn store_kv(k_pool: &mut Tensor, v_pool: &mut Tensor, k: &Tensor, v: &Tensor, rows: &StoreRows<'_>) -> Result<()> {
    let _profile = super::profile::scope("kv cache", "store_kv");
    const OP: &str = "store_kv";
    let n = rows.host.len();
    if rows.range.len() != n || rows.range.end > rows.device.numel() {
        return Err(shape_err!(OP, "{n} rows, device range {:?} of {}", rows.range, rows.device.numel()));
    }
    for (what, pool, new) in [("k", &*k_pool, k), ("v", &*v_pool, v)] {
        expect_rank(OP, what, new, 3)?;
        if new.dims()[0] != n || pool.rank() != 3 || pool.dims()[1..] != new.dims()[1..] {
            return Err(shape_err!(OP, "{what} {} into a pool {} at {n} rows", new.shape(), pool.shape()));
        }
    }
    let pool_rows = k_pool.dims()[0];
    if let Some(&bad) = rows.host.iter().find(|&&r| r < 0 || r as usize >= pool_rows) {
        return Err(arg_err!(OP, "row {bad} is outside a pool of {pool_rows} rows"));
    }
    match common_device(OP, &[k_pool, v_pool, k, v, rows.device])? {
        Device::Cpu => {
            let inner = k.numel() / n.max(1);
            for (pool, new) in [(k_pool, k), (v_pool, v)] {
                let src = new.f32_cow(OP, "new rows")?.into_owned();
                let dst = pool.f32_slice_mut(OP, "pool")?;
                for (i, &r) in rows.host.iter().enumerate() {
                    let r = r as usize;
                    dst[r * inner..(r + 1) * inner].copy_from_slice(&src[i * inner..(i + 1) * inner]);
                }
            }
            Ok(())
        }
        Device::Cuda(_) => cuda::store_kv(k_pool, v_pool, k, v, rows),
    }
}

/// One decoding step for `S` samples grouped by prompt: query `i` (`q: [S,
/// Hq, D]`) attends to its group's prefix and its own suffix, both read
/// through the block tables. On the CPU: the rows gathered, then attention
/// over the prefixes and over the suffixes merged by log-sum-exp; on CUDA one
/// cascade kernel that reads a group's prefix once for all its samples.
pub fn attention_decode_paged(q: &Tensor, kv: &PagedKv<'_>, rows: &DecodeRows, scale: f32) -> Result<AttnOut> {
    let _profile = super::profile::scope("kv cache", "attention_decode_paged");
    const OP: &str = "attention_decode_paged";
    expect_rank(OP, "q", q, 3)?;
    expect_rank(OP, "k_pool", kv.k_pool, 3)?;
    let s = rows.samples();
    if q.dims()[0] != s {
        return Err(shape_err!(OP, "q {} for {s} samples", q.shape()));
    }
    let (pool_rows_n, bs) = (kv.k_pool.dims()[0], kv.block_size);
    if bs == 0 || !pool_rows_n.is_multiple_of(bs) || kv.v_pool.dims() != kv.k_pool.dims() {
        return Err(shape_err!(OP, "pools {} and {} in blocks of {bs}", kv.k_pool.shape(), kv.v_pool.shape()));
    }
    // Every slot, length and table entry read below must be in range: the
    // kernel trusts them.
    let blocks = (pool_rows_n / bs) as i32;
    let check = |table: &BlockTable, slots: &[i32], lens: &[i32], what: &str| -> Result<()> {
        for (&slot, &len) in slots.iter().zip(lens) {
            if slot < 0 || slot as usize >= table.rows() || len < 0 || len as usize > table.width() * bs {
                return Err(arg_err!(
                    OP,
                    "{what}: slot {slot} of {}, {len} keys of at most {}",
                    table.rows(),
                    table.width() * bs
                ));
            }
            let used = (len as usize).div_ceil(bs);
            if let Some(&b) = table.row(slot as usize)[..used].iter().find(|&&b| b < 0 || b >= blocks) {
                return Err(arg_err!(OP, "{what}: block {b} of a pool of {blocks}"));
            }
        }
        Ok(())
    };
    check(kv.prefix, &rows.group_slot, &rows.prefix_len, "prefix")?;
    check(kv.suffix, &rows.sample_slot, &rows.suffix_len, "suffix")?;
    let composed = || -> Result<AttnOut> {
        let (mut pre_rows, mut cu_pre) = (Vec::new(), vec![0i32]);
        for (&slot, &len) in rows.group_slot.iter().zip(&rows.prefix_len) {
            pool_rows(kv.prefix.row(slot as usize), bs, len as usize, &mut pre_rows);
            cu_pre.push(pre_rows.len() as i32);
        }
        let (mut suf_rows, mut cu_suf) = (Vec::new(), vec![0i32]);
        for (&slot, &len) in rows.sample_slot.iter().zip(&rows.suffix_len) {
            pool_rows(kv.suffix.row(slot as usize), bs, len as usize, &mut suf_rows);
            cu_suf.push(suf_rows.len() as i32);
        }
        let (hkv, d) = (kv.k_pool.dims()[1], kv.k_pool.dims()[2]);
        let gather = |pool: &Tensor, idx: &[i32]| -> Result<Tensor> {
            let flat = pool.reshape([pool_rows_n, hkv * d])?;
            index_select(&flat, &Tensor::from_i32(idx.to_vec(), [idx.len()], Device::Cpu)?)?.reshape([
                idx.len(),
                hkv,
                d,
            ])
        };
        let ints = |v: Vec<i32>| -> Result<Tensor> {
            let n = v.len();
            Tensor::from_i32(v, [n], Device::Cpu)
        };
        let cu_group = ints(rows.cu_group.iter().map(|&c| c as i32).collect())?;
        let (kp, vp) = (gather(kv.k_pool, &pre_rows)?, gather(kv.v_pool, &pre_rows)?);
        let pre = attention_kv(q, &kp, &vp, &cu_group, &ints(cu_pre)?, AttnSpec { scale, causal: false })?;
        let (ks, vs) = (gather(kv.k_pool, &suf_rows)?, gather(kv.v_pool, &suf_rows)?);
        let one_each = ints((0..=s as i32).collect())?;
        let suf = attention_kv(q, &ks, &vs, &one_each, &ints(cu_suf)?, AttnSpec { scale, causal: true })?;
        merge_attention(&pre, &suf)
    };
    match common_device(OP, &[q, kv.k_pool, kv.v_pool, &rows.packed])? {
        Device::Cpu => composed(),
        Device::Cuda(_) => cuda::attention_decode_paged(q, kv, rows, scale, composed),
    }
}
