//! Launch wrappers for `cuda/small_ops.cu`: RMSNorm, rotary, SwiGLU, GELU,
//! residual add, casts, row gathers / scatters. Each mirrors its CPU twin in
//! `src/cpu/` (same argument order, bf16 buffers in and out).

use cudarc::driver::{CudaSlice, CudaView};
use half::bf16;

use super::device::{CudaDevice, check_len, grid_for, launch, per_row};
use crate::arg_err;
use crate::error::Result;

/// Threads per block of the small ops (rows or grid-stride).
pub const THREADS: u32 = 256;

/// `(y, rstd)` for `x: [rows, dim]`, `w: [dim]`.
pub fn rms_norm_forward(
    dev: &CudaDevice,
    x: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(CudaSlice<bf16>, CudaSlice<f32>)> {
    const OP: &str = "cuda::rms_norm_forward";
    check_len(OP, "x", x.len(), rows * dim)?;
    check_len(OP, "w", w.len(), dim)?;
    let mut y = dev.uninit::<bf16>(rows * dim, OP)?;
    let mut rstd = dev.uninit::<f32>(rows, OP)?;
    let (r, d) = (rows as i32, dim as i32);
    launch!(dev, "rms_norm_forward", per_row(rows, THREADS), format!("[{rows}, {dim}]");
        x, w, &mut y, &mut rstd, &r, &d, &eps)?;
    Ok((y, rstd))
}

/// `(h, y, rstd)` with `h = x + residual` and `y = rms_norm(h)`: the residual add
/// and the next norm in one pass.
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm_forward(
    dev: &CudaDevice,
    x: &CudaSlice<bf16>,
    residual: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(CudaSlice<bf16>, CudaSlice<bf16>, CudaSlice<f32>)> {
    const OP: &str = "cuda::add_rms_norm_forward";
    check_len(OP, "x", x.len(), rows * dim)?;
    check_len(OP, "residual", residual.len(), rows * dim)?;
    check_len(OP, "w", w.len(), dim)?;
    let mut h = dev.uninit::<bf16>(rows * dim, OP)?;
    let mut y = dev.uninit::<bf16>(rows * dim, OP)?;
    let mut rstd = dev.uninit::<f32>(rows, OP)?;
    let (r, d) = (rows as i32, dim as i32);
    launch!(dev, "add_rms_norm_forward", per_row(rows, THREADS), format!("[{rows}, {dim}]");
        x, residual, w, &mut h, &mut y, &mut rstd, &r, &d, &eps)?;
    Ok((h, y, rstd))
}

/// Blocks of the RMSNorm backward: each writes one row of dw partials.
/// Most blocks of the RMSNorm backward (each owns a partial dw row).
pub const RMS_BWD_BLOCKS: usize = 264;

/// `dx`; accumulates `dw += Σ_rows dy·x̂` when `dw` is given (deterministic).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_backward(
    dev: &CudaDevice,
    x: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    rstd: &CudaSlice<f32>,
    dy: &CudaSlice<bf16>,
    rows: usize,
    dim: usize,
    dw: Option<&mut CudaSlice<f32>>,
) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::rms_norm_backward";
    check_len(OP, "x", x.len(), rows * dim)?;
    check_len(OP, "dy", dy.len(), rows * dim)?;
    check_len(OP, "w", w.len(), dim)?;
    check_len(OP, "rstd", rstd.len(), rows)?;
    let blocks = rows.clamp(1, RMS_BWD_BLOCKS);
    let mut dx = dev.uninit::<bf16>(rows * dim, OP)?;
    let (r, d) = (rows as i32, dim as i32);
    let shapes = format!("[{rows}, {dim}]");
    let cfg = per_row(blocks, THREADS);
    match dw {
        Some(dw) => {
            check_len(OP, "dw", dw.len(), dim)?;
            let mut partial = dev.uninit::<f32>(blocks * dim, OP)?;
            launch!(dev, "rms_norm_backward", cfg, shapes; x, w, rstd, dy, &mut dx, &mut partial, &r, &d)?;
            let b = blocks as i32;
            launch!(dev, "column_sum_accumulate", grid_for(dim, THREADS), shapes; &partial, &b, &d, dw)?;
        }
        None => {
            let null = 0u64;
            launch!(dev, "rms_norm_backward", cfg, shapes; x, w, rstd, dy, &mut dx, &null, &r, &d)?;
        }
    }
    Ok(dx)
}

