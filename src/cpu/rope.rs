//! Rotary position embeddings in the "rotate_half" layout both Qwen2.5-VL towers
//! use: dim `d` pairs with `d + D/2`, and `x' = x·cos + rotate_half(x)·sin` with
//! `rotate_half(x) = [−x[D/2..], x[..D/2]]`. cos/sin tables are `[T, D]`.

use rayon::prelude::*;

/// Applies the rotation to `x: [T, H, D]` with tables `cos, sin: [T, D]`.
pub fn rope_forward(x: &[f32], cos: &[f32], sin: &[f32], heads: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(heads * d).zip(x.par_chunks(heads * d)).enumerate().for_each(|(t, (yt, xt))| {
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        for (yh, xh) in yt.chunks_mut(d).zip(xt.chunks(d)) {
            for i in 0..half {
                yh[i] = xh[i] * c[i] - xh[i + half] * s[i];
                yh[i + half] = xh[i + half] * c[i + half] + xh[i] * s[i + half];
            }
        }
    });
    y
}

/// Backward of [`rope_forward`] (the transpose of the rotation):
/// `dx[i] = dy[i]·cos[i] + dy[i+h]·sin[i+h]`, `dx[i+h] = dy[i+h]·cos[i+h] − dy[i]·sin[i]`.
pub fn rope_backward(dy: &[f32], cos: &[f32], sin: &[f32], heads: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let mut dx = vec![0.0f32; dy.len()];
    dx.par_chunks_mut(heads * d).zip(dy.par_chunks(heads * d)).enumerate().for_each(|(t, (dxt, dyt))| {
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        for (dxh, dyh) in dxt.chunks_mut(d).zip(dyt.chunks(d)) {
            for i in 0..half {
                dxh[i] = dyh[i] * c[i] + dyh[i + half] * s[i + half];
                dxh[i + half] = dyh[i + half] * c[i + half] - dyh[i] * s[i];
            }
        }
    });
    dx
}

/// `inv_freq[k] = theta^(−2k/dim)` for `k < dim/2`, in f32 as the reference does.
pub fn inv_freq(dim: usize, theta: f32) -> Vec<f32> {
    (0..dim / 2).map(|k| 1.0 / theta.powf((2 * k) as f32 / dim as f32)).collect()
}

/// Builds `[T, D]` cos/sin tables where column `j` has angle
/// `pos[t][axis(j mod D/2)] · inv_freq[j mod D/2]`; `axis_of` maps a frequency index
/// to the position axis it reads.
pub fn tables<const A: usize>(
    pos: &[[f32; A]],
    d: usize,
    freqs: &[f32],
    axis_of: impl Fn(usize) -> usize,
) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    let mut cos = Vec::with_capacity(pos.len() * d);
    let mut sin = Vec::with_capacity(pos.len() * d);
    let axes: Vec<usize> = (0..half).map(&axis_of).collect();
    for p in pos {
        for j in 0..d {
            let f = j % half;
            let angle = p[axes[f]] * freqs[f];
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}
