//! Training with the Actial recipe.
//!
//!   actial-train --recipe sft [--config run.toml] [--set section.key=value]...
//!                [--data FILE]... [--out DIR] [--resume DIR] [--merge-lora]
//!
//! `--recipe sft` runs stage 1 (SFT with hybrid cold-start) from a TOML config
//! (see `actial::train::config`). With the `tiny` model and no data files it
//! renders a synthetic viewpoint set and mixes it first. `--recipe grpo` and
//! `--recipe full` (SFT + GRPO + evaluation, the embedded default) arrive with
//! the GRPO issue.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use actial::data::formats::{load_any, write_sharegpt};
use actial::data::mix::{MixConfig, mix};
use actial::data::pretrain::{PretrainMix, pretrain_records};
use actial::data::qa::{ACTIAL_SYSTEM, LETTERS, OptionOrder, QaRecord, with_instruction};
use actial::data::synth::{SynthConfig, render_pairs};
use actial::model::Qwen25Vl;
use actial::model::image::ImageProcessorConfig;
use actial::model::tiny::{tiny_base_dir, tiny_config, tiny_dir, tiny_tokenizer};
use actial::model::tokenizer::QwenTokenizer;
use actial::plot::{Panel, figure, line_chart};
use actial::train::config::SftConfig;
use actial::train::data::encode_records;
use actial::train::eval::{EvalItem, EvalReport, encode_prompts, evaluate};
use actial::train::grpo_trainer::{GrpoMetrics, GrpoTrainer};
use actial::train::run_dir::{Claim, RUN_FILE, RunRecord, claim};
use actial::train::sft::SftTrainer;
use actial::{DType, Device, Error, Result};
use clap::{Parser, ValueEnum};
use serde_json::json;

// mimalloc reuses freed buffers instead of returning them to the OS: the CPU path
// allocates every activation, and glibc's fresh mmaps cost page faults per step
// (~30% of a tiny-model training step; docs/ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Recipe {
    Full,
    Sft,
    Grpo,
    /// The tiny base model: multiple-choice and single-photo skills from random init.
    Pretrain,
}

#[derive(Parser)]
#[command(version, about = "Train a Qwen2.5-VL model with the Actial recipe")]
struct Args {
    #[arg(long, value_enum, default_value_t = Recipe::Full)]
    recipe: Recipe,
    /// TOML run configuration.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides, `section.key=value` (repeatable), applied after the file.
    #[arg(long = "set")]
    overrides: Vec<String>,
    /// Start from a committed preset (assets/presets/NAME.toml: paper,
    /// qwen2.5-vl-7b, qwen2.5-vl-3b, tiny, embedded, pretrain) instead of the
    /// recipe's default one (`full`: embedded; `pretrain`: pretrain; `sft` /
    /// `grpo`: tiny for the tiny model, else paper); --config and --set apply on top.
    #[arg(long)]
    preset: Option<String>,
    /// Training data files (added to data.train).
    #[arg(long = "data")]
    data: Vec<String>,
    /// Output directory (run.out_dir).
    #[arg(long)]
    out: Option<String>,
    /// `cpu`, `cuda` or `cuda:N` (run.device).
    #[arg(long)]
    device: Option<String>,
    /// Resume from a checkpoint directory, or from the latest checkpoint in a run directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start over in a run directory that holds checkpoints (of this run or
    /// another): its checkpoints, metrics and run.json are deleted first.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// After training, also write the model with LoRA merged into out/merged.
    #[arg(long)]
    merge_lora: bool,
    /// Pretrain: rendered photos (each gives its questions and a description).
    #[arg(long, default_value_t = 8000)]
    photos: u64,
    /// Pretrain: two-photo items (questions about one photo of two, a description
    /// of both; never how the camera moved).
    #[arg(long, default_value_t = 0)]
    pairs: u64,
    /// Pretrain: text-only items (multiple choice and copy exercises).
    #[arg(long, default_value_t = 150_000)]
    text_items: u64,
    /// Pretrain: text-only perspective items (a camera's move told in words, asked
    /// from the camera's or the object's perspective).
    #[arg(long, default_value_t = 0)]
    perspective_items: u64,
    /// Pretrain: photos asked from the camera's and the object's perspective which
    /// colour is furthest to one side (the two answers mirror each other).
    #[arg(long, default_value_t = 0)]
    perspective_photos: u64,
    /// Pretrain: every N-th multiple-choice item (0: none) asks for reasoning and
    /// answers `<think>…</think><answer>X</answer>` (the format a real base follows).
    #[arg(long, default_value_t = 0)]
    reasoning_every: u64,
    /// Pretrain: evaluate a held-out sample every N steps (0: only at the end).
    #[arg(long, default_value_t = 2000)]
    eval_every: usize,
    /// Pretrain: start from this tiny model directory (a previous pretraining
    /// stage's model/ or checkpoint) instead of random init, e.g. a second stage
    /// with another photo / text mix.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Print the run's plan (peak device memory per phase, step time on A100 /
    /// H100 / H200, what to change when it does not fit) and exit: needs only
    /// the model's config.json, no weights, no data.
    #[arg(long)]
    plan: bool,
    /// On CUDA, start even when the plan says the run does not fit the
    /// device's free memory (the plan assumes the config's length limits).
    #[arg(long)]
    skip_fit_check: bool,
}

fn load_config(args: &Args) -> Result<SftConfig> {
    load_config_on(args, None)
}

/// The config from the file and overrides, on top of `--preset`, else
/// `defaults`, else the tiny / paper preset, whichever the model path asks for.
fn load_config_on(args: &Args, defaults: Option<SftConfig>) -> Result<SftConfig> {
    let mut overrides = args.overrides.clone();
    if let Some(o) = &args.out {
        overrides.push(format!("run.out_dir={o:?}"));
    } else if let Some(r) = &args.resume {
        // A resume continues in its own run directory.
        overrides.push(format!("run.out_dir={:?}", run_dir_of(r).display().to_string()));
    }
    if let Some(d) = &args.device {
        overrides.push(format!("run.device={d:?}"));
    }
    let text = match &args.config {
        Some(p) => std::fs::read_to_string(p).map_err(|e| Error::Io { path: p.display().to_string(), source: e })?,
        None => String::new(),
    };
    let file = args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(defaults)".into());
    // The tiny preset has its own defaults: parse once to learn the model.
    let probe = SftConfig::from_toml(&text, &SftConfig::tiny_defaults(), &overrides, &file)?;
    let base = match (&args.preset, defaults) {
        (Some(name), _) => SftConfig::preset(name)?,
        (None, Some(d)) => d,
        (None, None) if is_tiny(&probe) => SftConfig::tiny_defaults(),
        (None, None) => SftConfig::default(),
    };
    let mut cfg = SftConfig::from_toml(&text, &base, &overrides, &file)?;
    cfg.data.train.extend(args.data.iter().cloned());
    Ok(cfg)
}

