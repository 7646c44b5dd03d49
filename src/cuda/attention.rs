//! Launch wrappers for `cuda/attention.cu`: varlen forward (training, prefill,
//! decoding against a cache), its backward (dQ; dK and dV), and the cascade
//! decode from a paged KV cache for GRPO groups that share a prompt prefix. Shapes and masks follow
//! `src/cpu/attention.rs` exactly; the host plans (argument checks, tile tables
//! that map each block to its segment and first row) are in `attention_plan`,
//! shared with the CPU emulator of these kernels.

use cudarc::driver::{CudaSlice, LaunchConfig};
use half::bf16;

pub use super::attention_plan::{AttentionKernel, AttnShape, DecodeRowsLayout, MAX_GROUP};
use super::attention_plan::{
    DELTA_ROWS_PER_BLOCK, DELTA_THREADS, FORWARD_THREADS, MERGE_ROWS_PER_BLOCK, MERGE_THREADS, backward_plan,
    forward_plan, paged_plan,
};
use super::device::{CudaDevice, check_len, launch, params};
use crate::arg_err;
use crate::error::Result;

/// Kernel names for one head dim.
struct Kernels {
    forward: &'static str,
    forward_mma: &'static str,
    dq: &'static str,
    dkv: &'static str,
    dq_mma: &'static str,
    dkv_mma: &'static str,
    paged: &'static str,
}

fn kernels(op: &'static str, head_dim: usize) -> Result<Kernels> {
    macro_rules! named {
        ($d:literal) => {
            Kernels {
                forward: concat!("attention_forward_d", $d),
                forward_mma: concat!("attention_forward_mma_d", $d),
                dq: concat!("attention_backward_dq_d", $d),
                dkv: concat!("attention_backward_dkv_d", $d),
                dq_mma: concat!("attention_backward_dq_mma_d", $d),
                dkv_mma: concat!("attention_backward_dkv_mma_d", $d),
                paged: concat!("attention_decode_paged_d", $d),
            }
        };
    }
    Ok(match head_dim {
        32 => named!("32"),
        64 => named!("64"),
        80 => named!("80"),
        128 => named!("128"),
        d => return Err(arg_err!(op, "head dim {d} has no kernel (32, 64, 80 and 128 are compiled)")),
    })
}

fn attn_params(s: &AttnShape) -> params::ActialAttentionParams {
    params::ActialAttentionParams {
        q_heads: s.q_heads as i32,
        kv_heads: s.kv_heads as i32,
        causal: s.causal as i32,
        scale: s.scale,
    }
}

