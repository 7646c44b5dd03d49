//! The GRPO trainer on a tiny random model: rollout log-probs equal the
//! teacher-forced recomputation (so the first update is on-policy: ratio 1, no
//! clipping, zero KL), flat groups give no update, and the gradient sent through
//! token_logprobs_backward and the model matches finite differences of the loss.

mod common;

use actial::model::Qwen25Vl;
use actial::model::tiny::{tiny_config, tiny_tokenizer};
use actial::train::grpo::{GrpoParams, LossAgg};
use actial::train::grpo_trainer::{GrpoTrainer, Rollout, UpdateStats};

fn trainer(beta: f32) -> GrpoTrainer {
    let tok = tiny_tokenizer().unwrap();
    common::tiny_grpo_trainer(Qwen25Vl::random(tiny_config(&tok), 5).unwrap(), "cpu", beta)
}

fn rollouts(t: &GrpoTrainer) -> Vec<Rollout> {
    common::fixed_advantage_rollouts(t)
}

#[test]
fn rollout_logprobs_match_teacher_forcing() {
    let t = trainer(0.0);
    let rolls = rollouts(&t);
    let refs: Vec<&Rollout> = rolls.iter().collect();
    let lp = t.logprobs(&t.model, &refs).unwrap();
    let mut worst = 0.0f32;
    for (r, l) in rolls.iter().zip(&lp) {
        assert_eq!(r.old_logp.len(), l.len());
        for (a, b) in r.old_logp.iter().zip(l) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst < 1e-4, "rollout vs recomputed log-prob differ by {worst}");
}

#[test]
fn first_step_is_on_policy_and_flat_groups_do_not_move_the_policy() {
    let mut t = trainer(0.01);
    let before = t.model.text.layers[0].down.weight.value.to_vec_f32().unwrap();
    let m = t.train_step().unwrap();
    // Policy == rollout policy == reference before the single update.
    assert_eq!(m.clip_frac, 0.0);
    assert!(m.kl.abs() < 1e-6, "kl {}", m.kl);
    assert_eq!(m.groups, 2);
    // A random model never writes `<answer>…`: every reward is 0, every group is
    // flat, advantages are 0, and the KL gradient is 0 at policy == reference.
    assert_eq!(m.reward_mean, 0.0);
    assert_eq!(m.flat_groups, 2);
    assert_eq!(m.grad_norm, 0.0);
    let after = t.model.text.layers[0].down.weight.value.to_vec_f32().unwrap();
    assert_eq!(before, after);
    // The one mini-batch had no advantage: its update was skipped, no token
    // went through the update's forward.
    assert_eq!(m.skipped_updates, 1);
    assert!(m.rollout_tokens_per_s > 0.0 && m.update_tokens_per_s == 0.0);
}

#[test]
fn all_flat_mini_batches_are_skipped_even_with_weight_decay() {
    // Two mini-batches per step, weight decay on: without the skip, decay moves
    // the policy in the first update and Adam turns the second's tiny KL gradient
    // into a full-size step.
    let run = |skip: bool| {
        let mut t = trainer(0.01);
        t.cfg.optim.weight_decay = 0.1;
        t.cfg.grpo.mini_batch_prompts = 1;
        t.cfg.grpo.skip_flat_updates = skip;
        let before = t.model.text.layers[0].down.weight.value.to_vec_f32().unwrap();
        let m = t.train_step().unwrap();
        assert_eq!(m.flat_groups, 2);
        let after = t.model.text.layers[0].down.weight.value.to_vec_f32().unwrap();
        (m.skipped_updates, before == after)
    };
    assert_eq!(run(true), (2, true));
    assert_eq!(run(false), (0, false));
}

#[test]
fn gradient_matches_finite_differences() {
    let mut t = trainer(0.05);
    let mut rolls = rollouts(&t);
    // Off-policy inside the clip range and a reference that differs, so every term
    // of the loss (ratio, advantages, k3) contributes.
    for r in &mut rolls {
        r.ref_logp = r.old_logp.iter().map(|x| x + 0.3).collect();
        r.old_logp = r.old_logp.iter().map(|x| x - 0.05).collect();
    }
    let mini: Vec<usize> = (0..rolls.len()).collect();
    let tokens: usize = rolls.iter().map(|r| r.tokens.len()).sum();
    for agg in [LossAgg::TokenMean, LossAgg::Grpo] {
        let p = GrpoParams {
            eps_low: 0.2,
            eps_high: 0.2,
            beta: 0.05,
            clip_ratio_c: 3.0,
            kl_clamp: 10.0,
            agg,
            adv_eps: 1e-4,
            max_completion_len: 6,
            global_tokens: tokens,
            global_seqs: rolls.len(),
        };
        t.model.zero_grad().unwrap();
        let mut st = UpdateStats::default();
        t.accumulate(&rolls, &mini, &p, true, &mut st).unwrap();
        assert_eq!(st.clip_tokens, 0.0);
        let w = &t.model.text.layers[1].q.weight;
        let grad = w.grad.as_ref().unwrap().to_vec_f32().unwrap();
        // The largest-gradient element of one weight, by central differences.
        let (k, &g) = grad.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
        assert!(g.abs() > 1e-6, "no gradient reached q_proj");
        let h = 1e-2f32;
        let mut loss_at = |delta: f32| {
            let v = &mut t.model.text.layers[1].q.weight.value;
            v.f32_slice_mut("test", "w").unwrap()[k] += delta;
            let mut s = UpdateStats::default();
            t.accumulate(&rolls, &mini, &p, false, &mut s).unwrap();
            let v = &mut t.model.text.layers[1].q.weight.value;
            v.f32_slice_mut("test", "w").unwrap()[k] -= delta;
            s.loss
        };
        let fd = (loss_at(h) - loss_at(-h)) / (2.0 * h as f64);
        let rel = (fd - g as f64).abs() / g.abs().max(1e-6) as f64;
        assert!(rel < 2e-2, "{agg:?}: analytic {g} vs finite difference {fd} (rel {rel})");
    }
}
