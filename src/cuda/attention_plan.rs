//! Host-side planning of the attention launches, shared by the CUDA wrappers
//! (`super::attention`) and the CPU emulator of the kernels (`super::emulator`):
//! argument checks, block sizes, and the tile tables that map each block to its
//! segment and first row, so ragged segments need no padding. Plain host code,
//! compiled and tested in every build.

pub use crate::cpu::attention::AttnShape;
use crate::error::Result;
use crate::{arg_err, shape_err};

/// Query rows per block of the SIMT forward, of the tensor-core forward, of the
/// SIMT and tensor-core dQ kernels, and keys per SIMT and tensor-core dK/dV
/// block (FWD_BQ, MMA_BQ, DQ_BQ, MMA_DQ_BQ, DKV_BK and MMA_DKV_BK in
/// `cuda/attention.cu`).
pub const FWD_BQ: usize = 16;
pub const MMA_BQ: usize = 64;
pub const DQ_BQ: usize = 8;
pub const MMA_DQ_BQ: usize = 64;
pub const DKV_BK: usize = 32;
pub const MMA_DKV_BK: usize = 64;
/// Threads per forward block (4 warps for both kernels).
pub const FORWARD_THREADS: u32 = 128;
/// Threads per SIMT dQ block (4 warps), SIMT dK/dV block (8 warps) and
/// tensor-core backward block (4 warps, MMA_BWD_THREADS).
pub const DQ_THREADS: u32 = 128;
pub const DKV_THREADS: u32 = 256;
pub const MMA_BWD_THREADS: u32 = 128;
/// `attention_backward_delta` and `attention_merge`: one warp per (token, head)
/// row, 8 rows per block.
pub const DELTA_ROWS_PER_BLOCK: usize = 8;
pub const DELTA_THREADS: u32 = 256;
pub const MERGE_ROWS_PER_BLOCK: usize = DELTA_ROWS_PER_BLOCK;
pub const MERGE_THREADS: u32 = DELTA_THREADS;
/// Most samples per cascade-decode group: one warp each in a block of at most
/// 1024 threads.
pub const MAX_GROUP: usize = 32;

/// Which attention kernels run, forward and backward: both sets have the same
/// contract (and the same parity tests); the tensor-core one is the default,
/// the SIMT one the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// f32 FMAs, one key per lane (`attention_forward_d*`, `attention_backward_{dq,dkv}_d*`).
    Simt,
    /// mma.m16n8k16 bf16 tensor cores, FlashAttention-2 work split
    /// (`attention_forward_mma_d*`, `attention_backward_{dq,dkv}_mma_d*`).
    TensorCore,
}

impl AttentionKernel {
    /// The tensor-core kernel, unless `ACTIAL_ATTENTION_KERNEL=simt` (for
    /// bisecting a wrong result on a new GPU).
    pub fn from_env() -> Self {
        match std::env::var("ACTIAL_ATTENTION_KERNEL").as_deref() {
            Ok("simt") => AttentionKernel::Simt,
            _ => AttentionKernel::TensorCore,
        }
    }

    /// Query rows one forward block covers.
    pub fn rows_per_block(self) -> usize {
        match self {
            AttentionKernel::Simt => FWD_BQ,
            AttentionKernel::TensorCore => MMA_BQ,
        }
    }

    /// Query rows per dQ block, keys per dK/dV block, and their threads.
    pub fn backward_blocks(self) -> (usize, u32, usize, u32) {
        match self {
            AttentionKernel::Simt => (DQ_BQ, DQ_THREADS, DKV_BK, DKV_THREADS),
            AttentionKernel::TensorCore => (MMA_DQ_BQ, MMA_BWD_THREADS, MMA_DKV_BK, MMA_BWD_THREADS),
        }
    }
}

pub fn check_shape(op: &'static str, s: &AttnShape) -> Result<()> {
    if s.q_heads == 0 || s.kv_heads == 0 || !s.q_heads.is_multiple_of(s.kv_heads) {
        return Err(arg_err!(op, "{} query heads must be a positive multiple of {} kv heads", s.q_heads, s.kv_heads));
    }
    Ok(())
}

/// Checks offsets are `[0, ..., total]`, non-decreasing, and converts them.
pub fn offsets(op: &'static str, what: &str, cu: &[usize]) -> Result<Vec<i32>> {
    if cu.first() != Some(&0) || cu.windows(2).any(|w| w[1] < w[0]) || *cu.last().unwrap() > i32::MAX as usize {
        return Err(arg_err!(op, "{what} must start at 0 and never decrease, got {cu:?}"));
    }
    Ok(cu.iter().map(|&x| x as i32).collect())
}

