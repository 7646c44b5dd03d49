//! The GRPO objective on per-token log-probabilities, with its gradient.
//!
//! Per group of G responses to one prompt: advantages `Aᵢ = (rᵢ − mean) / (std + ε)`
//! (unbiased std, as TRL and verl compute it); per response token
//! `ρ = exp(logp − logp_old)`, the clipped surrogate `−min(ρA, clip(ρ, 1−ε_low,
//! 1+ε_high)·A)`, plus `β·k3` with `k3 = exp(ref − logp) − (ref − logp) − 1` (the
//! low-variance KL estimator, as a loss term). Token losses are aggregated by one
//! of TRL's normalisations. The gradient w.r.t. `logp` goes back through
//! `ops::token_logprobs_backward` into the model.

use crate::cpu::loss::{PolicyLossParams, policy_token_loss};

/// How token losses become one number (TRL's `loss_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAgg {
    /// Σ over all response tokens / number of response tokens in this batch (the
    /// paper's "token mean"; TRL's `bnpo`).
    TokenMean,
    /// Mean over sequences of each sequence's token mean (TRL's `grpo`).
    Grpo,
    /// Σ / (sequences · max_completion_length) (TRL's `dr_grpo`).
    DrGrpo,
    /// Σ / response tokens of the whole global batch across accumulation steps
    /// (TRL's `dapo`); the caller passes that count.
    Dapo,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrpoParams {
    pub eps_low: f32,
    pub eps_high: f32,
    /// KL coefficient; 0 disables the KL term (no reference needed).
    pub beta: f32,
    /// Dual-clip: a negative advantage's token loss is capped at `c·|A|`; 0 = off.
    pub clip_ratio_c: f32,
    /// k3 clamped to at most this; 0 = off.
    pub kl_clamp: f32,
    pub agg: LossAgg,
    /// Advantage denominator epsilon.
    pub adv_eps: f32,
    /// For `DrGrpo`: the completion length budget.
    pub max_completion_len: usize,
    /// Response tokens of the whole (mini-)batch when it is split over several
    /// calls (micro-batches); the `TokenMean` and `Dapo` denominator. 0 = this
    /// call's tokens (`Dapo` then needs it).
    pub global_tokens: usize,
    /// Sequences of the whole (mini-)batch, for `Grpo` and `DrGrpo`; 0 = this call's.
    pub global_seqs: usize,
}

impl GrpoParams {
    /// The per-token constants the loss kernels take.
    pub fn token_params(&self) -> PolicyLossParams {
        PolicyLossParams {
            eps_low: self.eps_low,
            eps_high: self.eps_high,
            beta: self.beta,
            clip_ratio_c: self.clip_ratio_c,
            kl_clamp: self.kl_clamp,
        }
    }

    /// A token's aggregation denominator (its loss counts `1 / denominator`) in
    /// a sequence of `n` response tokens, when this call holds `tokens` tokens
    /// in `seqs` sequences. An integer, exact in f32 below 2^24.
    pub fn denominator(&self, n: usize, tokens: usize, seqs: usize) -> f64 {
        let all_tokens = if self.global_tokens > 0 { self.global_tokens } else { tokens };
        let all_seqs = if self.global_seqs > 0 { self.global_seqs } else { seqs };
        match self.agg {
            LossAgg::TokenMean | LossAgg::Dapo => all_tokens as f64,
            LossAgg::Grpo => all_seqs as f64 * n.max(1) as f64,
            LossAgg::DrGrpo => all_seqs as f64 * self.max_completion_len as f64,
        }
    }
}

impl Default for GrpoParams {
    /// PAPER.md: eps 0.2, beta 0.01, token mean; the release's dual-clip c = 3
    /// and k3 clamp 10.
    fn default() -> Self {
        GrpoParams {
            eps_low: 0.2,
            eps_high: 0.2,
            beta: 0.01,
            clip_ratio_c: 3.0,
            kl_clamp: 10.0,
            agg: LossAgg::TokenMean,
            adv_eps: 1e-4,
            max_completion_len: 4096,
            global_tokens: 0,
            global_seqs: 0,
        }
    }
}

/// Group-normalised advantages for rewards laid out group by group (`g` per group).
/// Returns them with the number of groups whose rewards were all equal (they get
/// zero advantage and so contribute no gradient).
pub fn group_advantages(rewards: &[f32], g: usize, eps: f32) -> (Vec<f32>, usize) {
    assert!(g > 0 && rewards.len().is_multiple_of(g), "rewards must fill whole groups");
    let mut adv = Vec::with_capacity(rewards.len());
    let mut flat = 0;
    for grp in rewards.chunks(g) {
        let mean = grp.iter().sum::<f32>() / g as f32;
        let var = if g > 1 { grp.iter().map(|r| (r - mean) * (r - mean)).sum::<f32>() / (g - 1) as f32 } else { 0.0 };
        let std = var.sqrt();
        if grp.iter().all(|&r| r == grp[0]) {
            flat += 1;
        }
        adv.extend(grp.iter().map(|r| (r - mean) / (std + eps)));
    }
    (adv, flat)
}

/// One response's tokens for the loss.
pub struct SeqTokens<'a> {
    /// Current policy log-probs of the response tokens.
    pub logp: &'a [f32],
    /// Log-probs recorded by the rollout policy.
    pub old: &'a [f32],
    /// Reference policy log-probs (ignored when beta = 0).
    pub reference: &'a [f32],
    pub advantage: f32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrpoOutput {
    pub loss: f64,
    /// d loss / d logp, one vector per sequence.
    pub dlogp: Vec<Vec<f32>>,
    /// Mean k3 KL over response tokens.
    pub kl: f64,
    /// Fraction of tokens where the clip was active (gradient stopped).
    pub clip_frac: f64,
    pub tokens: usize,
}

/// The GRPO loss and its gradient for a batch of sequences.
pub fn grpo_loss(seqs: &[SeqTokens], p: &GrpoParams) -> GrpoOutput {
    let tokens: usize = seqs.iter().map(|s| s.logp.len()).sum();
    let mut out = GrpoOutput { tokens, ..Default::default() };
    if tokens == 0 {
        out.dlogp = seqs.iter().map(|_| vec![]).collect();
        return out;
    }
    let (mut kl_sum, mut clipped) = (0.0f64, 0usize);
    let tp = p.token_params();
    for s in seqs {
        let w = 1.0 / p.denominator(s.logp.len(), tokens, seqs.len());
        let mut d = Vec::with_capacity(s.logp.len());
        for t in 0..s.logp.len() {
            let tok = policy_token_loss(s.logp[t], s.old[t], s.reference[t], s.advantage, &tp);
            clipped += tok.clipped as usize;
            kl_sum += tok.k3;
            out.loss += w * tok.loss;
            d.push((w * tok.dlogp) as f32);
        }
        out.dlogp.push(d);
    }
    out.kl = kl_sum / tokens as f64;
    out.clip_frac = clipped as f64 / tokens as f64;
    out
}