/// Renders `pairs` synthetic viewpoint pairs into `dir` and returns the records.
fn synthesize(dir: &Path, pairs: u64, seed: u64, c: &SynthConfig) -> Result<Vec<QaRecord>> {
    let rows = render_pairs(&dir.join("images"), pairs, seed, c, &|| {})?;
    let recs: Vec<QaRecord> = rows.into_iter().flat_map(|(viewpoint, _, _)| viewpoint).collect();
    write_sharegpt(&dir.join("viewpoint.jsonl"), &recs)?;
    Ok(recs)
}

/// The run directory of a `--resume` path: the path itself, or the run that
/// holds a checkpoint (`out/checkpoint-N`, or `out/sft/checkpoint-N` of the
/// full recipe).
fn run_dir_of(resume: &Path) -> PathBuf {
    if !resume.join("trainer_state.json").is_file() {
        return resume.to_path_buf();
    }
    let parent = resume.parent().unwrap_or(Path::new(".")).to_path_buf();
    match parent.parent() {
        Some(top) if !parent.join(RUN_FILE).is_file() && top.join(RUN_FILE).is_file() => top.to_path_buf(),
        _ => parent,
    }
}

/// Takes the run directory for this run (`run.json`, `actial::train::run_dir`):
/// a fresh run refuses a directory with checkpoints, a resume refuses changed
/// settings or data, `--overwrite` starts over.
fn claim_run_dir(args: &Args, recipe: &str, cfg: &SftConfig) -> Result<()> {
    let how = match (args.overwrite, args.resume.is_some()) {
        (true, _) => Claim::Overwrite,
        (false, true) => Claim::Resume,
        (false, false) => Claim::Fresh,
    };
    let record = RunRecord::new(recipe, cfg)?;
    claim(Path::new(&cfg.run.out_dir), &record, how)?;
    Ok(())
}

fn latest_checkpoint(dir: &Path) -> Result<PathBuf> {
    if dir.join("trainer_state.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    let mut c: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with("checkpoint-"))
                && p.join("trainer_state.json").is_file()
        })
        .collect();
    c.sort();
    c.pop().ok_or_else(|| actial::arg_err!("resume", "no checkpoint-* with trainer_state.json in {}", dir.display()))
}

/// `tiny` (the pretrained tiny base when assets/tiny-base exists, else a random
/// init) or `tiny-random`: the built-in preset.
fn is_tiny(cfg: &SftConfig) -> bool {
    cfg.model.path == "tiny" || cfg.model.path == "tiny-random"
}

/// The renderer's settings for this run: scene style and orbit range from
/// `[data]`, options laid out as `order`.
fn synth_config(cfg: &SftConfig, order: OptionOrder) -> SynthConfig {
    SynthConfig {
        option_order: order,
        scene: cfg.data.synth_scene,
        max_yaw_deg: cfg.data.synth_max_yaw_deg,
        ..SynthConfig::default()
    }
}

/// The option layout of rendered questions: `data.option_order`, else the one the
/// start model was pretrained with (`actial_pretrain.json` in its directory: the
/// tiny base, or a model `--recipe pretrain` wrote), else the paper's.
fn option_order(cfg: &SftConfig) -> OptionOrder {
    if let Some(o) = cfg.data.option_order {
        return o;
    }
    let dir = if cfg.model.path == "tiny" { tiny_base_dir() } else { PathBuf::from(&cfg.model.path) };
    {
        let info = dir.join("actial_pretrain.json");
        if let Ok(text) = std::fs::read_to_string(&info)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Ok(o) = serde_json::from_value::<OptionOrder>(v["option_order"].clone())
        {
            return o;
        }
    }
    OptionOrder::Shuffled
}

/// The model `model.path` names (`tiny`, `tiny-random` or a directory), its
/// tokenizer and the tokenizer file.
fn load_model(cfg: &SftConfig) -> Result<(Qwen25Vl, QwenTokenizer, PathBuf)> {
    let m = actial::model::load::load_model(&cfg.model.path, cfg.model.init_seed)?;
    Ok((m.model, m.tokenizer, m.tokenizer_file))
}

/// Saves a trained model (f32) with its tokenizer and `actial_model.json`, which
/// tells `actial-eval --system auto` to prompt it with Actial's system prompt.
fn save_trained(model: &mut Qwen25Vl, dir: &Path, tok_json: &Path, recipe: &str) -> Result<()> {
    model.save(dir, DType::F32)?;
    std::fs::copy(tok_json, dir.join("tokenizer.json"))
        .map_err(|e| Error::Io { path: tok_json.display().to_string(), source: e })?;
    let info = serde_json::json!({ "recipe": recipe, "system": actial::data::qa::ACTIAL_SYSTEM });
    actial::model::weights::write_atomic(
        &dir.join("actial_model.json"),
        serde_json::to_string_pretty(&info).expect("JSON").as_bytes(),
    )
}

/// `--resume`: the latest checkpoint of the given run (or the checkpoint itself).
fn resume_sft(trainer: &mut SftTrainer, args: &Args) -> Result<()> {
    if let Some(r) = &args.resume {
        let ckpt = latest_checkpoint(r)?;
        trainer.load_checkpoint(&ckpt)?;
        eprintln!("resumed from {} at step {}", ckpt.display(), trainer.step);
    }
    Ok(())
}

