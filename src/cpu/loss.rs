//! Row-wise softmax losses on `[T, V]` logits: masked cross-entropy (labels of -100
//! are ignored) and the log-probability of chosen tokens (GRPO's policy ratio).

use rayon::prelude::*;

pub const IGNORE_INDEX: i32 = -100;

use super::{exp_inplace, log_sum_exp as row_lse};

/// Per-row `lse` and `loss = lse − logit[label]` (0 where the label is ignored).
/// Labels were range-checked by the caller.
pub fn cross_entropy_forward(logits: &[f32], labels: &[i32], v: usize) -> (Vec<f32>, Vec<f32>) {
    let rows: Vec<(f32, f32)> = logits
        .par_chunks(v)
        .zip(labels.par_iter())
        .map(|(row, &l)| {
            if l == IGNORE_INDEX {
                (0.0, 0.0)
            } else {
                let lse = row_lse(row, 1.0);
                (lse, lse - row[l as usize])
            }
        })
        .collect();
    rows.into_iter().unzip()
}

/// `dlogits = (softmax − onehot(label)) · grad_scale` on labelled rows, 0 elsewhere.
/// The caller picks `grad_scale` (1 / labelled tokens of the whole accumulated batch).
pub fn cross_entropy_backward(logits: &[f32], labels: &[i32], lse: &[f32], v: usize, grad_scale: f32) -> Vec<f32> {
    cross_entropy_backward_rows(logits, labels, lse, v, &|_| grad_scale)
}

/// As [`cross_entropy_backward`] with its own scale per row (`row_scale(t)`).
pub fn cross_entropy_backward_rows(
    logits: &[f32],
    labels: &[i32],
    lse: &[f32],
    v: usize,
    row_scale: &(dyn Fn(usize) -> f32 + Sync),
) -> Vec<f32> {
    let mut d = vec![0.0f32; logits.len()];
    d.par_chunks_mut(v).zip(logits.par_chunks(v)).enumerate().for_each(|(t, (dr, row))| {
        let l = labels[t];
        if l == IGNORE_INDEX {
            return;
        }
        let grad_scale = row_scale(t);
        for (o, &x) in dr.iter_mut().zip(row) {
            *o = x - lse[t];
        }
        exp_inplace(dr);
        dr.iter_mut().for_each(|o| *o *= grad_scale);
        dr[l as usize] -= grad_scale;
    });
    d
}

/// `logp[t] = s·logits[t, ids[t]] − lse(s·logits[t])` with `s = 1/temperature`.
/// Returns `(logp, lse)`.
pub fn token_logprobs_forward(logits: &[f32], ids: &[i32], v: usize, s: f32) -> (Vec<f32>, Vec<f32>) {
    logits
        .par_chunks(v)
        .zip(ids.par_iter())
        .map(|(row, &id)| {
            let lse = row_lse(row, s);
            (row[id as usize] * s - lse, lse)
        })
        .unzip()
}

/// `dlogits[t] = s · dlogp[t] · (onehot(ids[t]) − softmax(s·logits[t]))`.
pub fn token_logprobs_backward(logits: &[f32], ids: &[i32], lse: &[f32], dlogp: &[f32], v: usize, s: f32) -> Vec<f32> {
    let mut d = vec![0.0f32; logits.len()];
    d.par_chunks_mut(v).zip(logits.par_chunks(v)).enumerate().for_each(|(t, (dr, row))| {
        let g = dlogp[t] * s;
        if g == 0.0 {
            return;
        }
        for (o, &x) in dr.iter_mut().zip(row) {
            *o = x * s - lse[t];
        }
        exp_inplace(dr);
        dr.iter_mut().for_each(|o| *o *= -g);
        dr[ids[t] as usize] += g;
    });
    d
}

/// Entropy of `softmax(s·row)` for each row of `logits: [T, v]`, in f64:
/// `H = log Z − Σ p·(s·x − max)` (GRPO's per-token entropy diagnostic).
pub fn row_entropy(logits: &[f32], v: usize, s: f32) -> Vec<f32> {
    logits
        .par_chunks(v)
        .map(|r| {
            let max = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * s));
            let z: f64 = r.iter().map(|&l| ((l * s - max) as f64).exp()).sum();
            let e: f64 = r
                .iter()
                .map(|&l| {
                    let d = (l * s - max) as f64;
                    d.exp() / z * d
                })
                .sum();
            (z.ln() - e) as f32
        })
        .collect()
}

