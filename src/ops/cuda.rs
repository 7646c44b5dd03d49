//! The CUDA arm of the ops. Each op in this module's siblings checks shapes,
//! dtypes and devices once, for both devices, then calls its twin here, which only
//! turns tensors into kernel buffers (`crate::cuda::tensor`), calls the family
//! wrapper in `crate::cuda` and wraps the result.
//!
//! Dtypes: activations and input gradients come out bf16, statistics (rstd, lse,
//! log-probs) f32; parameter gradients accumulate into caller-owned f32 tensors,
//! as on the CPU. Index tensors (ids, positions, offsets) are read on the host:
//! the ops range-check them there anyway.

use half::bf16;

use super::loss::RowScale;
use super::{AdamSlot, AdamW, AttnOut, CrossEntropy, IGNORE_INDEX, SamplingParams};
use crate::cpu::attention::AttnShape;
use crate::cuda::LoraShape;
use crate::cuda::attention as at;
use crate::cuda::gemm::{self, GemmSpec};
use crate::cuda::lora as lo;
use crate::cuda::loss as ls;
use crate::cuda::sampling as sa;
use crate::cuda::small_ops as so;
use crate::cuda::tensor::{bf16_mut, bf16_of, device_of, f32_mut, f32_of, from_bf16, from_f32, i32_mut, i32_of};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

// ---- activations and elementwise ------------------------------------------------------

pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    const OP: &str = "swiglu";
    let d = device_of(gate, OP)?;
    let y = so::swiglu_forward(&d, &*bf16_of(gate, OP, "gate")?, &*bf16_of(up, OP, "up")?)?;
    from_bf16(&d, y, gate.dims())
}

pub fn swiglu_backward(gate: &Tensor, up: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "swiglu_backward";
    let d = device_of(gate, OP)?;
    let (dg, du) =
        so::swiglu_backward(&d, &*bf16_of(gate, OP, "gate")?, &*bf16_of(up, OP, "up")?, &*bf16_of(dy, OP, "dy")?)?;
    Ok((from_bf16(&d, dg, gate.dims())?, from_bf16(&d, du, gate.dims())?))
}

pub fn gelu(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "gelu";
    let d = device_of(x, OP)?;
    from_bf16(&d, so::gelu_forward(&d, &*bf16_of(x, OP, "x")?)?, x.dims())
}

pub fn gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "gelu_backward";
    let d = device_of(x, OP)?;
    from_bf16(&d, so::gelu_backward(&d, &*bf16_of(x, OP, "x")?, &*bf16_of(dy, OP, "dy")?)?, x.dims())
}

/// The residual add, in bf16 like the activations it joins.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "add";
    let d = device_of(a, OP)?;
    from_bf16(&d, so::add(&d, &*bf16_of(a, OP, "a")?, &*bf16_of(b, OP, "b")?)?, a.dims())
}

/// `a += alpha·b`. An f32 `a` (a gradient, a master weight) is updated in
/// place; a bf16 `a` (an activation gradient) is recomputed through f32 and
/// replaced, which no other tensor can observe (copy-on-write, as on the CPU).
pub fn add_scaled_assign(a: &mut Tensor, b: &Tensor, alpha: f32) -> Result<()> {
    const OP: &str = "add_scaled_assign";
    let d = device_of(a, OP)?;
    match a.dtype() {
        DType::F32 => {
            let bv = f32_of(b, OP, "b")?.into_owned();
            so::axpy(&d, f32_mut(a, OP, "a")?, &bv, alpha)
        }
        _ if alpha == 1.0 => {
            let y = so::add(&d, &*bf16_of(a, OP, "a")?, &*bf16_of(b, OP, "b")?)?;
            *a = from_bf16(&d, y, a.dims())?;
            Ok(())
        }
        _ => {
            let mut af = f32_of(a, OP, "a")?.into_owned();
            so::axpy(&d, &mut af, &*f32_of(b, OP, "b")?, alpha)?;
            *a = from_bf16(&d, so::cast_to_bf16(&d, &af)?, a.dims())?;
            Ok(())
        }
    }
}