/// The device training runs on, checked before any work starts. On CUDA the
/// run says where that path has been checked, and the plan (`--plan`) must fit
/// the device's free memory: a run that cannot fit prints the plan, with the
/// cheapest changes, instead of failing deep inside an allocation
/// (`--skip-fit-check` runs anyway: the plan assumes the config's limits).
fn training_device(args: &Args, cfg: &SftConfig) -> Result<Device> {
    let d = Device::parse(&cfg.run.device)?;
    if let Some(w) = actial::cuda::unverified_warning(d) {
        eprintln!("{w}");
    }
    if args.skip_fit_check {
        return Ok(d);
    }
    if d == Device::Cpu {
        // On the CPU: the weights and the optimizer state alone against the
        // memory the system has free (a 7B full fine-tune needs ~120 GB).
        let need = actial::train::plan::cpu_state_bytes(&model_dims(cfg)?, cfg);
        if let Some(avail) = mem_available()
            && need > avail
        {
            return Err(actial::arg_err!(
                "actial-train",
                "on the CPU the weights and optimizer state alone need {} (f32 weights; gradients and AdamW moments \
                 for the {} trainable), {} is available; use LoRA (--set lora.enabled=true), freeze parts \
                 (train.*), or --device cuda; or pass --skip-fit-check to try anyway",
                actial::cuda::accounting::bytes(need),
                if cfg.lora.enabled { "LoRA adapters" } else { "parameters" },
                actial::cuda::accounting::bytes(avail)
            ));
        }
    }
    if let Some((free, total)) = actial::cuda::memory_info(d) {
        let dims = model_dims(cfg)?;
        let (sft, grpo) = recipe_phases(args.recipe);
        let peaks = actial::train::plan::phase_peaks(&dims, cfg, sft, grpo);
        if let Some((phase, peak)) = peaks.into_iter().find(|&(_, p)| p > free) {
            eprint!("{}", actial::train::plan::report(&dims, cfg, sft, grpo));
            return Err(actial::arg_err!(
                "actial-train",
                "the plan above does not fit {d}: the {phase} needs {} at the config's limits (run.max_length, \
                 run.max_pixels, grpo.max_prompt_tokens, grpo.max_new_tokens), {} of {} is free; lower those \
                 limits or apply a change the plan lists, or pass --skip-fit-check to try anyway",
                actial::cuda::accounting::bytes(peak),
                actial::cuda::accounting::bytes(free),
                actial::cuda::accounting::bytes(total)
            ));
        }
    }
    Ok(d)
}

/// MemAvailable from /proc/meminfo (Linux), in bytes.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// The model's dims from config.json alone (the tiny preset's own).
fn model_dims(cfg: &SftConfig) -> Result<actial::model::Qwen25VlConfig> {
    if is_tiny(cfg) {
        Ok(tiny_config(&tiny_tokenizer()?))
    } else {
        actial::model::config::Qwen25VlConfig::from_file(&Path::new(&cfg.model.path).join("config.json"))
    }
}

/// Whether a recipe runs SFT steps, GRPO steps.
fn recipe_phases(r: Recipe) -> (bool, bool) {
    (matches!(r, Recipe::Full | Recipe::Sft | Recipe::Pretrain), matches!(r, Recipe::Full | Recipe::Grpo))
}

fn sft(args: &Args) -> Result<()> {
    let cfg = load_config(args)?;
    training_device(args, &cfg)?;
    claim_run_dir(args, "sft", &cfg)?;
    let out = PathBuf::from(&cfg.run.out_dir);
    let (model, tok, tok_json) = load_model(&cfg)?;
    let mut proc = ImageProcessorConfig::for_vision(&model.config.vision);
    proc.max_pixels = cfg.run.max_pixels;

    let mut records = Vec::new();
    let mut cot_fraction = cfg.data.cot_fraction;
    if cfg.data.train.is_empty() {
        if !is_tiny(&cfg) {
            return Err(actial::arg_err!("sft", "no training data: set data.train or pass --data FILE"));
        }
        eprintln!(
            "no data given: rendering {} synthetic viewpoint pairs into {}",
            cfg.data.synth_pairs,
            out.join("data").display()
        );
        records = synthesize(
            &out.join("data"),
            cfg.data.synth_pairs as u64,
            cfg.run.seed,
            &synth_config(&cfg, option_order(&cfg)),
        )?;
        cot_fraction = cot_fraction.or(Some(0.1));
    }
    for f in &cfg.data.train {
        let rep = load_any(Path::new(f), false)?;
        eprintln!("{f}: {}", rep.summary());
        records.extend(rep.records);
    }
    if let Some(f) = cot_fraction {
        let mc = MixConfig {
            cot_fraction: f,
            cot_unique: cfg.data.cot_unique,
            system: ACTIAL_SYSTEM.into(),
            seed: cfg.run.seed,
            cot_instruction: cfg.data.cot_instruction.clone(),
            cot_style: cfg.data.cot_style,
        };
        let (mixed, rep) = mix(&records, &Default::default(), &mc);
        eprintln!(
            "hybrid cold-start mix: {} letter items + {} CoT slots ({} unique CoTs)",
            rep.letters, rep.cot_slots, rep.cot_unique
        );
        records = mixed;
    }
    let enc = encode_records(&records, &tok, &proc, cfg.data.system.as_deref(), cfg.run.max_length)?;
    for (reason, n) in &enc.skipped {
        eprintln!("  {n} samples skipped: {reason}");
    }
    if is_tiny(&cfg) && cfg.lora.enabled {
        // Adapters need their base: keep the tiny base loadable by other tools.
        let mut base = load_model(&cfg)?.0;
        base.save(&out.join("base"), DType::F32)?;
        std::fs::copy(&tok_json, out.join("base/tokenizer.json"))
            .map_err(|e| Error::Io { path: tok_json.display().to_string(), source: e })?;
    }
    let mut trainer = SftTrainer::new(cfg.clone(), model, enc.examples)?;
    resume_sft(&mut trainer, args)?;
    eprintln!(
        "sft: {} examples, {} trainable parameters ({}), {} steps of {} samples ({} per micro-batch)",
        trainer.examples.len(),
        trainer.trainable_params(),
        if cfg.lora.enabled { "LoRA" } else { "full" },
        trainer.total_steps,
        cfg.run.global_batch,
        cfg.run.micro_batch
    );
    trainer.run(&out, Some(&tok_json), true)?;
    let h = &trainer.history;
    sft_plots(h, &out.join("plots"))?;
    if let (Some(first), Some(last)) = (h.first(), h.last()) {
        let tps = h.iter().map(|m| m.tokens as f64).sum::<f64>() / h.iter().map(|m| m.elapsed_s).sum::<f64>();
        eprintln!(
            "done: loss {:.4} -> {:.4} over {} steps, {:.0} tokens/s, peak memory {:.0} MB; checkpoints and plots in {}",
            first.loss,
            last.loss,
            h.len(),
            tps,
            last.peak_rss_mb,
            out.display()
        );
    }
    print_device_accounting("sft", &trainer.device_accounting);
    if args.merge_lora {
        let n = trainer.model.merge_lora()?;
        let dir = out.join("merged");
        save_trained(&mut trainer.model, &dir, &tok_json, "sft")?;
        eprintln!("merged {n} LoRA adapters into {}", dir.display());
    }
    Ok(())
}

