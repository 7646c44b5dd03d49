//! AdamW exactly as `torch.optim.AdamW` (non-amsgrad) computes it, and the global
//! gradient norm with clipping as `torch.nn.utils.clip_grad_norm_` does.

use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// torch's defaults.
    fn default() -> Self {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

/// One AdamW step on one tensor; `step` counts from 1. Decoupled decay:
/// `p ← p·(1 − lr·wd)`, then `p ← p − lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)`.
/// Every gradient is read as `g·grad_scale` (the clip coefficient, folded in so
/// clipping costs no extra pass over the gradients; 1 for none).
/// One AdamW step; returns whether every updated weight and second moment is
/// finite (the twin of `adamw_multi_tensor`'s flag).
pub fn adamw_step(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    h: &AdamW,
    step: u64,
    grad_scale: f32,
) -> bool {
    let bc1 = 1.0 - (h.beta1 as f64).powi(step as i32);
    let bc2 = 1.0 - (h.beta2 as f64).powi(step as i32);
    let step_size = (h.lr as f64 / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let decay = 1.0 - h.lr * h.weight_decay;
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .map(|(((pc, mc), vc), gc)| {
            let mut finite = true;
            for i in 0..pc.len() {
                let gi = gc[i] * grad_scale;
                mc[i] = h.beta1 * mc[i] + (1.0 - h.beta1) * gi;
                vc[i] = h.beta2 * vc[i] + (1.0 - h.beta2) * gi * gi;
                let denom = vc[i].sqrt() / bc2_sqrt + h.eps;
                pc[i] = pc[i] * decay - step_size * mc[i] / denom;
                finite &= pc[i].is_finite() && vc[i].is_finite();
            }
            finite
        })
        .reduce(|| true, |a, b| a && b)
}

/// Sum of squares of one buffer, accumulated in f64.
pub fn sum_squares(g: &[f32]) -> f64 {
    g.par_chunks(CHUNK).map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()).sum()
}

/// torch's clip coefficient: `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_coef(total_norm: f64, max_norm: f64) -> f32 {
    (max_norm / (total_norm + 1e-6)).min(1.0) as f32
}

/// The textbook single-threaded AdamW loop, the benches' baseline.
pub fn adamw_step_naive(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW, step: u64) {
    let bc1 = 1.0 - h.beta1.powi(step as i32);
    let bc2 = 1.0 - h.beta2.powi(step as i32);
    for i in 0..p.len() {
        p[i] -= h.lr * h.weight_decay * p[i];
        m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
        v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
        p[i] -= h.lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + h.eps);
    }
}
