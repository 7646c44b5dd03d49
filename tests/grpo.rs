//! GRPO pieces against values computed by hand from TRL's documented formulas, and
//! the rewards against reward-hacking attempts.

use actial::train::grpo::{GrpoParams, LossAgg, SeqTokens, group_advantages, grpo_loss};
use actial::train::reward::{AccuracyReward, FormatReward, Reward, WeightedReward};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn rewards_follow_the_paper_and_resist_hacking() {
    let r = WeightedReward::actial(0.5, 0.5);
    let cases: [(&str, f32, [f32; 2]); 10] = [
        ("<think>x</think><answer>A</answer>", 1.0, [1.0, 1.0]),
        ("  <THINK>\nmulti\nline</think>\n<Answer> A </Answer>  ", 1.0, [1.0, 1.0]),
        ("A", 0.0, [0.0, 0.0]),
        ("<answer>A</answer>", 0.5, [1.0, 0.0]), // no think: format fails, accuracy holds
        ("<think>x</think><answer></answer>", 0.5, [0.0, 1.0]), // empty answer
        ("<think>x</think><answer>A or B</answer>", 0.5, [0.0, 1.0]), // hedging
        ("<think>x</think><answer>A</answer><answer>B</answer>", 0.5, [0.0, 1.0]), // two answers: no accuracy
        ("<think>x</think><answer>A</answer> <answer>A</answer>", 0.5, [0.0, 1.0]),
        ("Sure! <think>x</think><answer>A</answer>", 0.5, [1.0, 0.0]), // text outside: no format
        ("<think>x</think><answer>A</answer> done", 0.5, [1.0, 0.0]),
    ];
    for (resp, total, parts) in cases {
        let (t, each) = r.score(resp, "A");
        assert_eq!((t, each.as_slice()), (total, parts.as_slice()), "{resp:?}");
    }
    assert_eq!(AccuracyReward::default().score("<think>x</think><answer>B</answer>", "A"), 0.0);
    assert_eq!(FormatReward::default().name(), "format");
    assert_eq!(AccuracyReward::default().extract("<answer> C </answer>"), Some("C"));
}

#[test]
fn advantages_by_hand() {
    // Rewards [1, 0, 0.5, 0.5]: mean 0.5, unbiased std sqrt(0.5/3) = 0.408248.
    let (a, flat) = group_advantages(&[1.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0], 4, 1e-4);
    let s = (0.5f64 / 3.0).sqrt();
    assert!(close(a[0] as f64, 0.5 / (s + 1e-4), 1e-5) && close(a[1] as f64, -0.5 / (s + 1e-4), 1e-5));
    assert_eq!((a[2], a[3]), (0.0, 0.0));
    // An all-equal group: zero advantages, counted.
    assert_eq!(&a[4..], &[0.0; 4]);
    assert_eq!(flat, 1);
}

fn params(beta: f32, agg: LossAgg) -> GrpoParams {
    GrpoParams {
        eps_low: 0.2,
        eps_high: 0.2,
        beta,
        // The plain objective; the release's dual-clip and k3 clamp are
        // checked on their own below.
        clip_ratio_c: 0.0,
        kl_clamp: 0.0,
        agg,
        adv_eps: 1e-4,
        max_completion_len: 4,
        global_tokens: if agg == LossAgg::Dapo { 8 } else { 0 },
        global_seqs: 0,
    }
}

#[test]
fn clipped_surrogate_by_hand() {
    // A = +1. Token 1: ratio 1 -> loss -1, grad -1. Token 2: ratio 1.5 > 1.2 -> clipped:
    // loss -1.2, no gradient. Token mean over 2 tokens.
    let lp = [0.0f32, 1.5f32.ln()];
    let old = [0.0f32, 0.0];
    let out = grpo_loss(
        &[SeqTokens { logp: &lp, old: &old, reference: &lp, advantage: 1.0 }],
        &params(0.0, LossAgg::TokenMean),
    );
    assert!(close(out.loss, -1.1, 1e-6), "{}", out.loss);
    assert!(close(out.dlogp[0][0] as f64, -0.5, 1e-6) && out.dlogp[0][1] == 0.0);
    assert!(close(out.clip_frac, 0.5, 1e-12));
    // A = -1. Ratio 0.5 < 0.8: min(-0.5, -0.8) = -0.8 is the clipped branch -> loss 0.8,
    // no gradient. Ratio 1.5: min(-1.5, -1.2) = -1.5 unclipped -> loss 1.5, grad -A·ρ = 1.5.
    let lp = [0.5f32.ln(), 1.5f32.ln()];
    let out = grpo_loss(
        &[SeqTokens { logp: &lp, old: &old, reference: &lp, advantage: -1.0 }],
        &params(0.0, LossAgg::TokenMean),
    );
    assert!(close(out.loss, (0.8 + 1.5) / 2.0, 1e-6), "{}", out.loss);
    assert_eq!(out.dlogp[0][0], 0.0);
    assert!(close(out.dlogp[0][1] as f64, 1.5 / 2.0, 1e-6));
}

#[test]
fn k3_kl_by_hand() {
    // ratio 1, A = 0: only the KL term. ref − logp = 0.3: k3 = e^0.3 − 0.3 − 1,
    // d/dlogp = β(1 − e^0.3).
    let (lp, reference) = ([0.1f32], [0.4f32]);
    let out = grpo_loss(
        &[SeqTokens { logp: &lp, old: &lp, reference: &reference, advantage: 0.0 }],
        &params(0.1, LossAgg::TokenMean),
    );
    let d = 0.3f64;
    let k3 = d.exp() - d - 1.0;
    assert!(close(out.kl, k3, 1e-6) && close(out.loss, 0.1 * k3, 1e-7), "{out:?}");
    assert!(close(out.dlogp[0][0] as f64, 0.1 * (1.0 - d.exp()), 1e-6));
}