/// `(segment, first row)` of every tile of `rows` rows.
pub fn tiles(cu: &[usize], rows: usize) -> (Vec<i32>, Vec<i32>) {
    let (mut seg, mut first) = (Vec::new(), Vec::new());
    for (s, w) in cu.windows(2).enumerate() {
        for r in (w[0]..w[1]).step_by(rows) {
            seg.push(s as i32);
            first.push(r as i32);
        }
    }
    (seg, first)
}

/// Everything one forward launch needs from the host: checked offsets, the
/// tile tables (one block per tile along x, one per query head along y) and
/// the totals the buffers must match.
#[derive(Debug)]
pub struct ForwardPlan {
    pub cu_q: Vec<i32>,
    pub cu_k: Vec<i32>,
    pub tile_seg: Vec<i32>,
    pub tile_row: Vec<i32>,
    /// Query and key tokens.
    pub tq: usize,
    pub tk: usize,
}

/// Plans a forward with separate query and key segments (decoding against a
/// cache when a query segment is shorter than its key segment).
pub fn forward_plan(
    op: &'static str,
    kernel: AttentionKernel,
    cu_q: &[usize],
    cu_k: &[usize],
    s: &AttnShape,
) -> Result<ForwardPlan> {
    check_shape(op, s)?;
    if cu_q.len() != cu_k.len() || cu_q.is_empty() {
        return Err(shape_err!(
            op,
            "{} query offsets and {} key offsets: one key segment per query segment",
            cu_q.len(),
            cu_k.len()
        ));
    }
    let (cq, ck) = (offsets(op, "cu_q", cu_q)?, offsets(op, "cu_k", cu_k)?);
    // Causal masks align bottom-right, which needs keys >= queries; bidirectional
    // segments may have fewer keys (the kernels take k_stop = the segment's end).
    if let Some(i) = (0..cu_q.len() - 1).find(|&i| s.causal && cu_q[i + 1] - cu_q[i] > cu_k[i + 1] - cu_k[i]) {
        return Err(shape_err!(op, "causal segment {i} has more queries than keys"));
    }
    let (tile_seg, tile_row) = tiles(cu_q, kernel.rows_per_block());
    Ok(ForwardPlan { cu_q: cq, cu_k: ck, tile_seg, tile_row, tq: *cu_q.last().unwrap(), tk: *cu_k.last().unwrap() })
}

/// The backward of self-attention (`cu_q == cu_k`): checked offsets and the
/// tile tables of the dQ kernel (query tiles) and the dK/dV kernel (key tiles).
#[derive(Debug)]
pub struct BackwardPlan {
    pub cu: Vec<i32>,
    pub dq_seg: Vec<i32>,
    pub dq_row: Vec<i32>,
    pub dkv_seg: Vec<i32>,
    pub dkv_row: Vec<i32>,
    pub dq_threads: u32,
    pub dkv_threads: u32,
    /// Tokens.
    pub t: usize,
}

pub fn backward_plan(op: &'static str, kernel: AttentionKernel, cu: &[usize], s: &AttnShape) -> Result<BackwardPlan> {
    check_shape(op, s)?;
    if cu.is_empty() {
        return Err(shape_err!(op, "cu_seqlens is empty"));
    }
    let c = offsets(op, "cu_seqlens", cu)?;
    let (dq_rows, dq_threads, dkv_keys, dkv_threads) = kernel.backward_blocks();
    let (dq_seg, dq_row) = tiles(cu, dq_rows);
    let (dkv_seg, dkv_row) = tiles(cu, dkv_keys);
    Ok(BackwardPlan { cu: c, dq_seg, dq_row, dkv_seg, dkv_row, dq_threads, dkv_threads, t: *cu.last().unwrap() })
}

/// Where each per-step array sits in the packed `rows` buffer of a paged
/// decoding step (one upload shared by every layer): `cu_group [G + 1]`,
/// `group_slot [G]`, `prefix_len [G]`, `sample_slot [S]`, `suffix_len [S]`,
/// `store_row [S]` (the pool row of each sample's newest key and value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeRowsLayout {
    pub groups: usize,
    pub samples: usize,
}