/// `a *= alpha`: zeroing is a memset (so NaN or inf cannot survive it), any
/// other scale `a += (alpha − 1)·a`.
pub fn scale_assign(a: &mut Tensor, alpha: f32) -> Result<()> {
    const OP: &str = "scale_assign";
    if alpha == 0.0 {
        let d = device_of(a, OP)?;
        let dims = a.dims().to_vec();
        *a = match a.dtype() {
            DType::F32 => from_f32(&d, d.zeros(a.numel(), OP)?, dims)?,
            DType::BF16 => from_bf16(&d, d.zeros(a.numel(), OP)?, dims)?,
            DType::I32 => return Err(crate::arg_err!(OP, "cannot scale an i32 tensor")),
        };
        return Ok(());
    }
    let copy = a.copy()?;
    add_scaled_assign(a, &copy, alpha - 1.0)
}

// ---- attention ----------------------------------------------------------------------

pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, cu: &[usize], s: &AttnShape) -> Result<AttnOut> {
    attention_kv(q, k, v, cu, cu, s)
}

pub fn attention_kv(q: &Tensor, k: &Tensor, v: &Tensor, cq: &[usize], ck: &[usize], s: &AttnShape) -> Result<AttnOut> {
    const OP: &str = "attention";
    let d = device_of(q, OP)?;
    let (out, lse) =
        at::attention_forward(&d, &*bf16_of(q, OP, "q")?, &*bf16_of(k, OP, "k")?, &*bf16_of(v, OP, "v")?, cq, ck, s)?;
    Ok(AttnOut { out: from_bf16(&d, out, q.dims())?, lse: from_f32(&d, lse, [q.dims()[0], q.dims()[1]])? })
}

#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    fwd: &AttnOut,
    dout: &Tensor,
    cu: &[usize],
    s: &AttnShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "attention_backward";
    let d = device_of(q, OP)?;
    let (dq, dk, dv) = at::attention_backward(
        &d,
        &*bf16_of(q, OP, "q")?,
        &*bf16_of(k, OP, "k")?,
        &*bf16_of(v, OP, "v")?,
        &*bf16_of(&fwd.out, OP, "out")?,
        &*f32_of(&fwd.lse, OP, "lse")?,
        &*bf16_of(dout, OP, "dout")?,
        cu,
        s,
    )?;
    Ok((from_bf16(&d, dq, q.dims())?, from_bf16(&d, dk, k.dims())?, from_bf16(&d, dv, v.dims())?))
}

/// The paged cascade decode kernel; groups wider than it handles take
/// `composed` (gathers and the three-op path on device tensors).
pub fn attention_decode_paged(
    q: &Tensor,
    kv: &super::PagedKv<'_>,
    rows: &super::DecodeRows,
    scale: f32,
    composed: impl FnOnce() -> Result<AttnOut>,
) -> Result<AttnOut> {
    const OP: &str = "attention_decode_paged";
    if rows.cu_group.windows(2).any(|w| w[1] - w[0] > at::MAX_GROUP) {
        return composed();
    }
    let d = device_of(q, OP)?;
    let (hq, hd, hkv) = (q.dims()[1], q.dims()[2], kv.k_pool.dims()[1]);
    let shape = AttnShape { q_heads: hq, kv_heads: hkv, head_dim: hd, scale, causal: false };
    let (kp, vp) = (bf16_of(kv.k_pool, OP, "k_pool")?, bf16_of(kv.v_pool, OP, "v_pool")?);
    let (pt, st) = (i32_of(kv.prefix.device()?, OP, "prefix table")?, i32_of(kv.suffix.device()?, OP, "suffix table")?);
    let paged = at::PagedKv {
        k_pool: &kp,
        v_pool: &vp,
        pool_rows: kv.k_pool.dims()[0],
        block_size: kv.block_size,
        prefix_table: &pt,
        prefix_table_width: kv.prefix.width(),
        suffix_table: &st,
        suffix_table_width: kv.suffix.width(),
    };
    let packed = i32_of(&rows.packed, OP, "rows")?;
    let (out, lse) = at::attention_decode_paged(&d, &*bf16_of(q, OP, "q")?, &paged, &packed, &rows.cu_group, &shape)?;
    Ok(AttnOut { out: from_bf16(&d, out, q.dims())?, lse: from_f32(&d, lse, [q.dims()[0], hq])? })
}

