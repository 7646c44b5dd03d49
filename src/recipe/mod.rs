//! The Actial recipe as library functions: each recipe takes one run config
//! ([`SftConfig`]) and the run's options ([`RunOptions`]) and returns a typed
//! report; `actial-train` only parses arguments and prints.
//!
//! - [`full::full`]: evaluate the start model, SFT with the hybrid cold-start
//!   mix, evaluate, GRPO on broader questions, evaluate; one run directory, a
//!   report table (the embedded default with the tiny preset and no data);
//! - [`sft::sft`]: stage 1 alone; [`grpo::grpo`]: stage 2 alone;
//! - [`pretrain::pretrain`]: the tiny base model from random init.
//!
//! What they share lives here: the config a recipe starts from, the run
//! directory claim, resuming, the device check before any work, the rendered
//! data of the tiny preset, saving a trained model.

pub mod full;
pub mod grpo;
mod plots;
pub mod pretrain;
pub mod sft;

use std::path::{Path, PathBuf};

use crate::data::formats::write_sharegpt;
use crate::data::qa::{OptionOrder, QaRecord};
use crate::data::synth::{SynthConfig, render_pairs};
use crate::model::Qwen25Vl;
use crate::model::config::Qwen25VlConfig;
use crate::model::tiny::{tiny_base_dir, tiny_config, tiny_tokenizer};
use crate::model::tokenizer::QwenTokenizer;
use crate::train::config::SftConfig;
use crate::train::run_dir::{Claim, RUN_FILE, RunRecord, claim};
use crate::util::{io_err, write_atomic};
use crate::{DType, Device, Result, arg_err};

/// The recipes `actial-train --recipe` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    Full,
    Sft,
    Grpo,
    /// The tiny base model: multiple-choice and single-photo skills from random init.
    Pretrain,
}

impl Recipe {
    /// Its name in run.json and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Full => "full",
            Recipe::Sft => "sft",
            Recipe::Grpo => "grpo",
            Recipe::Pretrain => "pretrain",
        }
    }

    /// Whether it runs SFT steps, GRPO steps.
    pub fn phases(self) -> (bool, bool) {
        (matches!(self, Recipe::Full | Recipe::Sft | Recipe::Pretrain), matches!(self, Recipe::Full | Recipe::Grpo))
    }

    /// The preset a run starts from when none is named: `full` the embedded
    /// default, `pretrain` its own, `sft` / `grpo` the tiny preset for the tiny
    /// model, else the paper's.
    fn default_preset(self, tiny: bool) -> &'static str {
        match self {
            Recipe::Full => "embedded",
            Recipe::Pretrain => "pretrain",
            Recipe::Sft | Recipe::Grpo if tiny => "tiny",
            Recipe::Sft | Recipe::Grpo => "paper",
        }
    }
}

/// Where a run's config comes from, lowest priority first: a preset (named, or
/// the recipe's default), a TOML file, `section.key=value` overrides, then the
/// shortcuts (`data`, `out`, `device`).
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    pub preset: Option<String>,
    pub file: Option<PathBuf>,
    pub overrides: Vec<String>,
    /// Training data files, added to `data.train` (`--recipe grpo`: to `grpo.data`).
    pub data: Vec<String>,
    /// `run.out_dir`.
    pub out: Option<String>,
    /// `run.device`.
    pub device: Option<String>,
    /// A resume continues in its own run directory (when `out` is not given).
    pub resume: Option<PathBuf>,
}

