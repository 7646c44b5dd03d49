//! The SFT trainer: accumulation equals one big batch, resume is bit-identical,
//! configs reject unknown keys, checkpoints are PEFT / HF shaped, bad data is
//! counted and non-finite losses stop the run.

mod common;

use std::path::{Path, PathBuf};

use actial::data::synth::{SynthConfig, pair_records, synth_pair};
use actial::model::image::ImageProcessorConfig;
use actial::model::tiny::{tiny_config, tiny_dir, tiny_tokenizer};
use actial::model::{Checkpoint, Qwen25Vl};
use actial::train::config::{CurriculumPhase, Schedule, SftConfig};
use actial::train::data::{Example, encode_records};
use actial::train::sft::SftTrainer;

/// A scratch directory removed when the test ends, passed or failed.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("actial-sft-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn examples(n_pairs: u64, dir: &Path) -> Vec<Example> {
    common::viewpoint_examples(n_pairs, dir)
}

fn cfg(global: usize, micro: usize, lora: bool) -> SftConfig {
    let mut c = SftConfig::tiny_defaults();
    c.run.global_batch = global;
    c.run.micro_batch = micro;
    c.run.steps = 4;
    c.optim.warmup_steps = 2;
    c.lora.enabled = lora;
    c.lora.vision = true;
    c.lora.targets = vec!["q_proj".into(), "v_proj".into(), "qkv".into(), "down_proj".into()];
    c
}

fn model() -> Qwen25Vl {
    Qwen25Vl::random(tiny_config(&tiny_tokenizer().unwrap()), 3).unwrap()
}

fn grads(t: &mut SftTrainer) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    t.model.visit(&mut |n, p| {
        if let Some(g) = &p.grad {
            out.push((n, g.to_vec_f32().unwrap()));
        }
    });
    out
}

#[test]
fn accumulated_micro_batches_equal_one_batch() {
    let d = tmp("accum");
    let ex = examples(2, &d); // 6 examples of different lengths
    let mut one = SftTrainer::new(cfg(6, 6, false), model(), ex.clone()).unwrap();
    let mut many = SftTrainer::new(cfg(6, 2, false), model(), ex).unwrap();
    let a = one.train_step().unwrap();
    let b = many.train_step().unwrap();
    assert!((a.loss - b.loss).abs() < 1e-6, "{} vs {}", a.loss, b.loss);
    assert_eq!(a.target_tokens, b.target_tokens);
    let (ga, gb) = (grads(&mut one), grads(&mut many));
    assert_eq!(ga.len(), gb.len());
    for ((n, x), (_, y)) in ga.iter().zip(&gb) {
        let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        let err = x.iter().zip(y).fold(0.0f32, |m, (p, q)| m.max((p - q).abs())) / scale;
        assert!(err < 1e-4, "{n}: {err}");
    }
}

fn resume_case(lora: bool) {
    let d = tmp(if lora { "resume-lora" } else { "resume-full" });
    let ex = examples(3, &d);
    let mut full = SftTrainer::new(cfg(4, 2, lora), model(), ex.clone()).unwrap();
    let losses: Vec<f64> = (0..4).map(|_| full.train_step().unwrap().loss).collect();

    let mut first = SftTrainer::new(cfg(4, 2, lora), model(), ex.clone()).unwrap();
    first.train_step().unwrap();
    first.train_step().unwrap();
    let ckpt = first.save_checkpoint(&d.join("run"), Some(&tiny_dir().join("tokenizer.json"))).unwrap();
    drop(first); // "killed"
    let mut resumed = SftTrainer::new(cfg(4, 2, lora), model(), ex).unwrap();
    resumed.load_checkpoint(&ckpt).unwrap();
    assert_eq!(resumed.step, 2);
    let rest: Vec<f64> = (0..2).map(|_| resumed.train_step().unwrap().loss).collect();
    assert_eq!(rest, losses[2..].to_vec(), "resumed losses differ (lora {lora})");
    assert!(losses[3] < losses[0], "no learning in 4 steps: {losses:?}");
}