/// Keys and values into their pool rows (`rows` already on the device).
pub fn store_kv(
    k_pool: &mut Tensor,
    v_pool: &mut Tensor,
    k: &Tensor,
    v: &Tensor,
    rows: &super::StoreRows<'_>,
) -> Result<()> {
    const OP: &str = "store_kv";
    let d = device_of(k, OP)?;
    let (pool_rows, inner) = (k_pool.dims()[0], k_pool.numel() / k_pool.dims()[0].max(1));
    let all = i32_of(rows.device, OP, "rows")?;
    let at = all.slice(rows.range.clone());
    so::overwrite_rows_at(&d, bf16_mut(k_pool, OP, "k_pool")?, pool_rows, inner, &at, &*bf16_of(k, OP, "k")?)?;
    so::overwrite_rows_at(&d, bf16_mut(v_pool, OP, "v_pool")?, pool_rows, inner, &at, &*bf16_of(v, OP, "v")?)
}

/// Block-table entries `(index, block)` written in place, in one launch.
pub fn scatter_i32(table: &mut Tensor, pairs: &[(usize, i32)]) -> Result<()> {
    const OP: &str = "scatter_i32";
    let d = device_of(table, OP)?;
    so::scatter_i32(&d, i32_mut(table, OP, "table")?, pairs)
}

/// Two partial attentions over disjoint keys merged by their log-sum-exps, on
/// the device (the cascade fallback for groups wider than the kernel's).
pub fn merge_attention(a: &AttnOut, b: &AttnOut) -> Result<AttnOut> {
    const OP: &str = "merge_attention";
    let d = device_of(&a.out, OP)?;
    let (rows, hd) = (a.lse.numel(), a.out.dims()[2]);
    let (oa, ob) = (bf16_of(&a.out, OP, "a.out")?, bf16_of(&b.out, OP, "b.out")?);
    let (la, lb) = (f32_of(&a.lse, OP, "a.lse")?, f32_of(&b.lse, OP, "b.lse")?);
    let (out, lse) = at::attention_merge(&d, (&oa, &la), (&ob, &lb), rows, hd)?;
    Ok(AttnOut { out: from_bf16(&d, out, a.out.dims())?, lse: from_f32(&d, lse, a.lse.dims())? })
}

// ---- rows: embedding, scatter, caches -------------------------------------------------

/// `x[idx]`, keeping the dtype (bf16 activations or f32 rotary tables).
pub fn index_select(x: &Tensor, idx: &[i32]) -> Result<Tensor> {
    const OP: &str = "index_select";
    let d = device_of(x, OP)?;
    let (n, dim) = (x.dims()[0], x.dims()[1]);
    match x.dtype() {
        DType::F32 => from_f32(&d, so::gather_rows_f32(&d, &*f32_of(x, OP, "x")?, n, dim, idx)?, [idx.len(), dim]),
        _ => from_bf16(&d, so::gather_rows(&d, &*bf16_of(x, OP, "x")?, n, dim, idx)?, [idx.len(), dim]),
    }
}

pub fn index_select_backward(dx: &mut Tensor, idx: &[i32], dy: &Tensor, skip: Option<&[bool]>) -> Result<()> {
    const OP: &str = "index_select_backward";
    let d = device_of(dy, OP)?;
    let (n, dim) = (dx.dims()[0], dx.dims()[1]);
    let g = bf16_of(dy, OP, "dy")?.into_owned();
    so::scatter_add_rows(&d, f32_mut(dx, OP, "dx")?, n, dim, idx, &g, skip)
}

