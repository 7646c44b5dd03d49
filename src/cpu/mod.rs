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
pub mod peak;
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

/// `Σ a[i]`, vectorisable.
#[inline]
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `log Σ exp(s·x[i])` of a row, with the max subtracted; vectorised exp through
/// a stack buffer (no allocation per row).
#[inline]
pub fn log_sum_exp(row: &[f32], s: f32) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * s));
    let mut buf = [0.0f32; 256];
    let mut total = 0.0f32;
    for c in row.chunks(256) {
        let b = &mut buf[..c.len()];
        for (o, &x) in b.iter_mut().zip(c) {
            *o = x * s - m;
        }
        exp_inplace(b);
        total += sum(b);
    }
    m + total.ln()
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

/// `x ← exp(x)` over a slice, vectorisable (the libm call is not): range
/// reduction `x = n·ln2 + r`, |r| ≤ ln2/2, a degree-6 Taylor polynomial for
/// `e^r` (relative error ≤ 2e-7, about one f32 ulp), and `2^n` by exponent bits.
/// Inputs below −87.3 (including −inf, used for masked scores) give exactly 0.
#[inline]
pub fn exp_inplace(x: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding then subtracting 1.5·2^23 rounds to the nearest integer in SIMD.
    const ROUND: f32 = 12_582_912.0;
    for v in x.iter_mut() {
        let xi = v.clamp(-87.3, 88.7);
        let n = (xi * LOG2E + ROUND) - ROUND;
        let r = (xi - n * LN2_HI) - n * LN2_LO;
        let p =
            1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        let scale = f32::from_bits((((n as i32) + 127) as u32) << 23);
        *v = if *v < -87.3 { 0.0 } else { p * scale };
    }
}

#[cfg(test)]
mod exp_tests {
    #[test]
    fn exp_inplace_matches_libm() {
        let mut xs: Vec<f32> = (-9000..=8800).map(|i| i as f32 * 0.01).collect();
        xs.extend([f32::NEG_INFINITY, -87.4, -100.0, 0.0, 1e-8, -1e-8]);
        let want: Vec<f32> = xs.iter().map(|x| x.exp()).collect();
        let mut got = xs.clone();
        super::exp_inplace(&mut got);
        for ((x, g), w) in xs.iter().zip(&got).zip(&want) {
            if *x < -87.3 {
                assert_eq!(*g, 0.0, "x = {x}");
            } else {
                assert!((g - w).abs() <= 3e-7 * w.abs(), "x = {x}: {g} vs {w}");
            }
        }
    }
}