/// Synthetic SAT-like records (the out-of-domain questions) of `pairs` rendered
/// pairs in `dir`, and their viewpoint records.
fn synth_sets(dir: &Path, pairs: u64, seed: u64, c: &SynthConfig) -> Result<(Vec<QaRecord>, Vec<QaRecord>)> {
    let rows = render_pairs(&dir.join("images"), pairs, seed, c, &|| {})?;
    let (mut view, mut sat) = (Vec::new(), Vec::new());
    for (v, s, _) in rows {
        view.extend(v);
        sat.extend(s);
    }
    write_sharegpt(&dir.join("viewpoint.jsonl"), &view)?;
    write_sharegpt(&dir.join("sat.jsonl"), &sat)?;
    Ok((view, sat))
}

/// `records` as GRPO asks them: ending with `grpo.instruction` where one is set.
fn as_grpo_prompts(cfg: &SftConfig, records: &[QaRecord]) -> Vec<QaRecord> {
    match &cfg.grpo.instruction {
        Some(i) => records.iter().map(|r| QaRecord { prompt: with_instruction(&r.prompt, i), ..r.clone() }).collect(),
        None => records.to_vec(),
    }
}

/// GRPO prompts from records: images downscaled to `grpo.max_image_pixels`,
/// the GRPO system prompt, over-long prompts skipped and counted.
fn grpo_prompts(cfg: &SftConfig, records: &[QaRecord], tok: &QwenTokenizer, model: &Qwen25Vl) -> Result<Vec<EvalItem>> {
    let mut proc = ImageProcessorConfig::for_vision(&model.config.vision);
    proc.max_pixels = cfg.run.max_pixels.min(cfg.grpo.max_image_pixels);
    let records = as_grpo_prompts(cfg, records);
    let (items, skipped) =
        encode_prompts(&records, tok, &proc, cfg.grpo.system.as_deref(), cfg.grpo.max_prompt_tokens)?;
    for (reason, n) in &skipped {
        eprintln!("  {n} GRPO prompts skipped: {reason}");
    }
    Ok(items)
}

/// Runs stage 2 on `model` into `out`; returns the trained policy (LoRA merged).
/// Where a stage writes: its run directory, the plots, and what it resumes from.
#[derive(Clone, Copy)]
struct StageDirs<'a> {
    out: &'a Path,
    plots: &'a Path,
    resume: Option<&'a Path>,
}

fn run_grpo(
    cfg: &SftConfig,
    model: Qwen25Vl,
    prompts: Vec<EvalItem>,
    tok: &QwenTokenizer,
    tok_json: &Path,
    dirs: &StageDirs,
) -> Result<(Qwen25Vl, Vec<GrpoMetrics>)> {
    let StageDirs { out, plots, resume } = *dirs;
    let mut trainer = GrpoTrainer::new(cfg.clone(), model, prompts, tok.clone())?;
    if let Some(r) = resume {
        let ckpt = latest_checkpoint(r)?;
        trainer.load_checkpoint(&ckpt)?;
        eprintln!("resumed GRPO from {} at step {}", ckpt.display(), trainer.step);
    }
    let g = &cfg.grpo;
    eprintln!(
        "grpo: {} prompts, {} trainable parameters ({}), {} steps of {} prompts x {} samples, beta {}, lr {:.1e}",
        trainer.prompts.len(),
        trainer.trainable_params(),
        if cfg.lora.enabled { "LoRA" } else { "full" },
        trainer.total_steps,
        g.prompts_per_step,
        g.group,
        g.beta,
        g.lr
    );
    trainer.run(out, Some(tok_json), true)?;
    let h = trainer.history.clone();
    grpo_plots(&h, plots)?;
    if let (Some(a), Some(b)) = (h.first(), h.last()) {
        let rt: f64 = h.iter().map(|m| m.rollout_tokens_per_s).sum::<f64>() / h.len() as f64;
        eprintln!(
            "grpo done: reward {:.3} -> {:.3}, accuracy {:.2} -> {:.2}, format {:.2} -> {:.2}, response length {:.0} -> {:.0}, {:.0} rollout tokens/s",
            a.reward_mean,
            b.reward_mean,
            a.accuracy,
            b.accuracy,
            a.format_rate,
            b.format_rate,
            a.response_len_mean,
            b.response_len_mean,
            rt
        );
        print_device_accounting("grpo", &trainer.device_accounting);
    }
    let mut model = trainer.model;
    model.merge_lora()?;
    Ok((model, h))
}

fn grpo_plots(h: &[GrpoMetrics], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
    let curve = |f: &dyn Fn(&GrpoMetrics) -> f64| h.iter().map(|m| (m.step as f64, f(m))).collect::<Vec<_>>();
    type Series<'a> = Vec<(&'a str, Vec<(f64, f64)>)>;
    let charts: [(&str, &str, Series); 5] = [
        ("grpo_reward.png", "GRPO reward (mean over samples)", vec![("reward", curve(&|m| m.reward_mean))]),
        (
            "grpo_accuracy_format.png",
            "GRPO accuracy and format rate",
            vec![("accuracy", curve(&|m| m.accuracy)), ("format", curve(&|m| m.format_rate))],
        ),
        ("grpo_kl.png", "KL to the reference (k3, mean per token)", vec![("kl", curve(&|m| m.kl))]),
        ("grpo_response_length.png", "response length (tokens)", vec![("length", curve(&|m| m.response_len_mean))]),
        ("grpo_entropy.png", "policy entropy (nats per token)", vec![("entropy", curve(&|m| m.entropy))]),
    ];
    for (file, title, series) in &charts {
        line_chart(title, "step", series)?.save(dir.join(file)).map_err(|e| actial::arg_err!("plot", "{e}"))?;
    }
    // The paper's training panels on one figure.
    let panels: Vec<Panel> = charts.iter().map(|(_, title, series)| Panel { title, series: series.clone() }).collect();
    figure(&panels, 3, "step")?.save(dir.join("grpo.png")).map_err(|e| actial::arg_err!("plot", "{e}"))?;
    Ok(())
}