pub fn scatter_rows(x: &Tensor, pos: &[i32], rows: &Tensor) -> Result<Tensor> {
    const OP: &str = "scatter_rows";
    let d = device_of(x, OP)?;
    let (t, dim) = (x.dims()[0], x.dims()[1]);
    let mut out = bf16_of(x, OP, "x")?.into_owned();
    so::overwrite_rows(&d, &mut out, t, dim, pos, &*bf16_of(rows, OP, "rows")?)?;
    from_bf16(&d, out, [t, dim])
}

pub fn scatter_rows_backward(dy: &Tensor, pos: &[i32]) -> Result<(Tensor, Tensor)> {
    const OP: &str = "scatter_rows_backward";
    let d = device_of(dy, OP)?;
    let (t, dim) = (dy.dims()[0], dy.dims()[1]);
    let g = bf16_of(dy, OP, "dy")?;
    let drows = so::gather_rows(&d, &g, t, dim, pos)?;
    let mut dx = g.into_owned();
    let zeros = d.zeros::<bf16>(pos.len() * dim, OP)?;
    so::overwrite_rows(&d, &mut dx, t, dim, pos, &zeros)?;
    Ok((from_bf16(&d, dx, [t, dim])?, from_bf16(&d, drows, [pos.len(), dim])?))
}

/// `dst[start * inner ..] = src`, in `dst`'s dtype (KV caches).
pub fn write_rows(dst: &mut Tensor, start: usize, src: &Tensor, inner: usize) -> Result<()> {
    const OP: &str = "write_rows";
    let d = device_of(src, OP)?;
    let range = start * inner..start * inner + src.numel();
    match dst.dtype() {
        DType::F32 => {
            let s = f32_of(src, OP, "src")?;
            d.copy(&*s, &mut f32_mut(dst, OP, "dst")?.slice_mut(range), OP)
        }
        _ => {
            let s = bf16_of(src, OP, "src")?;
            d.copy(&*s, &mut bf16_mut(dst, OP, "dst")?.slice_mut(range), OP)
        }
    }
}

// ---- linear layers ------------------------------------------------------------------

pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, rows: usize, din: usize, dout: usize) -> Result<Tensor> {
    const OP: &str = "linear";
    let d = device_of(x, OP)?;
    let bias = b.map(|b| bf16_of(b, OP, "bias")).transpose()?;
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("rank checked") = dout;
    let y =
        gemm::linear(&d, &*bf16_of(x, OP, "input")?, &*bf16_of(w, OP, "weight")?, bias.as_deref(), rows, din, dout)?;
    from_bf16(&d, y, out_dims)
}

#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dw: Option<&mut Tensor>,
    db: Option<&mut Tensor>,
    rows: usize,
    din: usize,
    dout: usize,
) -> Result<Tensor> {
    const OP: &str = "linear_backward";
    let d = device_of(x, OP)?;
    let g = bf16_of(dy, OP, "dy")?;
    let xs = bf16_of(x, OP, "input")?;
    let mut dx = d.uninit::<bf16>(rows * din, OP)?;
    let spec = GemmSpec { m: rows, n: din, k: dout, trans_a: false, trans_b: false, alpha: 1.0, beta: 0.0 };
    gemm::gemm(&d, spec, &*g, &*bf16_of(w, OP, "weight")?, &mut dx, None)?;
    if let Some(dw) = dw {
        // dW [out, in] += dyᵀ · x
        let spec = GemmSpec { m: dout, n: din, k: rows, trans_a: true, trans_b: false, alpha: 1.0, beta: 1.0 };
        gemm::gemm_f32_out(&d, spec, &*g, &*xs, f32_mut(dw, OP, "dW")?)?;
    }
    if let Some(db) = db {
        let g32 = so::cast_to_f32(&d, &g)?;
        so::column_sum_accumulate(&d, &g32, rows, dout, f32_mut(db, OP, "db")?)?;
    }
    from_bf16(&d, dx, x.dims())
}