impl DecodeRowsLayout {
    pub fn cu_group(&self) -> std::ops::Range<usize> {
        0..self.groups + 1
    }
    pub fn group_slot(&self) -> std::ops::Range<usize> {
        let a = self.groups + 1;
        a..a + self.groups
    }
    pub fn prefix_len(&self) -> std::ops::Range<usize> {
        let a = 2 * self.groups + 1;
        a..a + self.groups
    }
    pub fn sample_slot(&self) -> std::ops::Range<usize> {
        let a = 3 * self.groups + 1;
        a..a + self.samples
    }
    pub fn suffix_len(&self) -> std::ops::Range<usize> {
        let a = 3 * self.groups + 1 + self.samples;
        a..a + self.samples
    }
    pub fn store_row(&self) -> std::ops::Range<usize> {
        let a = 3 * self.groups + 1 + 2 * self.samples;
        a..a + self.samples
    }
    pub fn len(&self) -> usize {
        3 * self.groups + 1 + 3 * self.samples
    }
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }
}

/// One paged cascade-decode step: one block per group of `threads` (one warp
/// per sample of the widest group).
#[derive(Debug)]
pub struct PagedPlan {
    pub layout: DecodeRowsLayout,
    pub threads: u32,
}

/// Checks a step's group offsets (`cu_group`, host copy) against the packed
/// rows' length and the kernel's widest group.
pub fn paged_plan(op: &'static str, cu_group: &[usize], packed_len: usize, s: &AttnShape) -> Result<PagedPlan> {
    check_shape(op, s)?;
    let groups = cu_group.len().saturating_sub(1);
    if groups == 0 {
        return Err(shape_err!(op, "no groups"));
    }
    offsets(op, "cu_group", cu_group)?;
    let layout = DecodeRowsLayout { groups, samples: *cu_group.last().unwrap() };
    if packed_len != layout.len() {
        return Err(shape_err!(
            op,
            "{packed_len} packed row entries for {groups} groups of {} samples (expected {})",
            layout.samples,
            layout.len()
        ));
    }
    let widest = cu_group.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    if widest > MAX_GROUP {
        return Err(arg_err!(op, "a group of {widest} samples; at most {MAX_GROUP} per group"));
    }
    Ok(PagedPlan { layout, threads: (32 * widest.max(1)) as u32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_every_row_of_ragged_segments_once() {
        let cu = [0usize, 1, 1, 65, 200];
        for rows in [FWD_BQ, MMA_BQ] {
            let (seg, first) = tiles(&cu, rows);
            let mut covered = vec![0u32; 200];
            for (&s, &f) in seg.iter().zip(&first) {
                let (s, f) = (s as usize, f as usize);
                assert!(cu[s] <= f && f < cu[s + 1], "tile starts inside its segment");
                for c in &mut covered[f..(f + rows).min(cu[s + 1])] {
                    *c += 1;
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "rows per tile {rows}: {covered:?}");
        }
        assert_eq!(tiles(&cu, MMA_BQ).0, vec![0, 2, 3, 3, 3]);
    }

    #[test]
    fn forward_plans_reject_bad_offsets_and_more_queries_than_keys() {
        let s = AttnShape { q_heads: 4, kv_heads: 2, head_dim: 64, scale: 0.125, causal: true };
        let plan = forward_plan("t", AttentionKernel::TensorCore, &[0, 3, 70], &[0, 10, 80], &s).unwrap();
        assert_eq!((plan.tq, plan.tk, plan.tile_seg.len()), (70, 80, 3));
        let err = |r: Result<ForwardPlan>| r.unwrap_err().to_string();
        assert!(err(forward_plan("t", AttentionKernel::Simt, &[0, 5], &[0, 4], &s)).contains("more queries than keys"));
        // Without a causal mask a segment may have fewer keys than queries.
        let bidir = AttnShape { causal: false, ..s };
        assert_eq!(forward_plan("t", AttentionKernel::TensorCore, &[0, 33], &[0, 5], &bidir).unwrap().tk, 5);
        assert!(err(forward_plan("t", AttentionKernel::Simt, &[0, 5, 3], &[0, 5, 9], &s)).contains("never decrease"));
        assert!(err(forward_plan("t", AttentionKernel::Simt, &[0, 5], &[0, 5, 9], &s)).contains("one key segment"));
        let odd = AttnShape { kv_heads: 3, ..s };
        assert!(err(forward_plan("t", AttentionKernel::Simt, &[0, 5], &[0, 5], &odd)).contains("multiple of 3"));
    }
}