#[test]
fn resume_is_bit_identical_full() {
    resume_case(false);
}

#[test]
fn resume_is_bit_identical_lora() {
    resume_case(true);
}

#[test]
fn checkpoints_have_the_hub_and_peft_layouts() {
    let d = tmp("layout");
    let ex = examples(2, &d);
    let tokjson = tiny_dir().join("tokenizer.json");
    let mut c = cfg(2, 2, true);
    c.run.keep_last = 2;
    let mut t = SftTrainer::new(c, model(), ex.clone()).unwrap();
    let mut last = PathBuf::new();
    for _ in 0..3 {
        t.train_step().unwrap();
        last = t.save_checkpoint(&d.join("run"), Some(&tokjson)).unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(d.join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "keep_last: {names:?}");
    let adapter = Checkpoint::open(&last.join("adapter_model.safetensors")).unwrap();
    assert!(adapter.contains("base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"));
    assert!(adapter.contains("base_model.model.model.visual.blocks.0.attn.qkv.lora_B.weight"));
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(last.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg_json["peft_type"], "LORA");
    assert_eq!(cfg_json["r"], 16);
    assert!(last.join("tokenizer.json").is_file() && last.join("trainer_state.json").is_file());
    // Full fine-tuning writes a loadable HF model directory.
    let mut f = SftTrainer::new(cfg(2, 2, false), model(), ex).unwrap();
    f.train_step().unwrap();
    let dir = f.save_checkpoint(&d.join("full"), Some(&tokjson)).unwrap();
    let reloaded = Qwen25Vl::from_dir(&dir).unwrap();
    assert_eq!(reloaded.config, f.model.config);
}

#[test]
fn config_files_and_overrides() {
    let base = SftConfig::tiny_defaults();
    let c = SftConfig::from_toml(
        "[optim]\nlr = 3e-4\nschedule = \"linear\"\n[run]\nsteps = 10\n",
        &base,
        &["lora.enabled=true".into(), "lora.rank=4".into()],
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        (c.optim.lr, c.optim.schedule, c.run.steps, c.lora.enabled, c.lora.rank),
        (3e-4, Schedule::Linear, 10, true, 4)
    );
    assert_eq!(c.run.global_batch, base.run.global_batch);
    let e = SftConfig::from_toml("[optim]\nlearning_rate = 1.0\n", &base, &[], "t.toml").unwrap_err().to_string();
    assert!(e.contains("t.toml") && e.contains("learning_rate"), "{e}");
    let e = SftConfig::from_toml("[optimizer]\nlr = 1.0\n", &base, &[], "t.toml").unwrap_err().to_string();
    assert!(e.contains("optimizer"), "{e}");
    let e = SftConfig::from_toml("", &base, &["run.global_batch=10".into(), "run.micro_batch=3".into()], "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple"), "{e}");
    // Paper defaults for real models.
    let p = SftConfig::default();
    assert_eq!((p.run.epochs, p.optim.lr, p.run.global_batch, p.optim.warmup_steps), (2, 5e-6, 128, 50));
    // Schedules: warm-up ramps to lr, cosine ends at the floor, constant stays.
    let mut s = SftConfig::tiny_defaults();
    s.optim.warmup_steps = 10;
    s.optim.lr = 1.0;
    assert!((s.lr_at(0, 100) - 0.1).abs() < 1e-6 && (s.lr_at(9, 100) - 1.0).abs() < 1e-6);
    assert!((s.lr_at(10, 100) - 1.0).abs() < 1e-6 && s.lr_at(99, 100) < 0.01);
    s.optim.schedule = Schedule::Constant;
    assert_eq!(s.lr_at(99, 100), 1.0);
}

