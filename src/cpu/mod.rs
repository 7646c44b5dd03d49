//! CPU twins of every op: plain functions on f32 slices, multi-threaded with rayon
//! and the `gemm` crate. The tensor-level API in `crate::ops` checks shapes and
//! dtypes, then calls these. They are also the reference the CUDA kernels are tested
//! against, so they favour clarity where speed does not matter.
//!
//! Conventions: row-major; a "row" is the last dim; parameter gradients are
//! accumulated (`+=`) into caller-owned buffers, input gradients are returned.

pub mod activation;
pub mod attention;
pub mod embedding;
pub mod lora;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod rope;
pub mod sampling;

/// Partial sums kept apart so the compiler can vectorise reductions: one f32
/// accumulator is a serial dependency chain (float addition is not reassociated).
const LANES: usize = 16;

/// `Σ a[i]·b[i]`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ a[i]·b[i]·c[i]`.
#[inline]
pub fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    debug_assert!(a.len() == b.len() && a.len() == c.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb, cc) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder()).map(|((x, y), z)| x * y * z).sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i] * z[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
