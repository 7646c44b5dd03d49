//! Token sampling from logits rows: temperature, top-k, top-p (nucleus), a
//! counter-based RNG so every draw is reproducible from (seed, stream), and the
//! chosen token's log-probability.
//!
//! Order of filters (as in transformers' logits warpers and vLLM): temperature,
//! then top-k, then top-p on the renormalised top-k distribution. The recorded
//! log-probability is the policy's: `log_softmax(logits / temperature)[token]` over
//! the full vocabulary (what GRPO's ratio and TRL's recomputation use), not the
//! truncated distribution the token was drawn from.

use rayon::prelude::*;

use super::log_sum_exp;

use crate::rng::Philox;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); the log-prob is then taken at temperature 1.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest most-likely set with mass >= top_p; 1.0 disables.
    pub top_p: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 }
    }
}

/// One row's sampling distribution after all filters: the allowed tokens (in
/// vocabulary order, banned ones left out) with their unnormalised
/// probabilities, plus the log-sum-exp of the full tempered row (banned tokens
/// included: the recorded log-prob is the model's, as a teacher-forced
/// recomputation gives it).
pub struct RowDistribution {
    pub tokens: Vec<usize>,
    pub weights: Vec<f32>,
    pub total: f32,
    pub lse: f32,
    inv_t: f32,
    greedy: bool,
}

impl RowDistribution {
    /// `banned` ids (each inside the row, not all of them) are never drawn.
    pub fn new(logits: &[f32], p: &SamplingParams, banned: &[u32]) -> RowDistribution {
        let greedy = p.temperature <= 0.0;
        let inv_t = if greedy { 1.0 } else { 1.0 / p.temperature };
        // The same normaliser as `cpu::loss::token_logprobs_forward`, so a drawn
        // token's log-prob equals its teacher-forced one bit for bit.
        let lse = log_sum_exp(logits, inv_t);
        let allowed = |i: usize| !banned.contains(&(i as u32));
        let max = logits
            .iter()
            .enumerate()
            .filter(|(i, _)| allowed(*i))
            .fold(f32::NEG_INFINITY, |a, (_, &b)| a.max(b * inv_t));
        let probs: Vec<f32> =
            logits.iter().enumerate().map(|(i, &x)| if allowed(i) { (x * inv_t - max).exp() } else { 0.0 }).collect();
        let z: f32 = probs.iter().sum();
        if greedy {
            // First allowed index of the maximum, as torch.argmax.
            let best = (0..logits.len())
                .filter(|&i| allowed(i))
                .fold(None, |b: Option<usize>, i| match b {
                    Some(b) if logits[i] <= logits[b] => Some(b),
                    _ => Some(i),
                })
                .expect("a row keeps at least one allowed token");
            return RowDistribution { tokens: vec![best], weights: vec![1.0], total: 1.0, lse, inv_t, greedy };
        }
        let filtered = p.top_k > 0 && p.top_k < logits.len() || p.top_p < 1.0;
        if !filtered && banned.is_empty() {
            let tokens = (0..logits.len()).collect();
            return RowDistribution { tokens, weights: probs, total: z, lse, inv_t, greedy };
        }
        let mut order: Vec<usize> = (0..logits.len()).filter(|&i| allowed(i)).collect();
        // Descending probability; ties keep vocabulary order (stable sort).
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let kept_mass: f32 = order.iter().map(|&i| probs[i]).sum();
        if p.top_p < 1.0 {
            let mut cum = 0.0f32;
            let mut keep = order.len();
            for (n, &i) in order.iter().enumerate() {
                cum += probs[i] / kept_mass;
                if cum >= p.top_p {
                    keep = n + 1;
                    break;
                }
            }
            order.truncate(keep.max(1));
        }
        // Draw over the kept set in vocabulary order, as the CUDA sampler does
        // (it finds the set by a threshold, not a sort), so both map a uniform to
        // the same token.
        order.sort_unstable();
        let weights: Vec<f32> = order.iter().map(|&i| probs[i]).collect();
        let total = weights.iter().sum();
        RowDistribution { tokens: order, weights, total, lse, inv_t, greedy }
    }

    /// The token at uniform draw `u ∈ [0, 1)` (inverse CDF over the allowed set).
    pub fn draw(&self, u: f32) -> usize {
        if self.greedy {
            return self.tokens[0];
        }
        let target = u * self.total;
        let mut cum = 0.0f32;
        for (&t, &w) in self.tokens.iter().zip(&self.weights) {
            cum += w;
            if target < cum {
                return t;
            }
        }
        // Rounding can leave `target` a hair above the last partial sum.
        *self.tokens.last().expect("a distribution keeps at least one token")
    }

    /// `log_softmax(logits / temperature)[token]` over the full row.
    pub fn logprob(&self, logits: &[f32], token: usize) -> f32 {
        logits[token] * self.inv_t - self.lse
    }
}

/// Draws `n` samples from each row of `logits: [rows, v]`. Sample `j` of row `r`
/// uses the Philox stream `stream0 + r·n + j` under key `seed`, so results do not
/// depend on threading. Returns `(tokens, logprobs)`, both `[rows·n]`, row-major.
/// Each row's distribution is built once and shared by its `n` samples.
pub fn sample_rows(
    logits: &[f32],
    v: usize,
    n: usize,
    p: &SamplingParams,
    seed: u64,
    stream0: u64,
) -> (Vec<u32>, Vec<f32>) {
    let streams: Vec<u64> = (0..logits.len() / v).map(|r| stream0 + (r * n) as u64).collect();
    sample_rows_streams(logits, v, n, p, seed, &streams, &[])
}

/// [`sample_rows`] with each row's first stream given: sample `j` of row `r` uses
/// stream `streams[r] + j` (a decoding step whose rows are a subset of the samples
/// keeps every sample on its own streams), and `banned` ids never drawn.
pub fn sample_rows_streams(
    logits: &[f32],
    v: usize,
    n: usize,
    p: &SamplingParams,
    seed: u64,
    streams: &[u64],
    banned: &[u32],
) -> (Vec<u32>, Vec<f32>) {
    let per_row: Vec<Vec<(u32, f32)>> = logits
        .par_chunks(v)
        .zip(streams.par_iter())
        .map(|(row, &s0)| {
            let dist = RowDistribution::new(row, p, banned);
            (0..n)
                .map(|j| {
                    let u = Philox::new(seed, s0 + j as u64).uniform();
                    let t = dist.draw(u);
                    (t as u32, dist.logprob(row, t))
                })
                .collect()
        })
        .collect();
    per_row.into_iter().flatten().unzip()
}