#[test]
fn long_rows_are_counted_and_non_finite_losses_stop() {
    let d = tmp("bad");
    let c = SynthConfig { size: 56, supersample: 1, ..SynthConfig::default() };
    let p = synth_pair(1, 0, &c);
    let paths = [d.join("a.png"), d.join("b.png")];
    p.images[0].save(&paths[0]).unwrap();
    p.images[1].save(&paths[1]).unwrap();
    let mut recs = pair_records(0, &p, paths).0;
    recs[1].images[0] = actial::data::qa::ImageRef::Path(d.join("missing.png"));
    let tok = tiny_tokenizer().unwrap();
    let proc = ImageProcessorConfig::for_vision(&tiny_config(&tok).vision);
    let enc = encode_records(&recs, &tok, &proc, None, 40).unwrap();
    assert_eq!(enc.examples.len(), 0);
    // Each reason names its first case: the record, and the file to fix.
    let by_reason = |r: &str| enc.skipped.iter().find(|(k, _)| k.starts_with(r)).map(|(k, &n)| (k.clone(), n)).unwrap();
    let (long, n) = by_reason("longer than run.max_length (first: record ");
    assert!(n == 2 && long.contains("tokens"), "{long}");
    let (missing, n) = by_reason("missing or undecodable image (first: ");
    assert!(n == 1 && missing.contains("missing.png"), "{missing}");
    // NaN pixels make the loss NaN: the step fails with a message, nothing is updated.
    let mut ex = encode_records(&recs[..1], &tok, &proc, None, 1024).unwrap().examples;
    let px = ex[0].pixels.as_ref().unwrap();
    ex[0].pixels = Some(actial::Tensor::from_f32(vec![f32::NAN; px.numel()], px.dims(), actial::Device::Cpu).unwrap());
    let mut t = SftTrainer::new(cfg(1, 1, false), model(), ex).unwrap();
    let e = t.train_step().unwrap_err().to_string();
    assert!(e.contains("non-finite") || e.contains("NaN"), "{e}");
    assert_eq!(t.step, 0);
}

#[test]
fn recomputation_gives_identical_gradients() {
    let d = tmp("recompute");
    let ex = examples(2, &d);
    let mut plain = SftTrainer::new(cfg(6, 3, false), model(), ex.clone()).unwrap();
    let mut c = cfg(6, 3, false);
    c.run.recompute_text_layers = vec![0, 2];
    c.run.recompute_vision_blocks = vec![1];
    let mut re = SftTrainer::new(c, model(), ex.clone()).unwrap();
    assert_eq!(plain.train_step().unwrap().loss, re.train_step().unwrap().loss);
    assert_eq!(grads(&mut plain), grads(&mut re));
    let mut bad = cfg(6, 3, false);
    bad.run.recompute_text_layers = vec![9];
    assert!(SftTrainer::new(bad, model(), ex).err().unwrap().to_string().contains("layer 9"));
}

#[test]
fn resuming_a_different_run_is_refused() {
    let d = tmp("resume-mismatch");
    let ex = examples(2, &d);
    let mut t = SftTrainer::new(cfg(2, 2, false), model(), ex.clone()).unwrap();
    t.train_step().unwrap();
    let ckpt = t.save_checkpoint(&d.join("run"), None).unwrap();
    let mut other = cfg(2, 2, false);
    other.run.seed += 1;
    other.run.global_batch *= 2;
    let mut u = SftTrainer::new(other, model(), ex.clone()).unwrap();
    let err = u.load_checkpoint(&ckpt).unwrap_err().to_string();
    assert!(err.contains("run.seed") && err.contains("run.global_batch"), "{err}");
    // The same run resumes.
    let mut same = SftTrainer::new(cfg(2, 2, false), model(), ex).unwrap();
    same.load_checkpoint(&ckpt).unwrap();
    assert_eq!(same.step, 1);
}