/// `--recipe grpo`: stage 2 alone, from `model.path` (an SFT output), on
/// `grpo.data` (with the tiny preset and no data: synthetic SAT-like questions).
fn grpo(args: &Args) -> Result<()> {
    let cfg = load_config_on(args, None)?;
    training_device(args, &cfg)?;
    claim_run_dir(args, "grpo", &cfg)?;
    let out = PathBuf::from(&cfg.run.out_dir);
    let (model, tok, tok_json) = load_model(&cfg)?;
    let mut records = Vec::new();
    if cfg.grpo.data.is_empty() {
        if !is_tiny(&cfg) {
            return Err(actial::arg_err!("grpo", "no prompts: set grpo.data"));
        }
        eprintln!("no data given: rendering 256 synthetic pairs for SAT-like prompts");
        records = synth_sets(&out.join("data"), 256, cfg.run.seed, &synth_config(&cfg, option_order(&cfg)))?.1;
    }
    for f in &cfg.grpo.data {
        let rep = load_any(Path::new(f), false)?;
        eprintln!("{f}: {}", rep.summary());
        records.extend(rep.records);
    }
    let prompts = grpo_prompts(&cfg, &records, &tok, &model)?;
    let (mut model, _) = run_grpo(
        &cfg,
        model,
        prompts,
        &tok,
        &tok_json,
        &StageDirs { out: &out, plots: &out.join("plots"), resume: args.resume.as_deref() },
    )?;
    let dir = out.join("final");
    save_trained(&mut model, &dir, &tok_json, "grpo")?;
    eprintln!("policy (LoRA merged) in {}", dir.display());
    Ok(())
}

