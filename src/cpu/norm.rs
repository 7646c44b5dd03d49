//! RMSNorm: `y = x / sqrt(mean(x²) + eps) · w`, per row, in f32.

use rayon::prelude::*;

use super::{dot, dot3};

/// Rows per rayon task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// Returns `y` and the per-row reciprocal RMS `rstd` that the backward reuses.
pub fn rms_norm_forward(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let rows = x.len() / d;
    let mut y = vec![0.0f32; x.len()];
    let mut rstd = vec![0.0f32; rows];
    y.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|((yb, rb), xb)| {
            for ((yr, r), xr) in yb.chunks_mut(d).zip(rb.iter_mut()).zip(xb.chunks(d)) {
                let ms = dot(xr, xr) / d as f32;
                *r = 1.0 / (ms + eps).sqrt();
                for ((o, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
                    *o = xv * *r * wv;
                }
            }
        });
    (y, rstd)
}

/// Backward: with `x̂ = x·rstd` and `g = dy·w`, `dx = rstd·(g − x̂·mean(g·x̂))`.
/// Accumulates `dw += Σ_rows dy·x̂` when `dw` is given.
pub fn rms_norm_backward(x: &[f32], w: &[f32], rstd: &[f32], dy: &[f32], dw: Option<&mut [f32]>) -> Vec<f32> {
    let d = w.len();
    let mut dx = vec![0.0f32; x.len()];
    let dw_partial = dx
        .par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .zip(dy.par_chunks(d * ROWS_PER_TASK))
        .zip(rstd.par_chunks(ROWS_PER_TASK))
        .map(|(((dxb, xb), dyb), rb)| {
            let mut dw_local = vec![0.0f32; if dw.is_some() { d } else { 0 }];
            for (((dxr, xr), dyr), &r) in dxb.chunks_mut(d).zip(xb.chunks(d)).zip(dyb.chunks(d)).zip(rb) {
                let mean = dot3(dyr, w, xr) * r / d as f32;
                for i in 0..d {
                    let xhat = xr[i] * r;
                    dxr[i] = r * (dyr[i] * w[i] - xhat * mean);
                }
                for (acc, (&g, &xv)) in dw_local.iter_mut().zip(dyr.iter().zip(xr)) {
                    *acc += g * xv * r;
                }
            }
            dw_local
        })
        // Collected in chunk order and summed sequentially: the same bits on every
        // run, whatever rayon's work stealing did (exact resume needs this).
        .collect::<Vec<Vec<f32>>>()
        .into_iter()
        .fold(Vec::new(), |a, b| if a.is_empty() { b } else { a.iter().zip(&b).map(|(x, y)| x + y).collect() });
    if let Some(dw) = dw {
        dw.iter_mut().zip(&dw_partial).for_each(|(a, b)| *a += b);
    }
    dx
}

/// Naive single-threaded RMSNorm, the benches' baseline.
pub fn rms_norm_naive(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let r = 1.0 / (ms + eps).sqrt();
        y.extend(row.iter().zip(w).map(|(a, b)| a * r * b));
    }
    y
}