#[test]
fn training_leaves_the_examples_untouched() {
    // Examples share preprocessed pixel tensors (one per image set); no step may
    // write into them.
    let d = tmp("untouched");
    let ex = examples(2, &d);
    let before: Vec<Vec<f32>> = ex.iter().map(|e| e.pixels.as_ref().unwrap().to_vec_f32().unwrap()).collect();
    let mut t = SftTrainer::new(cfg(2, 1, false), model(), ex).unwrap();
    for _ in 0..2 {
        t.train_step().unwrap();
    }
    for (e, b) in t.examples.iter().zip(&before) {
        assert_eq!(&e.pixels.as_ref().unwrap().to_vec_f32().unwrap(), b, "{} changed", e.id);
    }
}

#[test]
fn sample_and_sqrt_means_weigh_samples_as_documented() {
    use actial::train::config::LossMean;
    let d = tmp("sample-mean");
    let c = SynthConfig { size: 56, supersample: 1, ..SynthConfig::default() };
    let p = synth_pair(8, 0, &c);
    let paths = [d.join("a.png"), d.join("b.png")];
    p.images[0].save(&paths[0]).unwrap();
    p.images[1].save(&paths[1]).unwrap();
    let mut recs = pair_records(0, &p, paths).0;
    // Supervised lengths 1-2 tokens vs a long answer: token mean and sample mean differ.
    recs[1].response =
        "<think>The first photo shows the left face; the second shows more of it.</think><answer>A</answer>".into();
    let tok = tiny_tokenizer().unwrap();
    let proc = ImageProcessorConfig::for_vision(&tiny_config(&tok).vision);
    let ex = encode_records(&recs, &tok, &proc, None, 1024).unwrap().examples;
    assert!(ex[1].target_tokens > 5 * ex[0].target_tokens);
    let with = |mean: LossMean, global: usize, micro: usize| {
        let mut c = cfg(global, micro, false);
        c.train.loss_mean = mean;
        c.optim.max_grad_norm = 0.0; // compare raw gradients
        c
    };
    // Each sample's own token-mean gradient, alone.
    let own: Vec<Vec<Vec<f32>>> = ex
        .iter()
        .map(|e| {
            let mut one = SftTrainer::new(with(LossMean::Token, 1, 1), model(), vec![e.clone()]).unwrap();
            one.train_step().unwrap();
            grads(&mut one).into_iter().map(|(_, x)| x).collect()
        })
        .collect();
    // Three samples in micro-batches of two: the sample mean averages those
    // gradients; the sqrt mean weighs them sqrt(tokens) / sum of sqrt(tokens).
    let roots: Vec<f32> = ex.iter().map(|e| (e.target_tokens as f32).sqrt()).collect();
    let root_sum: f32 = roots.iter().sum();
    let mut g = Vec::new();
    for (mean, weight) in
        [(LossMean::Sample, vec![1.0 / 3.0; 3]), (LossMean::Sqrt, roots.iter().map(|r| r / root_sum).collect())]
    {
        let mut all = SftTrainer::new(with(mean, 3, 2), model(), ex.clone()).unwrap();
        all.train_step().unwrap();
        g = grads(&mut all);
        for (k, (n, x)) in g.iter().enumerate() {
            let y: Vec<f32> = (0..x.len()).map(|j| (0..3).map(|i| weight[i] * own[i][k][j]).sum()).collect();
            let scale = y.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
            let err = x.iter().zip(&y).fold(0.0f32, |m, (p, q)| m.max((p - q).abs())) / scale;
            assert!(err < 1e-4, "{mean:?} {n}: {err}");
        }
    }
    // And the token mean is a different gradient here (the test can fail).
    let mut tm = SftTrainer::new(with(LossMean::Token, 3, 2), model(), ex).unwrap();
    tm.train_step().unwrap();
    let differs = grads(&mut tm)
        .iter()
        .zip(&g)
        .any(|((_, a), (_, b))| a.iter().zip(b).any(|(p, q)| (p - q).abs() > 1e-3 * q.abs().max(1e-6)));
    assert!(differs);
}