/// Constants of GRPO's per-token objective (`train::grpo::GrpoParams` as the
/// kernels see it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyLossParams {
    pub eps_low: f32,
    pub eps_high: f32,
    /// KL coefficient; 0 leaves the k3 term out.
    pub beta: f32,
    /// Dual-clip: for a negative advantage the surrogate is capped at `c·|A|`
    /// (and stops the gradient); 0 = off.
    pub clip_ratio_c: f32,
    /// k3 is clamped to at most this (and stops the gradient); 0 = off.
    pub kl_clamp: f32,
}

/// One response token's GRPO loss before aggregation (f64, as
/// `grpo_token_loss` in cuda/loss.cu computes it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyTokenLoss {
    /// `−min(ρA, clip(ρ)A) + β·k3`.
    pub loss: f64,
    /// Its derivative w.r.t. the token's log-prob.
    pub dlogp: f64,
    /// The k3 estimate `exp(ref − logp) − (ref − logp) − 1` (0 when β = 0).
    pub k3: f64,
    /// Whether the clipped branch won (and stopped the gradient).
    pub clipped: bool,
}

/// GRPO's per-token objective: ratio `ρ = exp(logp − old)`, the clipped
/// surrogate (dual-clipped for negative advantages), plus `β·k3` against the
/// reference (clamped).
pub fn policy_token_loss(lp: f32, old: f32, reference: f32, advantage: f32, p: &PolicyLossParams) -> PolicyTokenLoss {
    let (lp, a) = (lp as f64, advantage as f64);
    let ratio = (lp - old as f64).exp();
    let (lo, hi) = (1.0 - p.eps_low as f64, 1.0 + p.eps_high as f64);
    let (unclipped, clip_v) = (ratio * a, ratio.clamp(lo, hi) * a);
    // −min(ρA, clip(ρ)A): the clipped branch wins (and stops the gradient)
    // only when it is strictly smaller, which needs ρ outside [lo, hi].
    let clipped = clip_v < unclipped;
    let (mut loss, mut dlogp) = if clipped { (-clip_v, 0.0) } else { (-unclipped, -a * ratio) };
    // Dual-clip (verl's clip_ratio_c): a negative advantage's loss grows with
    // the ratio without bound; past c·|A| it is capped and stops the gradient.
    if p.clip_ratio_c != 0.0 && a < 0.0 {
        let cap = -a * p.clip_ratio_c as f64;
        if loss > cap {
            (loss, dlogp) = (cap, 0.0);
        }
    }
    let mut k3 = 0.0;
    if p.beta != 0.0 {
        let delta = reference as f64 - lp;
        k3 = delta.exp() - delta - 1.0;
        let mut dk3 = 1.0 - delta.exp();
        // verl's low_var_kl clamps k3 (never negative) from above.
        if p.kl_clamp != 0.0 && k3 > p.kl_clamp as f64 {
            (k3, dk3) = (p.kl_clamp as f64, 0.0);
        }
        loss += p.beta as f64 * k3;
        dlogp += p.beta as f64 * dk3;
    }
    PolicyTokenLoss { loss, dlogp, k3, clipped }
}

/// Sums over a micro-batch's response tokens, the only numbers of the GRPO loss
/// the host reads.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PolicyLossSums {
    /// `Σ loss / denominator`: this micro-batch's share of the aggregated loss.
    pub loss: f64,
    /// `Σ k3`.
    pub kl: f64,
    /// Tokens whose clipped branch won.
    pub clipped: f64,
    /// `Σ entropy` (0 without entropies).
    pub entropy: f64,
}

/// The CPU twin of `grpo_token_loss`: `dlogp[t] = dloss_t / den[t]` and the
/// sums, in token order. `den[t]` is the token's aggregation denominator (an
/// integer: tokens or sequences × length).
pub fn policy_loss(
    logp: &[f32],
    old: &[f32],
    reference: &[f32],
    advantage: &[f32],
    den: &[f32],
    entropy: Option<&[f32]>,
    p: &PolicyLossParams,
) -> (Vec<f32>, PolicyLossSums) {
    let mut sums = PolicyLossSums::default();
    let mut dlogp = Vec::with_capacity(logp.len());
    for t in 0..logp.len() {
        let w = 1.0 / den[t] as f64;
        let tok = policy_token_loss(logp[t], old[t], reference[t], advantage[t], p);
        sums.loss += w * tok.loss;
        sums.kl += tok.k3;
        sums.clipped += tok.clipped as u8 as f64;
        dlogp.push((w * tok.dlogp) as f32);
    }
    sums.entropy = entropy.map_or(0.0, |e| e.iter().map(|&x| x as f64).sum());
    (dlogp, sums)
}