/// Rotary embedding of `x: [tokens, heads, head_dim]` with f32 tables
/// `cos, sin: [tokens, head_dim]`; `backward` applies the transpose.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    dev: &CudaDevice,
    x: &CudaSlice<bf16>,
    cos: &CudaSlice<f32>,
    sin: &CudaSlice<f32>,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    backward: bool,
) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::rope";
    if !head_dim.is_multiple_of(2) {
        return Err(arg_err!(OP, "head_dim {head_dim} must be even"));
    }
    check_len(OP, "x", x.len(), tokens * heads * head_dim)?;
    check_len(OP, "cos", cos.len(), tokens * head_dim)?;
    check_len(OP, "sin", sin.len(), tokens * head_dim)?;
    let mut y = dev.uninit::<bf16>(x.len(), OP)?;
    let (t, h, d, bw) = (tokens as i32, heads as i32, head_dim as i32, backward as i32);
    launch!(dev, "rope_apply", grid_for(tokens * heads * head_dim / 2, THREADS),
        format!("[{tokens}, {heads}, {head_dim}]"); x, cos, sin, &mut y, &t, &h, &d, &bw)?;
    Ok(y)
}

fn same_len(op: &'static str, a: &CudaSlice<bf16>, b: &CudaSlice<bf16>) -> Result<i64> {
    check_len(op, "second operand", b.len(), a.len())?;
    Ok(a.len() as i64)
}

/// `silu(gate) · up`.
pub fn swiglu_forward(dev: &CudaDevice, gate: &CudaSlice<bf16>, up: &CudaSlice<bf16>) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::swiglu_forward";
    let n = same_len(OP, gate, up)?;
    let mut y = dev.uninit::<bf16>(gate.len(), OP)?;
    launch!(dev, "swiglu_forward", grid_for(gate.len(), THREADS), format!("[{n}]"); gate, up, &mut y, &n)?;
    Ok(y)
}

/// `(d_gate, d_up)`.
pub fn swiglu_backward(
    dev: &CudaDevice,
    gate: &CudaSlice<bf16>,
    up: &CudaSlice<bf16>,
    dy: &CudaSlice<bf16>,
) -> Result<(CudaSlice<bf16>, CudaSlice<bf16>)> {
    const OP: &str = "cuda::swiglu_backward";
    let n = same_len(OP, gate, up)?;
    same_len(OP, gate, dy)?;
    let mut dg = dev.uninit::<bf16>(gate.len(), OP)?;
    let mut du = dev.uninit::<bf16>(gate.len(), OP)?;
    launch!(dev, "swiglu_backward", grid_for(gate.len(), THREADS), format!("[{n}]");
        gate, up, dy, &mut dg, &mut du, &n)?;
    Ok((dg, du))
}

/// Exact (erf) GELU.
pub fn gelu_forward(dev: &CudaDevice, x: &CudaSlice<bf16>) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::gelu_forward";
    let n = x.len() as i64;
    let mut y = dev.uninit::<bf16>(x.len(), OP)?;
    launch!(dev, "gelu_forward", grid_for(x.len(), THREADS), format!("[{n}]"); x, &mut y, &n)?;
    Ok(y)
}

pub fn gelu_backward(dev: &CudaDevice, x: &CudaSlice<bf16>, dy: &CudaSlice<bf16>) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::gelu_backward";
    let n = same_len(OP, x, dy)?;
    let mut dx = dev.uninit::<bf16>(x.len(), OP)?;
    launch!(dev, "gelu_backward", grid_for(x.len(), THREADS), format!("[{n}]"); x, dy, &mut dx, &n)?;
    Ok(dx)
}

/// `a + b`.
pub fn add(dev: &CudaDevice, a: &CudaSlice<bf16>, b: &CudaSlice<bf16>) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::add";
    let n = same_len(OP, a, b)?;
    let mut y = dev.uninit::<bf16>(a.len(), OP)?;
    launch!(dev, "add_bf16", grid_for(a.len(), THREADS), format!("[{n}]"); a, b, &mut y, &n)?;
    Ok(y)
}

/// `a += alpha · b` in f32.
pub fn axpy(dev: &CudaDevice, a: &mut CudaSlice<f32>, b: &CudaSlice<f32>, alpha: f32) -> Result<()> {
    const OP: &str = "cuda::axpy";
    check_len(OP, "b", b.len(), a.len())?;
    let n = a.len() as i64;
    launch!(dev, "axpy_f32", grid_for(b.len(), THREADS), format!("[{n}]"); a, b, &alpha, &n)
}

pub fn cast_to_bf16(dev: &CudaDevice, x: &CudaSlice<f32>) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::cast_to_bf16";
    let n = x.len() as i64;
    let mut y = dev.uninit::<bf16>(x.len(), OP)?;
    launch!(dev, "cast_f32_to_bf16", grid_for(x.len(), THREADS), format!("[{n}]"); x, &mut y, &n)?;
    Ok(y)
}

