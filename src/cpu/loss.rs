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