/// The config of a `recipe` run from `src`.
pub fn load_config(recipe: Recipe, src: &ConfigSource) -> Result<SftConfig> {
    let mut overrides = src.overrides.clone();
    if let Some(o) = &src.out {
        overrides.push(format!("run.out_dir={o:?}"));
    } else if let Some(r) = &src.resume {
        overrides.push(format!("run.out_dir={:?}", run_dir_of(r).display().to_string()));
    }
    if let Some(d) = &src.device {
        overrides.push(format!("run.device={d:?}"));
    }
    let text = match &src.file {
        Some(p) => std::fs::read_to_string(p).map_err(io_err(p))?,
        None => String::new(),
    };
    let file = src.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(defaults)".into());
    let preset = match &src.preset {
        Some(name) => name.clone(),
        None => {
            // Parse once on the tiny preset to learn which model the run names.
            let probe = SftConfig::from_toml(&text, &SftConfig::tiny_defaults(), &overrides, &file)?;
            recipe.default_preset(is_tiny(&probe)).to_string()
        }
    };
    let mut cfg = SftConfig::from_toml(&text, &SftConfig::preset(&preset)?, &overrides, &file)?;
    match recipe {
        // GRPO alone reads prompts, not SFT data.
        Recipe::Grpo => cfg.grpo.data.extend(src.data.iter().cloned()),
        _ => cfg.data.train.extend(src.data.iter().cloned()),
    }
    check_used(recipe, &cfg, &text, &src.overrides, &file)?;
    Ok(cfg)
}

/// The sections of the config `recipe` never reads with `cfg`: `[grpo]` in
/// SFT and pretraining, `[data]` (SFT data) in GRPO alone, `[pretrain]` outside
/// pretraining, `[synth]` when the data comes from files.
fn unused_sections(recipe: Recipe, cfg: &SftConfig) -> Vec<&'static str> {
    let mut v = Vec::new();
    let (sft, grpo) = recipe.phases();
    if !grpo {
        v.push("grpo");
    }
    if !sft {
        v.push("data");
    }
    if recipe != Recipe::Pretrain {
        v.push("pretrain");
    }
    let renders = match recipe {
        Recipe::Pretrain => true,
        Recipe::Sft | Recipe::Full => cfg.data.train.is_empty(),
        Recipe::Grpo => cfg.grpo.data.is_empty(),
    };
    if !renders {
        v.push("synth");
    }
    v
}

/// A `--set` of a key the run never reads is an error (a typo'd intent, like
/// `--set grpo.steps=10` on `--recipe sft`); a file may describe the whole
/// recipe, so its unread sections are only named.
fn check_used(recipe: Recipe, cfg: &SftConfig, text: &str, overrides: &[String], file: &str) -> Result<()> {
    let unused = unused_sections(recipe, cfg);
    for o in overrides {
        let section = o.split(['.', '=']).next().unwrap_or_default().trim();
        if unused.contains(&section) {
            return Err(arg_err!(
                "actial-train",
                "--set {o}: --recipe {} never reads [{section}] in this run{}",
                recipe.name(),
                if section == "synth" { " (its data comes from files, not the renderer)" } else { "" }
            ));
        }
    }
    if let Ok(table) = text.parse::<toml::Table>() {
        let idle: Vec<String> =
            table.keys().filter(|k| unused.contains(&k.as_str())).map(|k| format!("[{k}]")).collect();
        if !idle.is_empty() {
            eprintln!("{file}: {} not used by --recipe {}", idle.join(", "), recipe.name());
        }
    }
    Ok(())
}

/// How a run treats its run directory and device, beyond the config.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Resume from a checkpoint directory, or the latest checkpoint in a run directory.
    pub resume: Option<PathBuf>,
    /// Start over in a run directory that holds checkpoints.
    pub overwrite: bool,
    /// After SFT, also write the model with LoRA merged into `out/merged`.
    pub merge_lora: bool,
    /// Start even when the plan says the run does not fit the device.
    pub skip_fit_check: bool,
}

/// `tiny` (the pretrained tiny base) or `tiny-random`: the built-in preset.
pub fn is_tiny(cfg: &SftConfig) -> bool {
    cfg.model.path == "tiny" || cfg.model.path == "tiny-random"
}

/// The run directory of a `--resume` path: the path itself, or the run that
/// holds a checkpoint (`out/checkpoint-N`, or `out/sft/checkpoint-N` of the
/// full recipe).
pub fn run_dir_of(resume: &Path) -> PathBuf {
    if !resume.join("trainer_state.json").is_file() {
        return resume.to_path_buf();
    }
    let parent = resume.parent().unwrap_or(Path::new(".")).to_path_buf();
    match parent.parent() {
        Some(top) if !parent.join(RUN_FILE).is_file() && top.join(RUN_FILE).is_file() => top.to_path_buf(),
        _ => parent,
    }
}

