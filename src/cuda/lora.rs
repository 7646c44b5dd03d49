//! LoRA linear on CUDA: `y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ`, `W: [out, in]` and `b`
//! frozen, `A: [r, in]`, `B: [out, r]` trained (PEFT layouts), as
//! `src/cpu/lora.rs`.
//!
//! Forward: the base GEMM with its bias epilogue writes y; the rank-r
//! projection `xa = x·Aᵀ` is one pass over x (`cuda/lora.cu`); a K = r GEMM with
//! beta = 1 adds `s·xa·Bᵀ` into y in place. Backward likewise accumulates into
//! dx, and the f32 gradients of A and B take beta = 1 GEMMs. No `[rows, out]`
//! temporary exists at any point; the unfused baseline (PEFT: base, then
//! `(x·Aᵀ)·Bᵀ` into a temporary, then an add) is in the bench.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::device::{CudaDevice, check_len, launch};
use super::gemm::{GemmSpec, gemm, gemm_f32_out};
use crate::arg_err;
use crate::error::Result;

/// Largest LoRA rank the projection kernel compiles for.
pub const MAX_RANK: usize = 64;

pub use super::LoraShape;

/// Rows per projection block (one warp each, LORA_WARPS in `cuda/lora.cu`)
/// and threads per block.
pub const PROJECT_ROWS_PER_BLOCK: usize = 8;
pub const PROJECT_THREADS: u32 = 32 * PROJECT_ROWS_PER_BLOCK as u32;

/// The projection kernel compiled for rank `r` (1..=MAX_RANK).
pub fn project_kernel(r: usize) -> &'static str {
    if r <= 16 { "lora_project_r16" } else { "lora_project_r64" }
}

/// `out[rows, r] = x[rows, n] · M` with `M = Aᵀ` (`m: [r, n]`, `m_is_a`) or
/// `M = B` (`m: [n, r]`).
fn project(
    dev: &CudaDevice,
    x: &CudaSlice<bf16>,
    m: &CudaSlice<bf16>,
    rows: usize,
    n: usize,
    r: usize,
    m_is_a: bool,
) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::lora_project";
    check_len(OP, "x", x.len(), rows * n)?;
    check_len(OP, "factor", m.len(), n * r)?;
    if r == 0 || r > MAX_RANK {
        return Err(arg_err!(OP, "rank {r} must be in 1..={MAX_RANK}"));
    }
    let kernel = project_kernel(r);
    let mut out = dev.uninit::<bf16>(rows * r, OP)?;
    if rows == 0 {
        return Ok(out);
    }
    let cfg = cudarc::driver::LaunchConfig {
        grid_dim: (rows.div_ceil(PROJECT_ROWS_PER_BLOCK) as u32, 1, 1),
        block_dim: (PROJECT_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (ri, ni, rr, a) = (rows as i32, n as i32, r as i32, m_is_a as i32);
    launch!(dev, kernel, cfg, format!("[{rows}, {n}] x rank {r}"); x, m, &mut out, &ri, &ni, &rr, &a)?;
    Ok(out)
}

/// Returns `(y, xa)`; `xa = x·Aᵀ: [rows, r]` is saved for the backward.
pub fn lora_forward(
    dev: &CudaDevice,
    x: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    b: Option<&CudaSlice<bf16>>,
    a: &CudaSlice<bf16>,
    bm: &CudaSlice<bf16>,
    s: &LoraShape,
) -> Result<(CudaSlice<bf16>, CudaSlice<bf16>)> {
    const OP: &str = "cuda::lora_forward";
    check_len(OP, "W", w.len(), s.dout * s.din)?;
    check_len(OP, "B", bm.len(), s.dout * s.rank)?;
    let mut y = dev.uninit::<bf16>(s.rows * s.dout, OP)?;
    let base = GemmSpec { m: s.rows, n: s.dout, k: s.din, trans_a: false, trans_b: true, alpha: 1.0, beta: 0.0 };
    gemm(dev, base, x, w, &mut y, b)?;
    let xa = project(dev, x, a, s.rows, s.din, s.rank, true)?;
    let up = GemmSpec { m: s.rows, n: s.dout, k: s.rank, trans_a: false, trans_b: true, alpha: s.scale, beta: 1.0 };
    gemm(dev, up, &xa, bm, &mut y, None)?;
    Ok((y, xa))
}

/// Returns `dx = dy·W + s·(dy·B)·A`; accumulates `dA += s·(dy·B)ᵀ·x` and
/// `dB += s·dyᵀ·xa` (f32).
#[allow(clippy::too_many_arguments)]
pub fn lora_backward(
    dev: &CudaDevice,
    x: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    a: &CudaSlice<bf16>,
    bm: &CudaSlice<bf16>,
    xa: &CudaSlice<bf16>,
    dy: &CudaSlice<bf16>,
    s: &LoraShape,
    da: &mut CudaSlice<f32>,
    db: &mut CudaSlice<f32>,
) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::lora_backward";
    check_len(OP, "x", x.len(), s.rows * s.din)?;
    check_len(OP, "xa", xa.len(), s.rows * s.rank)?;
    check_len(OP, "A", a.len(), s.rank * s.din)?;
    check_len(OP, "dA", da.len(), s.rank * s.din)?;
    check_len(OP, "dB", db.len(), s.dout * s.rank)?;
    let dyb = project(dev, dy, bm, s.rows, s.dout, s.rank, false)?;
    let mut dx = dev.uninit::<bf16>(s.rows * s.din, OP)?;
    let base = GemmSpec { m: s.rows, n: s.din, k: s.dout, trans_a: false, trans_b: false, alpha: 1.0, beta: 0.0 };
    gemm(dev, base, dy, w, &mut dx, None)?;
    let low = GemmSpec { m: s.rows, n: s.din, k: s.rank, trans_a: false, trans_b: false, alpha: s.scale, beta: 1.0 };
    gemm(dev, low, &dyb, a, &mut dx, None)?;
    let ga = GemmSpec { m: s.rank, n: s.din, k: s.rows, trans_a: true, trans_b: false, alpha: s.scale, beta: 1.0 };
    gemm_f32_out(dev, ga, &dyb, x, da)?;
    let gb = GemmSpec { m: s.dout, n: s.rank, k: s.rows, trans_a: true, trans_b: false, alpha: s.scale, beta: 1.0 };
    gemm_f32_out(dev, gb, dy, xa, db)?;
    Ok(dx)
}