/// `--recipe full`: evaluation of the start model, SFT with the hybrid cold-start
/// mix, evaluation, GRPO on SAT-like questions, evaluation; one run directory with
/// both stages' checkpoints and metrics, plots and a report table. With the tiny
/// preset and no data this is the embedded default.
fn full(args: &Args) -> Result<()> {
    let t0 = std::time::Instant::now();
    let cfg = load_config_on(args, Some(SftConfig::embedded_defaults()))?;
    training_device(args, &cfg)?;
    claim_run_dir(args, "full", &cfg)?;
    if cfg.data.train.is_empty() != cfg.grpo.data.is_empty() {
        return Err(actial::arg_err!(
            "full",
            "give both data.train (SFT) and grpo.data (GRPO) files, or neither (rendered synthetic data)"
        ));
    }
    let out = PathBuf::from(&cfg.run.out_dir);
    let (model, tok, tok_json) = load_model(&cfg)?;
    let mut proc = ImageProcessorConfig::for_vision(&model.config.vision);
    proc.max_pixels = cfg.run.max_pixels;
    let seed = cfg.run.seed;

    // Data: SFT letter items (+ CoT mix), GRPO prompts, held-out evaluation sets.
    let (mut sft_records, mut grpo_records, held_view, held_sat);
    if cfg.data.train.is_empty() {
        let pairs = cfg.data.synth_pairs as u64;
        eprintln!("rendering {pairs} training pairs and {} held-out pairs", cfg.data.synth_heldout_pairs);
        let (v, s) = synth_sets(&out.join("data/train"), pairs, seed, &synth_config(&cfg, option_order(&cfg)))?;
        (sft_records, grpo_records) = (v, s);
        let (hv, hs) = synth_sets(
            &out.join("data/heldout"),
            cfg.data.synth_heldout_pairs as u64,
            seed + 1_000_003,
            &synth_config(&cfg, option_order(&cfg)),
        )?;
        (held_view, held_sat) = (hv, hs);
    } else {
        (sft_records, grpo_records) = (Vec::new(), Vec::new());
        for f in &cfg.data.train {
            sft_records.extend(load_any(Path::new(f), false)?.records);
        }
        for f in &cfg.grpo.data {
            grpo_records.extend(load_any(Path::new(f), false)?.records);
        }
        // Real runs evaluate with actial-eval; hold out the last 5% of each set here.
        let cut = |r: &mut Vec<QaRecord>| r.split_off(r.len() - r.len() / 20);
        (held_view, held_sat) = (cut(&mut sft_records), cut(&mut grpo_records));
    }
    let system = Some(ACTIAL_SYSTEM);
    let (e_view, _) = encode_prompts(&held_view, &tok, &proc, system, cfg.grpo.max_prompt_tokens)?;
    // Out of domain is asked the way GRPO asks (`grpo.instruction`).
    let (e_sat, _) =
        encode_prompts(&as_grpo_prompts(&cfg, &held_sat), &tok, &proc, system, cfg.grpo.max_prompt_tokens)?;
    // In domain a second time, asked to reason the way the CoT items were
    // (`data.cot_instruction`): whether the pseudo-CoT route answers better than
    // the bare letter. Without that instruction both prompts would be the same.
    let e_view_reason = match &cfg.data.cot_instruction {
        Some(i) => {
            let asked: Vec<QaRecord> =
                held_view.iter().map(|r| QaRecord { prompt: with_instruction(&r.prompt, i), ..r.clone() }).collect();
            Some(encode_prompts(&asked, &tok, &proc, system, cfg.grpo.max_prompt_tokens)?.0)
        }
        None => None,
    };
    let max_new = cfg.grpo.max_new_tokens;
    let eval_all = |m: &Qwen25Vl, stage: &str| -> Result<StageEval> {
        let a = eval_set_n(m, &tok, &e_view, &format!("eval {stage} in-domain"), max_new)?;
        let r = match &e_view_reason {
            Some(items) => Some(eval_set_n(m, &tok, items, &format!("eval {stage} in-domain, reasoning"), max_new)?),
            None => None,
        };
        let b = eval_set_n(m, &tok, &e_sat, &format!("eval {stage} out-of-domain"), max_new)?;
        eprintln!(
            "{stage}: in-domain accuracy {:.1}%{}, out-of-domain accuracy {:.1}% (format {:.1}%)",
            100.0 * a.accuracy(),
            r.as_ref().map_or(String::new(), |r| format!(
                " (asked to reason: {:.1}%, format {:.1}%)",
                100.0 * r.accuracy(),
                100.0 * r.format_rate()
            )),
            100.0 * b.accuracy(),
            100.0 * b.format_rate()
        );
        Ok(StageEval { in_domain: a, in_domain_reasoning: r, out_of_domain: b })
    };
    let mut rows: Vec<(String, StageEval)> = Vec::new();
    rows.push(("base".into(), eval_all(&model, "base")?));

    // Stage 1: SFT with the hybrid cold-start mix.
    let mc = MixConfig {
        cot_fraction: cfg.data.cot_fraction.unwrap_or(0.1),
        cot_unique: cfg.data.cot_unique,
        system: ACTIAL_SYSTEM.into(),
        seed,
        cot_instruction: cfg.data.cot_instruction.clone(),
        cot_style: cfg.data.cot_style,
    };
    let (mixed, rep) = mix(&sft_records, &Default::default(), &mc);
    eprintln!(
        "hybrid cold-start mix: {} letter items + {} CoT slots ({} unique CoTs)",
        rep.letters, rep.cot_slots, rep.cot_unique
    );
    let enc = encode_records(&mixed, &tok, &proc, cfg.data.system.as_deref(), cfg.run.max_length)?;
    for (reason, n) in &enc.skipped {
        eprintln!("  {n} SFT samples skipped: {reason}");
    }
    let mut sft = SftTrainer::new(cfg.clone(), model, enc.examples)?;
    eprintln!(
        "sft: {} examples, {} trainable parameters, {} steps of {}",
        sft.examples.len(),
        sft.trainable_params(),
        sft.total_steps,
        cfg.run.global_batch
    );
    sft.run(&out.join("sft"), Some(&tok_json), true)?;
    sft_plots(&sft.history, &out.join("plots"))?;
    print_device_accounting("sft", &sft.device_accounting);
    let mut model = sft.model;
    model.merge_lora()?;
    rows.push(("SFT (hybrid cold-start)".into(), eval_all(&model, "SFT")?));

    // Stage 2: GRPO.
    let prompts = grpo_prompts(&cfg, &grpo_records, &tok, &model)?;
    let (model, grpo_hist) = run_grpo(
        &cfg,
        model,
        prompts,
        &tok,
        &tok_json,
        &StageDirs { out: &out.join("grpo"), plots: &out.join("plots"), resume: None },
    )?;
    rows.push(("SFT + GRPO".into(), eval_all(&model, "SFT+GRPO")?));
    let mut model = model;
    let dir = out.join("final");
    save_trained(&mut model, &dir, &tok_json, "full")?;

    // Report.
    let pct = |r: &EvalReport, f: fn(&EvalReport) -> f64| format!("{:.1}%", 100.0 * f(r));
    let mut md = String::from(
        "| model | in-domain accuracy (viewpoint, letter) | in-domain accuracy, asked to reason | its format | out-of-domain accuracy (SAT-like) | out-of-domain format |\n|---|---|---|---|---|---|\n",
    );
    for (name, e) in &rows {
        let (ra, rf) = match &e.in_domain_reasoning {
            Some(r) => (pct(r, EvalReport::accuracy), pct(r, EvalReport::format_rate)),
            None => ("-".into(), "-".into()),
        };
        md += &format!(
            "| {name} | {} | {ra} | {rf} | {} | {} |\n",
            pct(&e.in_domain, EvalReport::accuracy),
            pct(&e.out_of_domain, EvalReport::accuracy),
            pct(&e.out_of_domain, EvalReport::format_rate)
        );
    }
    // The bar to beat: uniform guessing, and answering one letter every time (with
    // a fixed option order the two directions are always A and B, so a constant
    // letter scores about 50% on the three-option viewpoint questions).
    let constant = |items: &[EvalItem]| {
        let mut n = std::collections::BTreeMap::<&str, usize>::new();
        for i in items {
            *n.entry(i.answer.as_str()).or_default() += 1;
        }
        n.values().max().map_or(0.0, |&m| 100.0 * m as f64 / items.len().max(1) as f64)
    };
    md += &format!(
        "\n{} in-domain items (uniform guess 33.3%, best constant letter {:.1}%), {} out-of-domain items (uniform guess 50%, best constant letter {:.1}%); greedy decoding, Actial system prompt.\n",
        e_view.len(),
        constant(&e_view),
        e_sat.len(),
        constant(&e_sat)
    );
    let per_kind = |r: &EvalReport| {
        r.per_kind()
            .into_iter()
            .map(|(k, (a, f, n))| (k, json!({"accuracy": a, "format": f, "items": n})))
            .collect::<serde_json::Map<_, _>>()
    };
    let summary =
        |r: &EvalReport| json!({"accuracy": r.accuracy(), "format": r.format_rate(), "per_kind": per_kind(r)});
    let report = json!({
        "wall_s": t0.elapsed().as_secs_f64(),
        "rows": rows.iter().map(|(n, e)| json!({
            "model": n,
            "in_domain": summary(&e.in_domain),
            "in_domain_reasoning": e.in_domain_reasoning.as_ref().map(summary),
            "out_of_domain": summary(&e.out_of_domain),
        })).collect::<Vec<_>>(),
        "grpo_last": grpo_hist.last(),
    });
    let eval_dir = out.join("eval");
    std::fs::create_dir_all(&eval_dir).map_err(|e| Error::Io { path: eval_dir.display().to_string(), source: e })?;
    for (i, (_, e)) in rows.iter().enumerate() {
        for (set, r) in e.sets() {
            let lines: String = r.items.iter().map(|it| serde_json::to_string(it).expect("JSON") + "\n").collect();
            actial::model::weights::write_atomic(
                &eval_dir.join(format!("{}_{set}.jsonl", ["base", "sft", "grpo"][i])),
                lines.as_bytes(),
            )?;
        }
    }
    actial::model::weights::write_atomic(&out.join("report.md"), md.as_bytes())?;
    actial::model::weights::write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&report).expect("JSON").as_bytes(),
    )?;
    println!("\n{md}");
    eprintln!("done in {:.0} s: {}", t0.elapsed().as_secs_f64(), out.display());
    Ok(())
}