/// Takes the run directory (`run.json`, [`crate::train::run_dir`]): a fresh run
/// refuses a directory with checkpoints, a resume refuses changed settings or
/// data, `overwrite` starts over.
fn claim_run_dir(recipe: Recipe, cfg: &SftConfig, opts: &RunOptions) -> Result<()> {
    let how = match (opts.overwrite, opts.resume.is_some()) {
        (true, _) => Claim::Overwrite,
        (false, true) => Claim::Resume,
        (false, false) => Claim::Fresh,
    };
    claim(Path::new(&cfg.run.out_dir), &RunRecord::new(recipe.name(), cfg)?, how)?;
    Ok(())
}

/// The newest `checkpoint-*` in `dir` (or `dir` itself when it is one).
pub fn latest_checkpoint(dir: &Path) -> Result<PathBuf> {
    if dir.join("trainer_state.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    let mut c: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with("checkpoint-"))
                && p.join("trainer_state.json").is_file()
        })
        .collect();
    c.sort();
    c.pop().ok_or_else(|| arg_err!("resume", "no checkpoint-* with trainer_state.json in {}", dir.display()))
}

/// `opts.resume`: the trainer continues from the latest checkpoint of that run
/// (or from that checkpoint).
fn resume(trainer: &mut crate::train::sft::SftTrainer, opts: &RunOptions) -> Result<()> {
    if let Some(r) = &opts.resume {
        let ckpt = latest_checkpoint(r)?;
        trainer.load_checkpoint(&ckpt)?;
        eprintln!("resumed from {} at step {}", ckpt.display(), trainer.step);
    }
    Ok(())
}

/// The renderer's settings for this run: scene style and orbit range from
/// `[synth]`, options laid out as `order`.
fn synth_config(cfg: &SftConfig, order: OptionOrder) -> SynthConfig {
    SynthConfig {
        option_order: order,
        scene: cfg.synth.scene,
        max_yaw_deg: cfg.synth.max_yaw_deg,
        ..SynthConfig::default()
    }
}

/// The option layout of rendered questions: `synth.option_order`, else the one the
/// start model was pretrained with (`actial_pretrain.json` in its directory: the
/// tiny base, or a model `--recipe pretrain` wrote), else the paper's.
fn option_order(cfg: &SftConfig) -> OptionOrder {
    if let Some(o) = cfg.synth.option_order {
        return o;
    }
    let dir = if cfg.model.path == "tiny" { tiny_base_dir() } else { PathBuf::from(&cfg.model.path) };
    let info = dir.join("actial_pretrain.json");
    if let Ok(text) = std::fs::read_to_string(&info)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Ok(o) = serde_json::from_value::<OptionOrder>(v["option_order"].clone())
    {
        return o;
    }
    OptionOrder::Shuffled
}