pub fn cast_to_f32(dev: &CudaDevice, x: &CudaSlice<bf16>) -> Result<CudaSlice<f32>> {
    const OP: &str = "cuda::cast_to_f32";
    let n = x.len() as i64;
    let mut y = dev.uninit::<f32>(x.len(), OP)?;
    launch!(dev, "cast_bf16_to_f32", grid_for(x.len(), THREADS), format!("[{n}]"); x, &mut y, &n)?;
    Ok(y)
}

/// Range-checks host indices against `bound` (the error names the row) and
/// uploads them.
fn upload_indices(dev: &CudaDevice, op: &'static str, idx: &[i32], bound: usize) -> Result<CudaSlice<i32>> {
    if let Some((row, &i)) = idx.iter().enumerate().find(|&(_, &i)| i < 0 || i as usize >= bound) {
        return Err(arg_err!(op, "index[{row}] = {i} is outside 0..{bound}"));
    }
    dev.upload(idx, op)
}

/// `out[i] = src[idx[i]]` for `src: [src_rows, dim]`.
pub fn gather_rows(
    dev: &CudaDevice,
    src: &CudaSlice<bf16>,
    src_rows: usize,
    dim: usize,
    idx: &[i32],
) -> Result<CudaSlice<bf16>> {
    gather_rows_with(dev, "gather_rows", src, src_rows, dim, idx)
}

/// `out[i] = src[idx[i]]` for f32 rows.
pub fn gather_rows_f32(
    dev: &CudaDevice,
    src: &CudaSlice<f32>,
    src_rows: usize,
    dim: usize,
    idx: &[i32],
) -> Result<CudaSlice<f32>> {
    gather_rows_with(dev, "gather_rows_f32", src, src_rows, dim, idx)
}

/// The row gather with `kernel`, whose element type is `T`.
fn gather_rows_with<T: cudarc::driver::DeviceRepr>(
    dev: &CudaDevice,
    kernel: &'static str,
    src: &CudaSlice<T>,
    src_rows: usize,
    dim: usize,
    idx: &[i32],
) -> Result<CudaSlice<T>> {
    check_len(kernel, "src", src.len(), src_rows * dim)?;
    let d_idx = upload_indices(dev, kernel, idx, src_rows)?;
    let mut out = dev.uninit::<T>(idx.len() * dim, kernel)?;
    let (n, d) = (idx.len() as i32, dim as i32);
    launch!(dev, kernel, grid_for(idx.len() * dim, THREADS), format!("[{src_rows}, {dim}] x {n}");
        src, &d_idx, &mut out, &n, &d)?;
    Ok(out)
}

/// `x[r, :] *= scale[r]` in place for `x: [rows, cols]`.
pub fn scale_rows(dev: &CudaDevice, x: &mut CudaSlice<bf16>, rows: usize, cols: usize, scale: &[f32]) -> Result<()> {
    const OP: &str = "cuda::scale_rows";
    check_len(OP, "x", x.len(), rows * cols)?;
    check_len(OP, "scale", scale.len(), rows)?;
    let d_scale = dev.upload(scale, OP)?;
    let (r, c) = (rows as i32, cols as i32);
    launch!(dev, "scale_rows_bf16", grid_for(rows * cols, THREADS), format!("[{rows}, {cols}]"); x, &d_scale, &r, &c)
}

/// `dst[c] += Σ_r src[r, c]` for `src: [rows, dim]` f32 (a bias gradient).
pub fn column_sum_accumulate(
    dev: &CudaDevice,
    src: &CudaSlice<f32>,
    rows: usize,
    dim: usize,
    dst: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "cuda::column_sum_accumulate";
    check_len(OP, "src", src.len(), rows * dim)?;
    check_len(OP, "dst", dst.len(), dim)?;
    let (r, d) = (rows as i32, dim as i32);
    launch!(dev, "column_sum_accumulate", grid_for(dim, THREADS), format!("[{rows}, {dim}]"); src, &r, &d, dst)
}