/// One stage's evaluation in `full`.
struct StageEval {
    in_domain: EvalReport,
    /// The same held-out questions asked for the reasoning (`data.cot_instruction`).
    in_domain_reasoning: Option<EvalReport>,
    out_of_domain: EvalReport,
}

impl StageEval {
    /// Each evaluated set with its file-name stem.
    fn sets(&self) -> Vec<(&'static str, &EvalReport)> {
        let mut v = vec![("in_domain", &self.in_domain)];
        v.extend(self.in_domain_reasoning.as_ref().map(|r| ("in_domain_reasoning", r)));
        v.push(("out_of_domain", &self.out_of_domain));
        v
    }
}

fn sft_plots(h: &[actial::train::sft::StepMetrics], plots: &Path) -> Result<()> {
    let curve = |f: &dyn Fn(&actial::train::sft::StepMetrics) -> f64| {
        h.iter().map(|m| (m.step as f64, f(m))).collect::<Vec<_>>()
    };
    std::fs::create_dir_all(plots).map_err(|e| Error::Io { path: plots.display().to_string(), source: e })?;
    for (file, title, series) in [
        ("sft_loss.png", "SFT loss (token mean)", curve(&|m| m.loss)),
        ("sft_lr.png", "learning rate", curve(&|m| m.lr as f64)),
        ("sft_grad_norm.png", "gradient norm (before clipping)", curve(&|m| m.grad_norm)),
    ] {
        line_chart(title, "step", &[(title, series)])?
            .save(plots.join(file))
            .map_err(|e| actial::arg_err!("plot", "{e}"))?;
    }
    Ok(())
}

/// Evaluates `items` greedily with a progress bar.
fn eval_set(model: &Qwen25Vl, tok: &QwenTokenizer, items: &[EvalItem], what: &str) -> Result<EvalReport> {
    eval_set_n(model, tok, items, what, 16)
}

fn eval_set_n(
    model: &Qwen25Vl,
    tok: &QwenTokenizer,
    items: &[EvalItem],
    what: &str,
    max_new: usize,
) -> Result<EvalReport> {
    let pb = actial::util::progress_bar(what, items.len() as u64, "");
    let r = evaluate(model, tok, items, max_new, 32, &mut |n| pb.set_position(n as u64))?;
    pb.finish_and_clear();
    Ok(r)
}