/// Rendered viewpoint pairs of the tiny preset: `pairs` pairs into `dir`
/// (`images/`, `viewpoint.jsonl`, `sat.jsonl`); the viewpoint records and the
/// SAT-like (out-of-domain) ones.
fn render_sets(dir: &Path, pairs: u64, seed: u64, c: &SynthConfig) -> Result<(Vec<QaRecord>, Vec<QaRecord>)> {
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

/// The model `model.path` names (`tiny`, `tiny-random` or a directory), its
/// tokenizer and the tokenizer file.
fn load_model(cfg: &SftConfig) -> Result<(Qwen25Vl, QwenTokenizer, PathBuf)> {
    let m = crate::model::load::load_model(&cfg.model.path, cfg.model.init_seed)?;
    Ok((m.model, m.tokenizer, m.tokenizer_file))
}

/// Saves a trained model (f32) with its tokenizer and `actial_model.json`, which
/// tells `actial-eval --system auto` to prompt it with Actial's system prompt.
fn save_trained(model: &mut Qwen25Vl, dir: &Path, tok_json: &Path, recipe: Recipe) -> Result<()> {
    model.save(dir, DType::F32)?;
    std::fs::copy(tok_json, dir.join("tokenizer.json")).map_err(io_err(tok_json))?;
    let info = serde_json::json!({ "recipe": recipe.name(), "system": crate::data::qa::ACTIAL_SYSTEM });
    write_atomic(&dir.join("actial_model.json"), serde_json::to_string_pretty(&info).expect("JSON").as_bytes())
}

/// The device a run trains on, checked before any work starts. On CUDA the
/// run says where that path has been checked, and the plan must fit the
/// device's free memory: a run that cannot fit prints the plan, with the
/// cheapest changes, instead of failing deep inside an allocation
/// (`skip_fit_check` runs anyway: the plan assumes the config's limits).
pub fn training_device(recipe: Recipe, cfg: &SftConfig, opts: &RunOptions) -> Result<Device> {
    use crate::cuda::accounting::bytes;
    let d = Device::parse(&cfg.run.device)?;
    if let Some(w) = crate::cuda::unverified_warning(d) {
        eprintln!("{w}");
    }
    if opts.skip_fit_check {
        return Ok(d);
    }
    if d == Device::Cpu {
        // On the CPU: the weights and the optimizer state alone against the
        // memory the system has free (a 7B full fine-tune needs ~120 GB).
        let need = crate::train::plan::cpu_state_bytes(&model_dims(cfg)?, cfg);
        if let Some(avail) = mem_available()
            && need > avail
        {
            return Err(arg_err!(
                "actial-train",
                "on the CPU the weights and optimizer state alone need {} (f32 weights; gradients and AdamW moments \
                 for the {} trainable), {} is available; use LoRA (--set lora.enabled=true), freeze parts \
                 (train.*), or --device cuda; or pass --skip-fit-check to try anyway",
                bytes(need),
                if cfg.lora.enabled { "LoRA adapters" } else { "parameters" },
                bytes(avail)
            ));
        }
    }
    if let Some((free, total)) = crate::cuda::memory_info(d) {
        let dims = model_dims(cfg)?;
        let (sft, grpo) = recipe.phases();
        let peaks = crate::train::plan::phase_peaks(&dims, cfg, sft, grpo);
        if let Some((phase, peak)) = peaks.into_iter().find(|&(_, p)| p > free) {
            eprint!("{}", crate::train::plan::report(&dims, cfg, sft, grpo));
            return Err(arg_err!(
                "actial-train",
                "the plan above does not fit {d}: the {phase} needs {} at the config's limits (run.max_length, \
                 run.max_pixels, grpo.max_prompt_tokens, grpo.max_new_tokens), {} of {} is free; lower those \
                 limits or apply a change the plan lists, or pass --skip-fit-check to try anyway",
                bytes(peak),
                bytes(free),
                bytes(total)
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
pub fn model_dims(cfg: &SftConfig) -> Result<Qwen25VlConfig> {
    if is_tiny(cfg) {
        Ok(tiny_config(&tiny_tokenizer()?))
    } else {
        Qwen25VlConfig::from_file(&Path::new(&cfg.model.path).join("config.json"))
    }
}

/// The run's memory and time plan from config.json alone (no weights, no data):
/// peak device memory per phase, step time on A100 / H100 / H200, what to
/// change when it does not fit.
pub fn plan(recipe: Recipe, cfg: &SftConfig) -> Result<String> {
    let model = model_dims(cfg)?;
    let (sft, grpo) = recipe.phases();
    Ok(format!(
        "plan for model {} (recipe {}):\n{}",
        cfg.model.path,
        recipe.name(),
        crate::train::plan::report(&model, cfg, sft, grpo)
    ))
}

/// At the end of a CUDA run: what the device did, per phase (per-step figures
/// are in metrics.jsonl under "cuda").
fn print_device_accounting(stage: &str, acc: &Option<crate::cuda::accounting::Accounting>) {
    if let Some(a) = acc {
        eprintln!("{stage}: device accounting over the run (copies, waits, launches, allocations per phase):");
        eprint!("{}", a.table());
    }
}