/// `dst[idx[i]] += src[i]` (f32 accumulator), skipping rows flagged in `skip`.
pub fn scatter_add_rows(
    dev: &CudaDevice,
    dst: &mut CudaSlice<f32>,
    dst_rows: usize,
    dim: usize,
    idx: &[i32],
    src: &CudaSlice<bf16>,
    skip: Option<&[bool]>,
) -> Result<()> {
    const OP: &str = "cuda::scatter_add_rows";
    check_len(OP, "dst", dst.len(), dst_rows * dim)?;
    check_len(OP, "src", src.len(), idx.len() * dim)?;
    let d_idx = upload_indices(dev, OP, idx, dst_rows)?;
    let (n, d) = (idx.len() as i32, dim as i32);
    let shapes = format!("[{dst_rows}, {dim}] <- {n}");
    let cfg = grid_for(idx.len() * dim, THREADS);
    match skip {
        Some(s) => {
            check_len(OP, "skip", s.len(), idx.len())?;
            let flags: Vec<u8> = s.iter().map(|&b| b as u8).collect();
            let d_skip = dev.upload(&flags, OP)?;
            launch!(dev, "scatter_add_rows", cfg, shapes; dst, &d_idx, src, &d_skip, &n, &d)
        }
        None => {
            let null = 0u64;
            launch!(dev, "scatter_add_rows", cfg, shapes; dst, &d_idx, src, &null, &n, &d)
        }
    }
}

/// `x[pos[i]] = rows[i]` in place.
pub fn overwrite_rows(
    dev: &CudaDevice,
    x: &mut CudaSlice<bf16>,
    x_rows: usize,
    dim: usize,
    pos: &[i32],
    rows: &CudaSlice<bf16>,
) -> Result<()> {
    const OP: &str = "cuda::overwrite_rows";
    check_len(OP, "x", x.len(), x_rows * dim)?;
    check_len(OP, "rows", rows.len(), pos.len() * dim)?;
    let d_pos = upload_indices(dev, OP, pos, x_rows)?;
    let (n, d) = (pos.len() as i32, dim as i32);
    launch!(dev, "overwrite_rows", grid_for(pos.len() * dim, THREADS), format!("[{x_rows}, {dim}] <- {n}");
        x, &d_pos, rows, &n, &d)
}

/// `x[pos[i]] = rows[i]` in place, with `pos` already on the device (a paged
/// KV cache's store rows, uploaded once per decoding step for every layer).
/// The positions are the caller's to bound (its block pool hands them out).
pub fn overwrite_rows_at(
    dev: &CudaDevice,
    x: &mut CudaSlice<bf16>,
    x_rows: usize,
    dim: usize,
    pos: &CudaView<'_, i32>,
    rows: &CudaSlice<bf16>,
) -> Result<()> {
    const OP: &str = "cuda::overwrite_rows_at";
    check_len(OP, "x", x.len(), x_rows * dim)?;
    check_len(OP, "rows", rows.len(), pos.len() * dim)?;
    if pos.is_empty() {
        return Ok(());
    }
    let (n, d) = (pos.len() as i32, dim as i32);
    launch!(dev, "overwrite_rows", grid_for(pos.len() * dim, THREADS), format!("[{x_rows}, {dim}] <- {n}");
        x, pos, rows, &n, &d)
}

/// `dst[i] = v` for each `(i, v)` of `pairs` (block-table entries): one upload,
/// one launch.
pub fn scatter_i32(dev: &CudaDevice, dst: &mut CudaSlice<i32>, pairs: &[(usize, i32)]) -> Result<()> {
    const OP: &str = "cuda::scatter_i32";
    if pairs.is_empty() {
        return Ok(());
    }
    if let Some(&(i, _)) = pairs.iter().find(|&&(i, _)| i >= dst.len()) {
        return Err(arg_err!(OP, "entry {i} is outside a table of {}", dst.len()));
    }
    let flat: Vec<i32> = pairs.iter().flat_map(|&(i, v)| [i as i32, v]).collect();
    let d_pairs = dev.upload(&flat, OP)?;
    let (n, len) = (pairs.len() as i32, dst.len());
    launch!(dev, "scatter_i32", grid_for(pairs.len(), THREADS), format!("{n} entries of {len}");
        dst, &d_pairs, &n)
}

/// Threads per row block of `softmax_rows`.
pub const SOFTMAX_THREADS: u32 = 512;

/// `softmax(scale·x)` per row of `x: [rows, cols]` (the unfused attention
/// baseline's middle step).
pub fn softmax_rows(
    dev: &CudaDevice,
    x: &CudaSlice<bf16>,
    rows: usize,
    cols: usize,
    scale: f32,
) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::softmax_rows";
    check_len(OP, "x", x.len(), rows * cols)?;
    let mut y = dev.uninit::<bf16>(rows * cols, OP)?;
    let (r, c) = (rows as i32, cols as i32);
    launch!(dev, "softmax_rows", per_row(rows, SOFTMAX_THREADS), format!("[{rows}, {cols}]"); x, &mut y, &r, &c, &scale)?;
    Ok(y)
}