/// `--recipe pretrain`: the tiny base model (see `actial::data::pretrain`).
fn pretrain(args: &Args) -> Result<()> {
    let cfg = load_config_on(args, Some(SftConfig::pretrain_defaults()))?;
    training_device(args, &cfg)?;
    claim_run_dir(args, "pretrain", &cfg)?;
    if !is_tiny(&cfg) {
        return Err(actial::arg_err!(
            "pretrain",
            "pretraining builds the tiny preset from random init; model.path must be \"tiny\""
        ));
    }
    if cfg.lora.enabled {
        return Err(actial::arg_err!(
            "pretrain",
            "pretraining from random init trains every weight; set lora.enabled=false"
        ));
    }
    let t_start = std::time::Instant::now();
    let out = PathBuf::from(&cfg.run.out_dir);
    let tok = tiny_tokenizer()?;
    let tok_json = tiny_dir().join("tokenizer.json");
    let model = match &args.init {
        Some(dir) => {
            let m = Qwen25Vl::from_dir(dir)?;
            if m.config != tiny_config(&tok) {
                return Err(actial::arg_err!("pretrain", "--init {}: not the tiny preset's config", dir.display()));
            }
            eprintln!("pretraining from {}", dir.display());
            m
        }
        None => Qwen25Vl::random(tiny_config(&tok), cfg.model.init_seed)?,
    };
    let mut proc = ImageProcessorConfig::for_vision(&model.config.vision);
    proc.max_pixels = cfg.run.max_pixels;
    let order = cfg.data.option_order.unwrap_or_default();
    let synth = synth_config(&cfg, order);
    let seed = cfg.run.seed;

    let pb = actial::util::progress_bar("render", args.photos + args.pairs + args.perspective_photos, "");
    let mix = PretrainMix {
        photos: args.photos,
        pairs: args.pairs,
        text_items: args.text_items,
        perspective_items: args.perspective_items,
        perspective_photos: args.perspective_photos,
        reasoning_every: args.reasoning_every,
    };
    let records = pretrain_records(&out.join("data/train"), seed, mix, &synth, &|| pb.inc(1))?;
    pb.finish_and_clear();
    // Held out: other seeds for photos, text items and viewpoint pairs.
    let held = pretrain_records(
        &out.join("data/heldout"),
        seed + 1,
        PretrainMix {
            photos: 150,
            pairs: 100,
            text_items: 400,
            perspective_items: 100,
            perspective_photos: 60,
            reasoning_every: 0,
        },
        &synth,
        &|| {},
    )?;
    let (held_text, held_images): (Vec<QaRecord>, Vec<QaRecord>) = held
        .into_iter()
        .filter(|r| LETTERS.iter().any(|l| r.answer == l.to_string()))
        .partition(|r| r.images.is_empty());
    let (held_photo, held_pair): (Vec<QaRecord>, Vec<QaRecord>) =
        held_images.into_iter().partition(|r| r.images.len() == 1);
    // The viewpoint check uses the paper's shuffled options whatever the base's own
    // order (issue #9: near chance = near 33%; with a fixed order a constant
    // letter would already score 50%).
    let viewpoint =
        synthesize(&out.join("data/heldout_viewpoint"), 150, seed + 1, &synth_config(&cfg, OptionOrder::Shuffled))?;
    eprintln!(
        "pretrain data: {} records from {} photos, {} two-photo items and {} text items",
        records.len(),
        args.photos,
        args.pairs,
        args.text_items
    );

    let enc = encode_records(&records, &tok, &proc, cfg.data.system.as_deref(), cfg.run.max_length)?;
    for (reason, n) in &enc.skipped {
        eprintln!("  {n} samples skipped: {reason}");
    }
    let encode =
        |r: &[QaRecord]| -> Result<Vec<EvalItem>> { Ok(encode_prompts(r, &tok, &proc, None, cfg.run.max_length)?.0) };
    let (e_text, e_photo, e_pair, e_view) =
        (encode(&held_text)?, encode(&held_photo)?, encode(&held_pair)?, encode(&viewpoint)?);
    let mut trainer = SftTrainer::new(cfg.clone(), model, enc.examples)?;
    resume_sft(&mut trainer, args)?;
    eprintln!(
        "pretrain: {} examples, {} parameters, {} steps of {} samples",
        trainer.examples.len(),
        trainer.trainable_params(),
        trainer.total_steps,
        cfg.run.global_batch
    );
    let every = args.eval_every;
    let quick = |e: &[EvalItem]| e[..e.len().min(96)].to_vec();
    let (quick_text, quick_photo, quick_pair) = (quick(&e_text), quick(&e_photo), quick(&e_pair));
    let evals = std::cell::RefCell::new(Vec::<serde_json::Value>::new());
    trainer.run_with(&out, Some(&tok_json), true, &mut |t, pb| {
        if every == 0 || !t.step.is_multiple_of(every) {
            return Ok(());
        }
        let a = evaluate(&t.model, &tok, &quick_text, 8, 32, &mut |_| {})?.accuracy();
        let b = evaluate(&t.model, &tok, &quick_photo, 8, 32, &mut |_| {})?.accuracy();
        let c = evaluate(&t.model, &tok, &quick_pair, 8, 32, &mut |_| {})?.accuracy();
        let line = format!(
            "step {:>6}: held-out accuracy text {:.1}%, single photo {:.1}%, one photo of two {:.1}%",
            t.step,
            100.0 * a,
            100.0 * b,
            100.0 * c
        );
        if pb.is_hidden() {
            eprintln!("{line}")
        } else {
            pb.println(line)
        }
        evals.borrow_mut().push(serde_json::json!({"step": t.step, "text": a, "single_photo": b, "photo_of_two": c}));
        Ok(())
    })?;
    let train_s = t_start.elapsed().as_secs_f64();
    let model = &trainer.model;
    let rows = [
        ("text-only multiple choice", eval_set(model, &tok, &e_text, "eval text")?),
        ("single photo multiple choice", eval_set(model, &tok, &e_photo, "eval photos")?),
        ("one photo of two, multiple choice", eval_set(model, &tok, &e_pair, "eval photo pairs")?),
        ("viewpoint (two photos, not trained)", eval_set(model, &tok, &e_view, "eval viewpoint")?),
    ];
    println!("\n| held-out set | items | accuracy | per kind |\n|---|---|---|---|");
    for (name, r) in &rows {
        let kinds: Vec<String> =
            r.per_kind().iter().map(|(k, (a, _, n))| format!("{k} {:.0}% ({n})", 100.0 * a)).collect();
        println!("| {name} | {} | {:.1}% | {} |", r.items.len(), 100.0 * r.accuracy(), kinds.join(", "));
    }
    let dir = out.join("model");
    trainer.model.save(&dir, DType::BF16)?;
    let info = json!({
        "option_order": order,
        "synth_scene": cfg.data.synth_scene,
        "init": args.init,
        "steps": trainer.step,
        "seed": seed,
        "init_seed": cfg.model.init_seed,
        "photos": args.photos,
        "pairs": args.pairs,
        "text_items": args.text_items,
        "perspective_items": args.perspective_items,
        "perspective_photos": args.perspective_photos,
        "reasoning_every": args.reasoning_every,
        "wall_s": train_s,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "held_out_accuracy": rows.iter().map(|(n, r)| (n.to_string(), json!(r.accuracy()))).collect::<serde_json::Map<_, _>>(),
    });
    actial::model::weights::write_atomic(
        &dir.join("actial_pretrain.json"),
        serde_json::to_string_pretty(&info).expect("JSON").as_bytes(),
    )?;
    std::fs::copy(&tok_json, dir.join("tokenizer.json"))
        .map_err(|e| Error::Io { path: tok_json.display().to_string(), source: e })?;
    let report = serde_json::json!({
        "steps": trainer.step,
        "wall_s": train_s,
        "seed": seed,
        "init_seed": cfg.model.init_seed,
        "photos": args.photos,
        "pairs": args.pairs,
        "text_items": args.text_items,
        "perspective_items": args.perspective_items,
        "perspective_photos": args.perspective_photos,
        "reasoning_every": args.reasoning_every,
        "periodic": evals.into_inner(),
        "final": rows.iter().map(|(n, r)| serde_json::json!({"set": n, "items": r.items.len(), "accuracy": r.accuracy(), "per_kind": r.per_kind()})).collect::<Vec<_>>(),
    });
    actial::model::weights::write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&report).expect("JSON").as_bytes(),
    )?;
    eprintln!("pretrained base (bf16) in {} after {:.0} s", dir.display(), train_s);
    Ok(())
}

/// At the end of a CUDA run: what the device did, per phase (per-step figures
/// are in metrics.jsonl under "cuda").
fn print_device_accounting(stage: &str, acc: &Option<actial::cuda::accounting::Accounting>) {
    if let Some(a) = acc {
        eprintln!("{stage}: device accounting over the run (copies, waits, launches, allocations per phase):");
        eprint!("{}", a.table());
    }
}

/// `--plan`: the run's memory and time plan from config.json alone.
fn plan(args: &Args) -> Result<()> {
    let cfg = load_config(args)?;
    let model = model_dims(&cfg)?;
    let (sft, grpo) = recipe_phases(args.recipe);
    println!("plan for model {} (recipe {:?}):", cfg.model.path, args.recipe);
    print!("{}", actial::train::plan::report(&model, &cfg, sft, grpo));
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let res = match args.recipe {
        _ if args.plan => plan(&args),
        Recipe::Sft => sft(&args),
        Recipe::Pretrain => pretrain(&args),
        Recipe::Grpo => grpo(&args),
        Recipe::Full => full(&args),
    };
    if let Some(table) = actial::ops::profile::report() {
        eprintln!("\n{table}");
    }
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