/// Batched `op(A)·op(B)`: one GEMM per batch entry on views of the operands.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    out_dims: Vec<usize>,
) -> Result<Tensor> {
    const OP: &str = "matmul";
    let d = device_of(a, OP)?;
    let (av, bv) = (bf16_of(a, OP, "a")?, bf16_of(b, OP, "b")?);
    let mut c = d.uninit::<bf16>(batch * m * n, OP)?;
    let spec = GemmSpec { m, n, k, trans_a, trans_b, alpha: 1.0, beta: 0.0 };
    for i in 0..batch {
        let (sa, sb, sc) = (m * k, k * n, m * n);
        gemm::gemm(
            &d,
            spec,
            &av.slice(i * sa..(i + 1) * sa),
            &bv.slice(i * sb..(i + 1) * sb),
            &mut c.slice_mut(i * sc..(i + 1) * sc),
            None,
        )?;
    }
    from_bf16(&d, c, out_dims)
}

#[allow(clippy::too_many_arguments)]
pub fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    s: LoraShape,
    out_dims: Vec<usize>,
) -> Result<super::LoraOut> {
    const OP: &str = "lora_linear";
    let d = device_of(x, OP)?;
    let bias = bias.map(|b| bf16_of(b, OP, "bias")).transpose()?;
    let (y, xa) = lo::lora_forward(
        &d,
        &*bf16_of(x, OP, "input")?,
        &*bf16_of(w, OP, "W")?,
        bias.as_deref(),
        &*bf16_of(a, OP, "lora_A")?,
        &*bf16_of(b, OP, "lora_B")?,
        &s,
    )?;
    Ok(super::LoraOut { y: from_bf16(&d, y, out_dims)?, xa: from_bf16(&d, xa, [s.rows, s.rank])? })
}

#[allow(clippy::too_many_arguments)]
pub fn lora_linear_backward(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    s: LoraShape,
    xa: &Tensor,
    dy: &Tensor,
    da: &mut Tensor,
    db: &mut Tensor,
) -> Result<Tensor> {
    const OP: &str = "lora_linear_backward";
    let d = device_of(x, OP)?;
    let dx = lo::lora_backward(
        &d,
        &*bf16_of(x, OP, "input")?,
        &*bf16_of(w, OP, "W")?,
        &*bf16_of(a, OP, "lora_A")?,
        &*bf16_of(b, OP, "lora_B")?,
        &*bf16_of(xa, OP, "xa")?,
        &*bf16_of(dy, OP, "dy")?,
        &s,
        f32_mut(da, OP, "dA")?,
        f32_mut(db, OP, "dB")?,
    )?;
    from_bf16(&d, dx, x.dims())
}

// ---- norms and rotary ---------------------------------------------------------------

pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm";
    let d = device_of(x, OP)?;
    let (rows, dim) = (x.shape().rows(), x.shape().last());
    let (y, rstd) = so::rms_norm_forward(&d, &*bf16_of(x, OP, "input")?, &*bf16_of(w, OP, "weight")?, rows, dim, eps)?;
    Ok((from_bf16(&d, y, x.dims())?, from_f32(&d, rstd, [rows])?))
}

pub fn add_rms_norm(x: &Tensor, residual: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "add_rms_norm";
    let d = device_of(x, OP)?;
    let (rows, dim) = (x.shape().rows(), x.shape().last());
    let (h, y, rstd) = so::add_rms_norm_forward(
        &d,
        &*bf16_of(x, OP, "input")?,
        &*bf16_of(residual, OP, "residual")?,
        &*bf16_of(w, OP, "weight")?,
        rows,
        dim,
        eps,
    )?;
    Ok((from_bf16(&d, h, x.dims())?, from_bf16(&d, y, x.dims())?, from_f32(&d, rstd, [rows])?))
}

pub fn rms_norm_backward(
    x: &Tensor,
    w: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    dw: Option<&mut Tensor>,
) -> Result<Tensor> {
    const OP: &str = "rms_norm_backward";
    let d = device_of(x, OP)?;
    let (rows, dim) = (x.shape().rows(), x.shape().last());
    let dw = dw.map(|t| f32_mut(t, OP, "dw")).transpose()?;
    let dx = so::rms_norm_backward(
        &d,
        &*bf16_of(x, OP, "input")?,
        &*bf16_of(w, OP, "weight")?,
        &*f32_of(rstd, OP, "rstd")?,
        &*bf16_of(dy, OP, "dy")?,
        rows,
        dim,
        dw,
    )?;
    from_bf16(&d, dx, x.dims())
}

pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, backward: bool) -> Result<Tensor> {
    const OP: &str = "rope";
    let d = device_of(x, OP)?;
    let (t, h, hd) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let y =
        so::rope(&d, &*bf16_of(x, OP, "x")?, &*f32_of(cos, OP, "cos")?, &*f32_of(sin, OP, "sin")?, t, h, hd, backward)?;
    from_bf16(&d, y, x.dims())
}

// ---- losses -------------------------------------------------------------------------

pub fn cross_entropy(logits: &Tensor, labels: &[i32], v: usize) -> Result<CrossEntropy> {
    const OP: &str = "cross_entropy";
    let d = device_of(logits, OP)?;
    let (loss, lse, _) = ls::cross_entropy(&d, &*bf16_of(logits, OP, "logits")?, labels, v, None)?;
    let losses = d.download(&loss, OP)?;
    let tokens = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
    let loss_sum: f64 = losses.iter().map(|&x| x as f64).sum();
    let loss = if tokens > 0 { (loss_sum / tokens as f64) as f32 } else { 0.0 };
    Ok(CrossEntropy { loss, loss_sum, tokens, lse: from_f32(&d, lse, [labels.len()])? })
}

/// `dlogits` with one scale for every row, or `row_scale[r]` for row `r`.
pub fn cross_entropy_backward(logits: &Tensor, labels: &[i32], v: usize, scale: RowScale<'_>) -> Result<Tensor> {
    const OP: &str = "cross_entropy_backward";
    let d = device_of(logits, OP)?;
    let uniform = match scale {
        RowScale::Uniform(s) => s,
        RowScale::PerRow(_) => 1.0,
    };
    let (_, _, dl) = ls::cross_entropy(&d, &*bf16_of(logits, OP, "logits")?, labels, v, Some(uniform))?;
    let mut dl = dl.expect("grad_scale given");
    if let RowScale::PerRow(rows) = scale {
        so::scale_rows(&d, &mut dl, labels.len(), v, rows)?;
    }
    from_bf16(&d, dl, [labels.len(), v])
}

/// The fused linear + cross-entropy (`ops::linear_cross_entropy`): per-row
/// losses come back to the host for the sum (4 bytes a row), nothing else.
pub fn linear_cross_entropy(
    h: &Tensor,
    w: &Tensor,
    labels: &[i32],
    scale: super::GradScale<'_>,
    dw: Option<&mut Tensor>,
    chunk_rows: usize,
) -> Result<super::LinearCrossEntropy> {
    const OP: &str = "linear_cross_entropy";
    let d = device_of(h, OP)?;
    let (t, dim, v) = (h.dims()[0], h.dims()[1], w.dims()[0]);
    let scale = match scale {
        super::GradScale::Uniform(s) => ls::GradScale::Uniform(s),
        super::GradScale::PerRow(r) => ls::GradScale::PerRow(r),
    };
    let dw = dw.map(|g| f32_mut(g, OP, "dW")).transpose()?;
    let out = ls::linear_cross_entropy(
        &d,
        &*bf16_of(h, OP, "h")?,
        &*bf16_of(w, OP, "W")?,
        labels,
        dim,
        v,
        chunk_rows,
        scale,
        dw,
    )?;
    let loss_sum = ls::sum_to_host(&d, &out.loss)?;
    let tokens = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
    Ok(super::LinearCrossEntropy { loss_sum, tokens, dh: from_bf16(&d, out.dh, [t, dim])? })
}

