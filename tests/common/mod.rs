//! Helpers shared by the integration tests: seeded random tensors and a central
//! finite-difference gradient checker.
#![allow(dead_code)]

use actial::rng::Philox;
use actial::{Device, Tensor};

pub fn randn(seed: u64, dims: &[usize], std: f32) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_f32(Philox::new(seed, 0).normal_vec(n, std), dims, Device::Cpu).unwrap()
}

pub fn ids(v: Vec<i32>) -> Tensor {
    let n = v.len();
    Tensor::from_i32(v, [n], Device::Cpu).unwrap()
}

pub fn vec_of(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

/// `Σ y·r` in f64: the scalar loss whose gradient w.r.t. y is `r`.
pub fn dot(y: &[f32], r: &[f32]) -> f64 {
    assert_eq!(y.len(), r.len());
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Largest relative disagreement between two gradients, with an absolute floor.
pub fn max_rel_err(a: &[f32], b: &[f32], atol: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "gradient lengths differ");
    a.iter().zip(b).map(|(&x, &y)| (x - y).abs() / (atol + x.abs().max(y.abs()))).fold(0.0, f32::max)
}

/// Compares `analytic` (the gradient of `loss` at `x`) with central differences
/// `(loss(x + h·e_i) − loss(x − h·e_i)) / 2h` on up to `max_coords` coordinates
/// (all of them when the tensor is small, else a seeded random subset).
/// Returns the list of failures as text; empty means pass.
pub fn fd_mismatches(
    x: &[f32],
    analytic: &[f32],
    loss: &dyn Fn(&[f32]) -> f64,
    h: f32,
    max_coords: usize,
) -> Vec<String> {
    assert_eq!(x.len(), analytic.len(), "gradient has the wrong length");
    let coords: Vec<usize> = if x.len() <= max_coords {
        (0..x.len()).collect()
    } else {
        let mut r = Philox::new(99, x.len() as u64);
        (0..max_coords).map(|_| (r.next_u32() as usize) % x.len()).collect()
    };
    let mut bad = Vec::new();
    let mut xp = x.to_vec();
    for i in coords {
        let orig = xp[i];
        xp[i] = orig + h;
        let lp = loss(&xp);
        xp[i] = orig - h;
        let lm = loss(&xp);
        xp[i] = orig;
        let numeric = ((lp - lm) / (2.0 * h as f64)) as f32;
        let a = analytic[i];
        let tol = 3e-3 + 1e-2 * a.abs().max(numeric.abs());
        if (a - numeric).abs() > tol || !a.is_finite() {
            bad.push(format!("coord {i}: analytic {a:.6}, numeric {numeric:.6}"));
        }
    }
    bad
}

/// Panics with a readable report when [`fd_mismatches`] finds any.
pub fn assert_grad(name: &str, x: &[f32], analytic: &[f32], loss: &dyn Fn(&[f32]) -> f64) {
    let bad = fd_mismatches(x, analytic, loss, 1e-2, 64);
    assert!(bad.is_empty(), "{name}: gradient mismatch in {} coords:\n{}", bad.len(), bad.join("\n"));
}

/// A tensor with `x`'s shape holding `data`.
pub fn like(x: &Tensor, data: &[f32]) -> Tensor {
    Tensor::from_f32(data.to_vec(), x.dims(), Device::Cpu).unwrap()
}

/// The three viewpoint questions of `n_pairs` rendered 56px pairs (images
/// written to `dir`).
pub fn viewpoint_records(n_pairs: u64, dir: &std::path::Path) -> Vec<actial::data::qa::QaRecord> {
    use actial::data::synth::{SynthConfig, pair_records, synth_pair};
    let c = SynthConfig { size: 56, supersample: 1, ..SynthConfig::default() };
    let mut recs = Vec::new();
    for i in 0..n_pairs {
        let p = synth_pair(8, i, &c);
        let paths = [dir.join(format!("{i}_a.png")), dir.join(format!("{i}_b.png"))];
        p.images[0].save(&paths[0]).unwrap();
        p.images[1].save(&paths[1]).unwrap();
        recs.extend(pair_records(i, &p, paths).0);
    }
    recs
}

/// Those records encoded for the tiny preset.
pub fn encode_tiny(recs: &[actial::data::qa::QaRecord]) -> Vec<actial::train::data::Example> {
    use actial::model::image::ImageProcessorConfig;
    use actial::model::tiny::{tiny_config, tiny_tokenizer};
    let tok = tiny_tokenizer().unwrap();
    let proc = ImageProcessorConfig::for_vision(&tiny_config(&tok).vision);
    actial::train::data::encode_records(recs, &tok, &proc, None, 1024).unwrap().examples
}

/// Viewpoint examples from 56x56 renders of the tiny preset (4 merged tokens per
/// image), written to `dir`.
pub fn viewpoint_examples(n_pairs: u64, dir: &std::path::Path) -> Vec<actial::train::data::Example> {
    encode_tiny(&viewpoint_records(n_pairs, dir))
}

/// A GRPO trainer for `model` on `device` over three text-only prompts ("Which
/// option says red? ...", the answer always B): groups of 4, 6 new tokens, two
/// prompts per step, no weight decay.
pub fn tiny_grpo_trainer(
    model: actial::model::Qwen25Vl,
    device: &str,
    beta: f32,
) -> actial::train::grpo_trainer::GrpoTrainer {
    let tok = actial::model::tiny::tiny_tokenizer().unwrap();
    let proc = actial::model::image::ImageProcessorConfig::for_vision(&model.config.vision);
    let records: Vec<actial::data::qa::QaRecord> = ["red", "blue", "left"]
        .iter()
        .map(|w| actial::data::qa::QaRecord {
            id: w.to_string(),
            kind: "text".into(),
            system: None,
            prompt: format!("Which option says {w}? A: cube B: {w} C: two"),
            images: vec![],
            response: "B".into(),
            answer: "B".into(),
            meta: serde_json::Value::Null,
        })
        .collect();
    let system = Some(actial::data::qa::ACTIAL_SYSTEM);
    let (items, skipped) = actial::train::eval::encode_prompts(&records, &tok, &proc, system, 512).unwrap();
    assert!(skipped.is_empty());
    let mut cfg = actial::train::config::SftConfig::embedded_defaults();
    cfg.run.device = device.into();
    let g = &mut cfg.grpo;
    (g.steps, g.prompts_per_step, g.group, g.mini_batch_prompts, g.micro_batch, g.max_new_tokens) =
        (2, 2, 4, 2, Some(3), 6);
    g.beta = beta;
    cfg.optim.weight_decay = 0.0;
    actial::train::grpo_trainer::GrpoTrainer::new(cfg, model, items, tok).unwrap()
}

/// The trainer's own rollouts of its first two prompts (one group each), with
/// fixed advantages 1, -0.5, 0.25, -0.75 per group and no reference log-probs:
/// inputs for loss and gradient checks.
pub fn fixed_advantage_rollouts(
    t: &actial::train::grpo_trainer::GrpoTrainer,
) -> Vec<actial::train::grpo_trainer::Rollout> {
    let prompts: Vec<_> = t.prompts[..2].iter().map(|p| p.prompt.clone()).collect();
    let samples = t.model.rollout(&prompts, &t.rollout_config()).unwrap();
    samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| actial::train::grpo_trainer::Rollout {
            prompt: s.prompt,
            tokens: s.tokens,
            old_logp: s.logprobs,
            ref_logp: vec![],
            advantage: [1.0, -0.5, 0.25, -0.75][i % 4],
        })
        .collect()
}