fn grid(x: usize, y: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (x as u32, y as u32, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Forward with separate query and key segments (`cu_q == cu_k`: ordinary varlen
/// attention; shorter query segments: decoding against a cache). Returns
/// `(out [Tq, Hq, D], lse [Tq, Hq])`. Runs [`AttentionKernel::from_env`].
pub fn attention_forward(
    dev: &CudaDevice,
    q: &CudaSlice<bf16>,
    k: &CudaSlice<bf16>,
    v: &CudaSlice<bf16>,
    cu_q: &[usize],
    cu_k: &[usize],
    s: &AttnShape,
) -> Result<(CudaSlice<bf16>, CudaSlice<f32>)> {
    attention_forward_with(AttentionKernel::from_env(), dev, q, k, v, cu_q, cu_k, s)
}

/// [`attention_forward`] on a chosen kernel (the parity tests and benches run both).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_with(
    kernel: AttentionKernel,
    dev: &CudaDevice,
    q: &CudaSlice<bf16>,
    k: &CudaSlice<bf16>,
    v: &CudaSlice<bf16>,
    cu_q: &[usize],
    cu_k: &[usize],
    s: &AttnShape,
) -> Result<(CudaSlice<bf16>, CudaSlice<f32>)> {
    const OP: &str = "cuda::attention_forward";
    let names = kernels(OP, s.head_dim)?;
    // The tensor-core kernel moves K and V rows in 16-byte vectors; pool
    // allocations are 256-byte aligned, but a buffer from elsewhere may not be.
    let aligned = [dev.address(q), dev.address(k), dev.address(v)].iter().all(|a| a % 16 == 0);
    let kernel = if aligned { kernel } else { AttentionKernel::Simt };
    let fwd = match kernel {
        AttentionKernel::TensorCore => names.forward_mma,
        AttentionKernel::Simt => names.forward,
    };
    let plan = forward_plan(OP, kernel, cu_q, cu_k, s)?;
    let (tq, tk, d) = (plan.tq, plan.tk, s.head_dim);
    check_len(OP, "q", q.len(), tq * s.q_heads * d)?;
    check_len(OP, "k", k.len(), tk * s.kv_heads * d)?;
    check_len(OP, "v", v.len(), tk * s.kv_heads * d)?;
    let mut out = dev.zeros::<bf16>(tq * s.q_heads * d, OP)?;
    let mut lse = dev.zeros::<f32>(tq * s.q_heads, OP)?;
    if plan.tile_seg.is_empty() {
        return Ok((out, lse));
    }
    let (d_cq, d_ck, d_seg, d_first) = (
        dev.upload(&plan.cu_q, OP)?,
        dev.upload(&plan.cu_k, OP)?,
        dev.upload(&plan.tile_seg, OP)?,
        dev.upload(&plan.tile_row, OP)?,
    );
    let p = attn_params(s);
    let shapes = format!(
        "q [{tq}, {}, {d}], k [{tk}, {}, {d}], {} segments, causal {}",
        s.q_heads,
        s.kv_heads,
        cu_q.len() - 1,
        s.causal
    );
    launch!(dev, fwd, grid(plan.tile_seg.len(), s.q_heads, FORWARD_THREADS), shapes;
        q, k, v, &d_cq, &d_ck, &d_seg, &d_first, &p, &mut out, &mut lse)?;
    Ok((out, lse))
}

/// Backward of self-attention (`cu_q == cu_k`), as `cpu::attention::attention_backward`.
/// Returns `(dq, dk, dv)`. Runs [`AttentionKernel::from_env`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dev: &CudaDevice,
    q: &CudaSlice<bf16>,
    k: &CudaSlice<bf16>,
    v: &CudaSlice<bf16>,
    out: &CudaSlice<bf16>,
    lse: &CudaSlice<f32>,
    dout: &CudaSlice<bf16>,
    cu: &[usize],
    s: &AttnShape,
) -> Result<(CudaSlice<bf16>, CudaSlice<bf16>, CudaSlice<bf16>)> {
    attention_backward_with(AttentionKernel::from_env(), dev, q, k, v, out, lse, dout, cu, s)
}

/// [`attention_backward`] on a chosen set of kernels.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with(
    kernel: AttentionKernel,
    dev: &CudaDevice,
    q: &CudaSlice<bf16>,
    k: &CudaSlice<bf16>,
    v: &CudaSlice<bf16>,
    out: &CudaSlice<bf16>,
    lse: &CudaSlice<f32>,
    dout: &CudaSlice<bf16>,
    cu: &[usize],
    s: &AttnShape,
) -> Result<(CudaSlice<bf16>, CudaSlice<bf16>, CudaSlice<bf16>)> {
    const OP: &str = "cuda::attention_backward";
    let names = kernels(OP, s.head_dim)?;
    // 16-byte row loads in the tensor-core kernels, as in the forward.
    let aligned = [dev.address(q), dev.address(k), dev.address(v), dev.address(dout)].iter().all(|a| a % 16 == 0);
    let kernel = if aligned { kernel } else { AttentionKernel::Simt };
    let (dq_k, dkv_k) = match kernel {
        AttentionKernel::TensorCore => (names.dq_mma, names.dkv_mma),
        AttentionKernel::Simt => (names.dq, names.dkv),
    };
    let plan = backward_plan(OP, kernel, cu, s)?;
    let (t, d) = (plan.t, s.head_dim);
    for (what, buf, heads) in [
        ("q", q, s.q_heads),
        ("k", k, s.kv_heads),
        ("v", v, s.kv_heads),
        ("out", out, s.q_heads),
        ("dout", dout, s.q_heads),
    ] {
        check_len(OP, what, buf.len(), t * heads * d)?;
    }
    check_len(OP, "lse", lse.len(), t * s.q_heads)?;
    let mut dq = dev.zeros::<bf16>(t * s.q_heads * d, OP)?;
    let mut dk = dev.zeros::<bf16>(t * s.kv_heads * d, OP)?;
    let mut dv = dev.zeros::<bf16>(t * s.kv_heads * d, OP)?;
    if t == 0 {
        return Ok((dq, dk, dv));
    }
    let shapes = format!("[{t}, {}/{}, {d}], {} segments, causal {}", s.q_heads, s.kv_heads, cu.len() - 1, s.causal);
    let rows = (t * s.q_heads) as i32;
    let hd = d as i32;
    let mut delta = dev.uninit::<f32>(t * s.q_heads, OP)?;
    launch!(dev, "attention_backward_delta", grid((t * s.q_heads).div_ceil(DELTA_ROWS_PER_BLOCK), 1, DELTA_THREADS), &shapes;
        out, dout, &mut delta, &rows, &hd)?;
    let d_cu = dev.upload(&plan.cu, OP)?;
    let p = attn_params(s);
    let (d_seg, d_first) = (dev.upload(&plan.dq_seg, OP)?, dev.upload(&plan.dq_row, OP)?);
    launch!(dev, dq_k, grid(plan.dq_seg.len(), s.q_heads, plan.dq_threads), &shapes;
        q, k, v, dout, lse, &delta, &d_cu, &d_seg, &d_first, &p, &mut dq)?;
    let (d_seg, d_first) = (dev.upload(&plan.dkv_seg, OP)?, dev.upload(&plan.dkv_row, OP)?);
    launch!(dev, dkv_k, grid(plan.dkv_seg.len(), s.kv_heads, plan.dkv_threads), &shapes;
        q, k, v, dout, lse, &delta, &d_cu, &d_seg, &d_first, &p, &mut dk, &mut dv)?;
    Ok((dq, dk, dv))
}