/// The fused linear + chosen-token log-probs (`ops::linear_token_logprobs`);
/// the entropy, when asked for, comes back per row (4 bytes a row).
pub fn linear_token_logprobs(
    h: &Tensor,
    w: &Tensor,
    ids: &[i32],
    temperature: f32,
    chunk_rows: usize,
    with_entropy: bool,
) -> Result<super::LinearTokenLogprobs> {
    const OP: &str = "linear_token_logprobs";
    let d = device_of(h, OP)?;
    let (t, dim, v) = (h.dims()[0], h.dims()[1], w.dims()[0]);
    let mut entropy = if with_entropy { Some(d.uninit::<f32>(t, OP)?) } else { None };
    let (h_b, w_b) = (bf16_of(h, OP, "h")?, bf16_of(w, OP, "W")?);
    let s = 1.0 / temperature;
    let (lp, lse) = ls::linear_token_logprobs_forward(&d, &h_b, &w_b, ids, dim, v, s, chunk_rows, entropy.as_mut())?;
    let entropy = entropy.map(|e| from_f32(&d, e, [t])).transpose()?;
    Ok(super::LinearTokenLogprobs { logp: from_f32(&d, lp, [t])?, lse: from_f32(&d, lse, [t])?, entropy })
}

/// Backward of [`linear_token_logprobs`].
#[allow(clippy::too_many_arguments)]
pub fn linear_token_logprobs_backward(
    h: &Tensor,
    w: &Tensor,
    ids: &[i32],
    lse: &Tensor,
    dlogp: &Tensor,
    temperature: f32,
    dw: Option<&mut Tensor>,
    chunk_rows: usize,
) -> Result<Tensor> {
    const OP: &str = "linear_token_logprobs_backward";
    let d = device_of(h, OP)?;
    let (t, dim, v) = (h.dims()[0], h.dims()[1], w.dims()[0]);
    let dw = dw.map(|g| f32_mut(g, OP, "dW")).transpose()?;
    let dh = ls::linear_token_logprobs_backward(
        &d,
        &*bf16_of(h, OP, "h")?,
        &*bf16_of(w, OP, "W")?,
        ids,
        &*f32_of(lse, OP, "lse")?,
        &*f32_of(dlogp, OP, "dlogp")?,
        dim,
        v,
        1.0 / temperature,
        chunk_rows,
        dw,
    )?;
    from_bf16(&d, dh, [t, dim])
}

pub fn token_logprobs(logits: &Tensor, ids: &[i32], v: usize, s: f32) -> Result<(Tensor, Tensor)> {
    const OP: &str = "token_logprobs";
    let d = device_of(logits, OP)?;
    let (lp, lse) = ls::token_logprobs_forward(&d, &*bf16_of(logits, OP, "logits")?, ids, v, s)?;
    Ok((from_f32(&d, lp, [ids.len()])?, from_f32(&d, lse, [ids.len()])?))
}

pub fn token_logprobs_backward(
    logits: &Tensor,
    ids: &[i32],
    lse: &Tensor,
    dlogp: &Tensor,
    v: usize,
    s: f32,
) -> Result<Tensor> {
    const OP: &str = "token_logprobs_backward";
    let d = device_of(logits, OP)?;
    let dl = ls::token_logprobs_backward(
        &d,
        &*bf16_of(logits, OP, "logits")?,
        ids,
        &*f32_of(lse, OP, "lse")?,
        &*f32_of(dlogp, OP, "dlogp")?,
        v,
        s,
    )?;
    from_bf16(&d, dl, [ids.len(), v])
}

// ---- sampling and gradient norms ------------------------------------------------------

pub fn sample_streams(
    logits: &Tensor,
    n: usize,
    p: &SamplingParams,
    seed: u64,
    streams: &[u64],
    banned: &[u32],
) -> Result<(Vec<u32>, Vec<f32>)> {
    const OP: &str = "sample";
    let d = device_of(logits, OP)?;
    let v = logits.dims()[1];
    let (tok, lp) = sa::sample_rows(&d, &*bf16_of(logits, OP, "logits")?, v, n, p, seed, streams, banned)?;
    let tok = d.download(&tok, OP)?;
    // The CPU twin rejects NaN logits before sampling. Here a NaN anywhere in a row
    // makes that row's log-sum-exp, so every log-prob drawn from it, NaN: the
    // log-probs, read back anyway, find the row.
    let lp = d.download(&lp, OP)?;
    if let Some(i) = lp.iter().position(|x| x.is_nan()) {
        return Err(crate::arg_err!(OP, "row {}: the logits hold NaN", i / n.max(1)));
    }
    Ok((tok, lp))
}