#[test]
fn the_curriculum_draws_each_phase_s_kinds_then_every_example() {
    use actial::train::config::LossMean;
    let d = tmp("curriculum");
    let ex = examples(6, &d);
    let phase = |kinds: &[&str], steps| CurriculumPhase {
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        steps,
        loss_mean: None,
        answers: None,
        batch_by_pair: None,
    };
    let mut c = cfg(4, 4, false);
    c.data.curriculum = vec![phase(&["camera_rotation", "object_translation"], 3), phase(&["camera_translation"], 2)];
    // A phase may weigh its samples its own way; the run's weighting elsewhere.
    c.train.loss_mean = LossMean::Token;
    c.data.curriculum[1].loss_mean = Some(LossMean::Sqrt);
    let t = SftTrainer::new(c.clone(), model(), ex.clone()).unwrap();
    let means: Vec<LossMean> = (0..7).map(|s| t.loss_mean_at(s)).collect();
    use LossMean::{Sqrt, Token};
    assert_eq!(means, [Token, Token, Token, Sqrt, Sqrt, Token, Token]);
    let g = c.run.global_batch;
    let kinds_of = |r: std::ops::Range<usize>| -> Vec<(usize, String)> {
        r.map(|p| t.example_at(p)).map(|i| (i, t.examples[i].kind.clone())).collect()
    };
    // Phase 0, 3 global batches = one pass over its 12 examples: each once.
    let p0 = kinds_of(0..3 * g);
    assert!(p0.iter().all(|(_, k)| k == "camera_rotation" || k == "object_translation"), "{p0:?}");
    let mut seen: Vec<usize> = p0.iter().map(|x| x.0).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 12);
    // Phase 1, 2 batches: only its kind (6 examples, so a second epoch starts).
    let p1 = kinds_of(3 * g..5 * g);
    assert!(p1.iter().all(|(_, k)| k == "camera_translation"), "{p1:?}");
    // Then the whole set, an epoch visiting every example once.
    let mut after: Vec<usize> = kinds_of(5 * g..5 * g + ex.len()).into_iter().map(|x| x.0).collect();
    after.sort();
    assert_eq!(after, (0..ex.len()).collect::<Vec<_>>());
    // Without a curriculum the stream starts with the whole set at once.
    let plain = SftTrainer::new(cfg(4, 4, false), model(), ex.clone()).unwrap();
    assert!((0..3 * g).any(|p| plain.examples[plain.example_at(p)].kind == "camera_translation"));
    // A phase naming no kind in the data is an error that names the key; TOML
    // overrides reach the phases.
    let c = SftConfig::from_toml("", &c, &[r#"data.curriculum=[{kinds=["sat_nearer"],steps=2}]"#.to_string()], "test")
        .unwrap();
    assert_eq!(c.data.curriculum, vec![phase(&["sat_nearer"], 2)]);
    let err = SftTrainer::new(c, model(), ex).err().unwrap().to_string();
    assert!(err.contains("data.curriculum phase 0"), "{err}");
}

#[test]
fn a_curriculum_phase_may_draw_only_reasoning_or_only_letter_answers() {
    use actial::data::mix::{CotStyle, MixConfig, mix};
    use actial::train::config::AnswerStyle;
    let d = tmp("curriculum_answers");
    let letters = common::viewpoint_records(4, &d);
    let mc = MixConfig { cot_fraction: 0.4, cot_style: CotStyle::Short, ..MixConfig::default() };
    let (mixed, rep) = mix(&letters, &Default::default(), &mc);
    assert!(rep.cot_slots >= 4, "{rep:?}");
    let ex = common::encode_tiny(&mixed);
    // The flag follows the response: the mix's CoT items, and only those.
    for (e, r) in ex.iter().zip(&mixed) {
        assert_eq!(e.reasoning, r.response.starts_with("<think>"), "{}", r.id);
        assert_eq!(e.reasoning, r.id.ends_with("_cot"), "{}", r.id);
    }
    let all: Vec<String> = ["camera_translation", "object_translation", "camera_rotation"].map(String::from).into();
    let phase =
        |answers| CurriculumPhase { kinds: all.clone(), steps: 2, loss_mean: None, answers, batch_by_pair: None };
    let mut c = cfg(4, 4, false);
    c.data.curriculum = vec![phase(Some(AnswerStyle::Reasoning)), phase(Some(AnswerStyle::Letter))];
    let t = SftTrainer::new(c.clone(), model(), ex.clone()).unwrap();
    let g = c.run.global_batch;
    let styles =
        |r: std::ops::Range<usize>| -> Vec<bool> { r.map(|p| t.examples[t.example_at(p)].reasoning).collect() };
    assert!(styles(0..2 * g).iter().all(|&x| x), "phase 0 draws pseudo-CoTs only");
    assert!(styles(2 * g..4 * g).iter().all(|&x| !x), "phase 1 draws letters only");
    // Then the whole set: both.
    let rest = styles(4 * g..4 * g + ex.len());
    assert!(rest.contains(&true) && rest.contains(&false));
    // From TOML; and a phase whose filter leaves nothing is an error saying so.
    let c = SftConfig::from_toml(
        "",
        &c,
        &[r#"data.curriculum=[{kinds=["camera_rotation"],steps=1,answers="reasoning"}]"#.to_string()],
        "test",
    )
    .unwrap();
    assert_eq!(c.data.curriculum[0].answers, Some(AnswerStyle::Reasoning));
    let letters_only = common::viewpoint_examples(2, &d);
    let err = SftTrainer::new(c, model(), letters_only).err().unwrap().to_string();
    assert!(err.contains("data.curriculum phase 0") && err.contains("Reasoning"), "{err}");
}

#[test]
fn batch_by_pair_draws_a_pair_s_questions_together_and_every_example_once_per_epoch() {
    let d = tmp("batch_by_pair");
    let ex = examples(5, &d); // 15 examples: 3 questions of 5 pairs
    assert!(ex.iter().all(|e| e.pair.starts_with("pair ")), "{:?}", ex[0].pair);
    let mut c = cfg(4, 4, false);
    c.data.batch_by_pair = true;
    let t = SftTrainer::new(c.clone(), model(), ex.clone()).unwrap();
    for epoch in 0..2 {
        let idx: Vec<usize> = (epoch * 15..(epoch + 1) * 15).map(|p| t.example_at(p)).collect();
        let mut seen = idx.clone();
        seen.sort();
        assert_eq!(seen, (0..15).collect::<Vec<_>>(), "epoch {epoch} visits each example once");
        // Positions 3k..3k+3 are one pair's three questions.
        for run in idx.chunks(3) {
            assert!(run.iter().all(|&i| ex[i].pair == ex[run[0]].pair), "epoch {epoch}: {run:?} mixes pairs");
        }
    }
    // A curriculum phase may turn it off for itself: its positions split pairs,
    // the whole set after it keeps them together.
    let all: Vec<String> = ["camera_translation", "object_translation", "camera_rotation"].map(String::from).into();
    let mut cp = c.clone();
    cp.data.curriculum =
        vec![CurriculumPhase { kinds: all, steps: 15, loss_mean: None, answers: None, batch_by_pair: Some(false) }];
    let t = SftTrainer::new(cp, model(), ex.clone()).unwrap();
    let phase: Vec<usize> = (0..15).map(|p| t.example_at(p)).collect();
    assert!(phase.chunks(3).any(|run| run.iter().any(|&i| ex[i].pair != ex[run[0]].pair)));
    let g = c.run.global_batch;
    let after: Vec<usize> = (15 * g..15 * g + 15).map(|p| t.example_at(p)).collect();
    assert!(after.chunks(3).all(|run| run.iter().all(|&i| ex[i].pair == ex[run[0]].pair)), "{after:?}");
    // Without it, pairs are split up somewhere in the first epoch.
    c.data.batch_by_pair = false;
    let t = SftTrainer::new(c, model(), ex.clone()).unwrap();
    let idx: Vec<usize> = (0..15).map(|p| t.example_at(p)).collect();
    assert!(idx.chunks(3).any(|run| run.iter().any(|&i| ex[i].pair != ex[run[0]].pair)));
}

/// Numeric keys outside the range where training means something are refused
/// before anything is loaded, each named with its range, all in one message:
/// the reproductions of a campaign that saved 100% NaN checkpoints with exit 0
/// (`optim.lr=3e38`, `optim.beta2=1.0`) or aborted on allocation
/// (`run.global_batch=1e9`, `lora.rank=100000`).
#[test]
fn out_of_range_keys_are_refused_before_anything_runs() {
    let base = SftConfig::embedded_defaults();
    let refused = |sets: &[&str], wanted: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let e = SftConfig::from_toml("", &base, &sets, "t.toml").unwrap_err().to_string();
        for w in wanted {
            assert!(e.contains(w), "{sets:?}: {e}");
        }
    };
    refused(&["optim.lr=3e38"], &["optim.lr must be in (0, 1], got 3"]);
    refused(
        &["optim.beta2=1.0", "optim.beta1=1.0"],
        &["optim.beta1 must be in [0, 1)", "optim.beta2 must be in [0, 1)"],
    );
    refused(&["optim.beta1=2"], &["optim.beta1"]);
    refused(&["optim.eps=-1"], &["optim.eps must be in (0, 1]"]);
    refused(&["optim.max_grad_norm=-1"], &["optim.max_grad_norm"]);
    refused(&["grpo.eps_low=5"], &["grpo.eps_low must be in [0, 1)"]);
    refused(&["grpo.top_p=0"], &["grpo.top_p must be in (0, 1]"]);
    refused(&["run.global_batch=1000000000", "run.micro_batch=8"], &["run.global_batch must be between 1 and"]);
    refused(&["lora.enabled=true", "lora.rank=100000"], &["lora.rank must be between 1 and 16384"]);
    // The presets themselves pass.
    for c in [SftConfig::default(), SftConfig::tiny_defaults(), SftConfig::embedded_defaults()] {
        c.validate().unwrap();
    }
}

/// A non-finite loss stops the run naming the step and the last good
/// checkpoint, and writes nothing more (SFT used to say only
/// "forward_backward: loss is NaN").
#[test]
fn a_non_finite_loss_stops_naming_the_step_and_the_last_good_checkpoint() {
    let d = tmp("nan-stop");
    let mut c = cfg(2, 2, false);
    (c.run.steps, c.run.save_every) = (2, 1);
    let mut t = SftTrainer::new(c, model(), examples(2, &d)).unwrap();
    let out = d.join("run");
    t.run(&out, None, false).unwrap();
    // Poison one weight the forward reads, then ask for one more step.
    t.model.visit(&mut |n, p| {
        if n == "model.norm.weight" {
            let mut v = p.value.to_vec_f32().unwrap();
            v[0] = f32::NAN;
            p.value = actial::Tensor::from_f32(v, p.value.dims(), p.value.device()).unwrap();
        }
    });
    t.total_steps = 3;
    let e = t.run(&out, None, false).unwrap_err().to_string();
    assert!(e.contains("step 3") && e.contains("NaN") && e.contains("last good checkpoint"), "{e}");
    assert!(e.contains(&out.join("checkpoint-000002").display().to_string()), "{e}");
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("checkpoint"))
        .collect();
    assert!(!left.iter().any(|n| n.contains("000003")), "a checkpoint of the failed step: {left:?}");
}