/// A paged KV cache of one layer as the decode kernel reads it: key and value
/// pools `[pool_rows, Hkv, D]` in blocks of `block_size` rows, and the block
/// tables of the prefixes (`[group slots, prefix_table_width]`) and suffixes
/// (`[sample slots, suffix_table_width]`).
pub struct PagedKv<'a> {
    pub k_pool: &'a CudaSlice<bf16>,
    pub v_pool: &'a CudaSlice<bf16>,
    pub pool_rows: usize,
    pub block_size: usize,
    pub prefix_table: &'a CudaSlice<i32>,
    pub prefix_table_width: usize,
    pub suffix_table: &'a CudaSlice<i32>,
    pub suffix_table_width: usize,
}

impl PagedKv<'_> {
    fn params(&self) -> params::ActialPagedKv {
        params::ActialPagedKv {
            block_size: self.block_size as i32,
            prefix_table_width: self.prefix_table_width as i32,
            suffix_table_width: self.suffix_table_width as i32,
        }
    }
}

/// One query token per sample (`q: [samples, Hq, D]`) against its group's
/// prefix and its own suffix in a paged cache; `rows` is the step's packed
/// per-group and per-sample arrays ([`DecodeRowsLayout`]), `cu_group` its
/// group offsets on the host (the grid). Returns `(out [samples, Hq, D], lse
/// [samples, Hq])`. Table entries and slots are not checked here (the CPU
/// emulator's twin checks them): the caller's block pool hands them out.
pub fn attention_decode_paged(
    dev: &CudaDevice,
    q: &CudaSlice<bf16>,
    kv: &PagedKv<'_>,
    rows: &CudaSlice<i32>,
    cu_group: &[usize],
    s: &AttnShape,
) -> Result<(CudaSlice<bf16>, CudaSlice<f32>)> {
    const OP: &str = "cuda::attention_decode_paged";
    let dec = kernels(OP, s.head_dim)?.paged;
    let plan = paged_plan(OP, cu_group, rows.len(), s)?;
    let (l, d) = (plan.layout, s.head_dim);
    check_len(OP, "q", q.len(), l.samples * s.q_heads * d)?;
    check_len(OP, "k_pool", kv.k_pool.len(), kv.pool_rows * s.kv_heads * d)?;
    check_len(OP, "v_pool", kv.v_pool.len(), kv.pool_rows * s.kv_heads * d)?;
    if kv.block_size == 0 || !kv.pool_rows.is_multiple_of(kv.block_size) {
        return Err(arg_err!(OP, "{} pool rows in blocks of {}", kv.pool_rows, kv.block_size));
    }
    let mut out = dev.uninit::<bf16>(l.samples * s.q_heads * d, OP)?;
    let mut lse = dev.uninit::<f32>(l.samples * s.q_heads, OP)?;
    let (p, pkv) = (attn_params(s), kv.params());
    let part = |r: std::ops::Range<usize>| rows.slice(r);
    let (cg, gs, pl) = (part(l.cu_group()), part(l.group_slot()), part(l.prefix_len()));
    let (ss, sl) = (part(l.sample_slot()), part(l.suffix_len()));
    launch!(dev, dec, grid(l.groups, s.q_heads, plan.threads),
        format!("{} samples in {} groups, pool {} rows, heads {}/{}", l.samples, l.groups, kv.pool_rows, s.q_heads, s.kv_heads);
        q, kv.k_pool, kv.v_pool, &cg, &gs, &pl, &ss, &sl, kv.prefix_table, kv.suffix_table, &pkv, &p, &mut out, &mut lse)?;
    Ok((out, lse))
}

/// Two attentions of the same `rows` (token, head) rows over disjoint key sets,
/// merged by their log-sum-exps (`ops::merge_attention`). Returns `(out, lse)`.
pub fn attention_merge(
    dev: &CudaDevice,
    a: (&CudaSlice<bf16>, &CudaSlice<f32>),
    b: (&CudaSlice<bf16>, &CudaSlice<f32>),
    rows: usize,
    head_dim: usize,
) -> Result<(CudaSlice<bf16>, CudaSlice<f32>)> {
    const OP: &str = "cuda::attention_merge";
    check_len(OP, "a.out", a.0.len(), rows * head_dim)?;
    check_len(OP, "b.out", b.0.len(), rows * head_dim)?;
    check_len(OP, "a.lse", a.1.len(), rows)?;
    check_len(OP, "b.lse", b.1.len(), rows)?;
    let mut out = dev.zeros::<bf16>(rows * head_dim, OP)?;
    let mut lse = dev.zeros::<f32>(rows, OP)?;
    if rows == 0 {
        return Ok((out, lse));
    }
    let (r, d) = (rows as i32, head_dim as i32);
    launch!(dev, "attention_merge", grid(rows.div_ceil(MERGE_ROWS_PER_BLOCK), 1, MERGE_THREADS), format!("{rows} rows of {head_dim}");
        a.0, a.1, b.0, b.1, &mut out, &mut lse, &r, &d)?;
    Ok((out, lse))
}