/// One multi-tensor AdamW launch over every slot (all f32 on one device). The
/// slot table holds the buffers' addresses; it and any gradient cast to f32
/// are freed in stream order, after the launch has run.
pub fn adamw_step(slots: &mut [AdamSlot<'_>], h: &AdamW, step: u64, grad_scale: f32) -> Result<bool> {
    const OP: &str = "adamw_step";
    let d = device_of(slots[0].grad, OP)?;
    let mut grads = Vec::with_capacity(slots.len());
    let mut addrs = Vec::with_capacity(slots.len());
    for s in slots.iter_mut() {
        let g = f32_of(s.grad, OP, "grad")?;
        let grad = d.address(&g);
        grads.push(g);
        addrs.push(crate::cuda::optim::SlotAddrs {
            param: d.address(f32_mut(s.param, OP, "param")?),
            grad,
            exp_avg: d.address(f32_mut(s.m, OP, "m")?),
            exp_avg_sq: d.address(f32_mut(s.v, OP, "v")?),
            numel: s.param.numel(),
        });
    }
    let (table, blocks) = crate::cuda::optim::slot_table(&addrs);
    let table = d.upload(&table, OP)?;
    // The kernel reads the scale from device memory (it may come from a device
    // norm); 1 needs no buffer.
    let scale = if grad_scale == 1.0 { None } else { Some(d.upload(&[grad_scale], OP)?) };
    let scale_ptr = scale.as_ref().map_or(std::ptr::null(), |s| d.address(s) as *const f32);
    let nonfinite = d.zeros::<i32>(1, OP)?;
    let flag = d.address(&nonfinite) as *mut i32;
    crate::cuda::optim::launch_adamw(&d, &table, addrs.len(), blocks, h, step, scale_ptr, flag)?;
    drop((grads, scale));
    // 4 bytes back: whether the update left every weight finite.
    Ok(d.download(&nonfinite, OP)?[0] == 0)
}

/// The global L2 norm of `grads` (all f32-castable, on one device) on the
/// device: one multi-tensor sum of squares, one scalar read back.
pub fn grad_norm(grads: &[&Tensor]) -> Result<f64> {
    const OP: &str = "grad_norm";
    let d = device_of(grads[0], OP)?;
    let bufs: Vec<_> = grads.iter().map(|g| f32_of(g, OP, "grad")).collect::<Result<_>>()?;
    let addrs: Vec<crate::cuda::optim::SlotAddrs> = bufs
        .iter()
        .map(|b| crate::cuda::optim::SlotAddrs {
            param: 0,
            grad: d.address(b),
            exp_avg: 0,
            exp_avg_sq: 0,
            numel: b.len(),
        })
        .collect();
    let (table, blocks) = crate::cuda::optim::slot_table(&addrs);
    let table = d.upload(&table, OP)?;
    let norm = crate::cuda::optim::global_grad_norm(&d, &table, addrs.len(), blocks)?;
    drop(bufs);
    Ok(norm as f64)
}

/// [`super::policy_loss`] on the device: the tokens go up in one upload, the
/// four sums come down.
pub fn policy_loss(
    logp: &Tensor,
    entropy: Option<&Tensor>,
    tokens: &super::PolicyTokens,
    p: &crate::cpu::loss::PolicyLossParams,
) -> Result<(Tensor, crate::cpu::loss::PolicyLossSums)> {
    const OP: &str = "policy_loss";
    let d = device_of(logp, OP)?;
    let t = logp.dims()[0];
    let packed: Vec<f32> = [tokens.old, tokens.reference, tokens.advantage, tokens.den].concat();
    let e = entropy.map(|e| f32_of(e, OP, "entropy")).transpose()?;
    let (dlogp, sums) = ls::policy_loss(&d, &*f32_of(logp, OP, "logp")?, &packed, e.as_deref(), p)?;
    Ok((from_f32(&d, dlogp, [t])?, sums))
}