#[test]
fn aggregations_weight_tokens_as_trl_does() {
    // Two sequences of 1 and 3 tokens, ratio 1 everywhere, A = 1: every token loss is −1.
    let (one, three) = ([0.0f32], [0.0f32; 3]);
    let seqs = [
        SeqTokens { logp: &one, old: &one, reference: &one, advantage: 1.0 },
        SeqTokens { logp: &three, old: &three, reference: &three, advantage: 1.0 },
    ];
    let w = |agg| grpo_loss(&seqs, &params(0.0, agg)).dlogp.iter().map(|d| -d[0]).collect::<Vec<f32>>();
    assert_eq!(w(LossAgg::TokenMean), vec![0.25, 0.25]);
    assert_eq!(w(LossAgg::Grpo), vec![0.5, 1.0 / 6.0]);
    assert_eq!(w(LossAgg::DrGrpo), vec![0.125, 0.125]); // 1 / (2 sequences · 4 max tokens)
    assert_eq!(w(LossAgg::Dapo), vec![0.125, 0.125]); // 1 / 8 global tokens
    assert!(close(grpo_loss(&seqs, &params(0.0, LossAgg::Grpo)).loss, -1.0, 1e-6));
}

#[test]
fn gradient_matches_finite_differences() {
    let lp = [-1.2f32, -0.4, -2.0, -0.9];
    let old = [-1.25f32, -0.45, -1.95, -0.85]; // ratios within the clip range
    let reference = [-1.0f32, -0.6, -2.2, -1.1];
    let p = params(0.05, LossAgg::TokenMean);
    let loss =
        |v: &[f32]| grpo_loss(&[SeqTokens { logp: v, old: &old, reference: &reference, advantage: 0.7 }], &p).loss;
    let g = grpo_loss(&[SeqTokens { logp: &lp, old: &old, reference: &reference, advantage: 0.7 }], &p).dlogp.remove(0);
    for i in 0..lp.len() {
        let h = 1e-3f32;
        let (mut a, mut b) = (lp, lp);
        a[i] += h;
        b[i] -= h;
        let numeric = (loss(&a) - loss(&b)) / (2.0 * h as f64);
        assert!(close(g[i] as f64, numeric, 1e-4), "token {i}: {} vs {numeric}", g[i]);
    }
}

/// The Actial release's verl objective: dual-clip (`clip_ratio_c`) caps a
/// negative advantage's token loss at c·|A| and stops its gradient; the k3
/// estimate is clamped to at most `kl_clamp` (its gradient stops there too).
#[test]
fn dual_clip_and_the_k3_clamp_by_hand() {
    let release = GrpoParams { clip_ratio_c: 3.0, kl_clamp: 10.0, ..params(0.0, LossAgg::TokenMean) };
    // A = -1. Ratio e^1.5 = 4.48: unclipped loss 4.48 > 3·|A| -> 3, no gradient.
    // Ratio 2: loss max(2, 1.2) = 2 < 3 -> kept, gradient -A·ρ = 2.
    let (lp, old) = ([1.5f32, 2.0f32.ln()], [0.0f32, 0.0]);
    let out = grpo_loss(&[SeqTokens { logp: &lp, old: &old, reference: &lp, advantage: -1.0 }], &release);
    assert!(close(out.loss, (3.0 + 2.0) / 2.0, 1e-6), "{}", out.loss);
    assert_eq!(out.dlogp[0][0], 0.0);
    assert!(close(out.dlogp[0][1] as f64, 2.0 / 2.0, 1e-6));
    // A positive advantage is never dual-clipped: ratio 4.48 > 1.2 is the
    // ordinary clip, loss -1.2·A.
    let out = grpo_loss(&[SeqTokens { logp: &lp[..1], old: &old[..1], reference: &lp[..1], advantage: 1.0 }], &release);
    assert!(close(out.loss, -1.2, 1e-6), "{}", out.loss);
    // Without dual-clip the same negative-advantage token costs 4.48.
    let plain = params(0.0, LossAgg::TokenMean);
    let out = grpo_loss(&[SeqTokens { logp: &lp[..1], old: &old[..1], reference: &lp[..1], advantage: -1.0 }], &plain);
    assert!(close(out.loss, 1.5f64.exp(), 1e-5), "{}", out.loss);
    // k3 with ref - logp = 3: e^3 - 4 = 16.09 > 10 -> 10, no KL gradient;
    // with ref - logp = 2: e^2 - 3 = 4.39, gradient β(1 - e^2).
    let beta = GrpoParams { beta: 0.1, ..release };
    let (lp, reference) = ([0.0f32, 0.0], [3.0f32, 2.0]);
    let out = grpo_loss(&[SeqTokens { logp: &lp, old: &lp, reference: &reference, advantage: 0.0 }], &beta);
    let k3b = 2.0f64.exp() - 3.0;
    assert!(close(out.kl, (10.0 + k3b) / 2.0, 1e-6), "{out:?}");
    assert!(close(out.loss, 0.1 * (10.0 + k3b) / 2.0, 1e-6), "{out:?}");
    assert_eq!(out.dlogp[0][0], 0.0);
    assert!(close(out.dlogp[0][1] as f64, 0.1 * (1.0 - 2.0f64.exp()) / 2.0, 1e-6));
}
