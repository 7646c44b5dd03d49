//! Training with the Actial recipe: parses arguments, runs one recipe of
//! `actial::recipe` and prints its report.
//!
//!   actial-train [--recipe full|sft|grpo|pretrain] [--preset NAME] [--config run.toml]
//!                [--set section.key=value]... [--data FILE]... [--out DIR]
//!                [--resume DIR | --overwrite] [--merge-lora] [--plan]
//!
//! With no arguments: the embedded default (`--recipe full` with
//! assets/presets/embedded.toml: the tiny base, rendered viewpoint pairs, SFT with
//! the hybrid cold-start mix, GRPO on SAT-like questions, a report table).

use std::path::PathBuf;
use std::process::ExitCode;

use actial::Result;
use actial::recipe::{ConfigSource, Recipe, RunOptions, load_config};
use clap::{Args as ClapArgs, Parser, ValueEnum};

// mimalloc reuses freed buffers instead of returning them to the OS: the CPU path
// allocates every activation, and glibc's fresh mmaps cost page faults per step
// (~30% of a tiny-model training step; docs/ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RecipeArg {
    Full,
    Sft,
    Grpo,
    /// The tiny base model: multiple-choice and single-photo skills from random init.
    Pretrain,
}

#[derive(Parser)]
#[command(version, about = "Train a Qwen2.5-VL model with the Actial recipe")]
struct Args {
    #[arg(long, value_enum, default_value_t = RecipeArg::Full)]
    recipe: RecipeArg,
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
    #[command(flatten)]
    pretrain: PretrainArgs,
    /// Print the run's plan (peak device memory per phase, step time on A100 /
    /// H100 / H200, what to change when it does not fit) and exit: needs only
    /// the model's config.json, no weights, no data.
    #[arg(long)]
    plan: bool,
    /// Print the run's whole config (preset, file, --set and shortcuts
    /// applied) as TOML and exit: a file `--config` takes back unchanged.
    #[arg(long)]
    print_config: bool,
    /// On CUDA, start even when the plan says the run does not fit the
    /// device's free memory (the plan assumes the config's length limits).
    #[arg(long)]
    skip_fit_check: bool,
}

/// Shortcuts for `--set pretrain.KEY=VALUE` (`[pretrain]` in a config;
/// defaults in assets/presets/paper.toml).
#[derive(ClapArgs)]
#[command(next_help_heading = "Pretraining (--recipe pretrain)")]
struct PretrainArgs {
    /// Rendered photos (each gives its questions and a description).
    #[arg(long)]
    photos: Option<u64>,
    /// Two-photo items (questions about one photo of two; never how the camera moved).
    #[arg(long)]
    pairs: Option<u64>,
    /// Text-only items (multiple choice and copy exercises).
    #[arg(long)]
    text_items: Option<u64>,
    /// Text-only perspective items (a camera's move told in words).
    #[arg(long)]
    perspective_items: Option<u64>,
    /// Photos asked from the camera's and the object's perspective.
    #[arg(long)]
    perspective_photos: Option<u64>,
    /// Every N-th multiple-choice item asks for reasoning (0: none).
    #[arg(long)]
    reasoning_every: Option<u64>,
    /// Evaluate a held-out sample every N steps (0: only at the end).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Start from this tiny model directory instead of random init.
    #[arg(long)]
    init: Option<PathBuf>,
}

impl Args {
    /// Where the run's config comes from; the pretraining flags are shortcuts
    /// for `--set pretrain.KEY=VALUE` (given flags only, so a config file's
    /// `[pretrain]` values stand unless a flag overrides them).
    fn config_source(&self) -> ConfigSource {
        let mut overrides = Vec::new();
        let p = &self.pretrain;
        for (key, v) in [
            ("photos", p.photos),
            ("pairs", p.pairs),
            ("text_items", p.text_items),
            ("perspective_items", p.perspective_items),
            ("perspective_photos", p.perspective_photos),
            ("reasoning_every", p.reasoning_every),
            ("eval_every", p.eval_every),
        ] {
            if let Some(v) = v {
                overrides.push(format!("pretrain.{key}={v}"));
            }
        }
        if let Some(dir) = &p.init {
            overrides.push(format!("pretrain.init={:?}", dir.display().to_string()));
        }
        overrides.extend(self.overrides.iter().cloned());
        ConfigSource {
            preset: self.preset.clone(),
            file: self.config.clone(),
            overrides,
            data: self.data.clone(),
            out: self.out.clone(),
            device: self.device.clone(),
            resume: self.resume.clone(),
        }
    }

    fn run_options(&self) -> RunOptions {
        RunOptions {
            resume: self.resume.clone(),
            overwrite: self.overwrite,
            merge_lora: self.merge_lora,
            skip_fit_check: self.skip_fit_check,
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let recipe = match args.recipe {
        RecipeArg::Full => Recipe::Full,
        RecipeArg::Sft => Recipe::Sft,
        RecipeArg::Grpo => Recipe::Grpo,
        RecipeArg::Pretrain => Recipe::Pretrain,
    };
    let cfg = load_config(recipe, &args.config_source())?;
    if args.print_config {
        print!("{}", toml::to_string(&cfg).map_err(|e| actial::arg_err!("print-config", "{e}"))?);
        return Ok(());
    }
    if args.plan {
        print!("{}", actial::recipe::plan(recipe, &cfg)?);
        return Ok(());
    }
    let opts = args.run_options();
    match recipe {
        Recipe::Sft => {
            actial::recipe::sft::sft(&cfg, &opts)?;
        }
        Recipe::Grpo => {
            actial::recipe::grpo::grpo(&cfg, &opts)?;
        }
        Recipe::Full => {
            let report = actial::recipe::full::full(&cfg, &opts)?;
            println!("\n{}", report.markdown());
            eprintln!("done in {:.0} s: {}", report.wall_s, report.out_dir.display());
        }
        Recipe::Pretrain => {
            let report = actial::recipe::pretrain::pretrain(&cfg, &opts)?;
            println!("\n{}", report.markdown());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    actial::util::keep_freed_memory();
    let args = Args::parse();
    let res = run(&args);
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
