//! `--recipe grpo`: stage 2 alone, from `model.path` (an SFT output), on
//! `grpo.data`; with the tiny preset and no data, on rendered SAT-like questions.
//! [`run_stage`] is the stage both this recipe and `full` run.

use std::path::{Path, PathBuf};

use super::{
    Recipe, RunOptions, claim_run_dir, is_tiny, latest_checkpoint, load_model, option_order, plots,
    print_device_accounting, render_sets, save_trained, synth_config, training_device,
};
use crate::data::formats::load_any;
use crate::data::qa::{QaRecord, with_instruction};
use crate::model::Qwen25Vl;
use crate::model::image::ImageProcessorConfig;
use crate::model::tokenizer::QwenTokenizer;
use crate::train::config::SftConfig;
use crate::train::eval::{EvalItem, encode_prompts};
use crate::train::grpo_trainer::{GrpoMetrics, GrpoTrainer};
use crate::{Result, arg_err};

/// What a GRPO run did.
#[derive(Clone, Debug)]
pub struct GrpoReport {
    /// One entry per step this run trained.
    pub history: Vec<GrpoMetrics>,
    /// The trained policy, LoRA merged (`out/final`).
    pub policy_dir: PathBuf,
}

/// `records` as GRPO asks them: ending with `grpo.instruction` where one is set.
pub(super) fn as_grpo_prompts(cfg: &SftConfig, records: &[QaRecord]) -> Vec<QaRecord> {
    match &cfg.grpo.instruction {
        Some(i) => records.iter().map(|r| QaRecord { prompt: with_instruction(&r.prompt, i), ..r.clone() }).collect(),
        None => records.to_vec(),
    }
}

/// GRPO prompts from records: images downscaled to `grpo.max_image_pixels`,
/// the GRPO system prompt, over-long prompts skipped and counted.
pub(super) fn prompts(
    cfg: &SftConfig,
    records: &[QaRecord],
    tok: &QwenTokenizer,
    model: &Qwen25Vl,
) -> Result<Vec<EvalItem>> {
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

/// Where a stage writes: its run directory, the plots, and what it resumes from.
#[derive(Clone, Copy)]
pub(super) struct StageDirs<'a> {
    pub out: &'a Path,
    pub plots: &'a Path,
    pub resume: Option<&'a Path>,
}

/// Runs stage 2 on `model` into `dirs.out`; returns the trained policy (LoRA
/// merged) and the metrics of every step.
pub(super) fn run_stage(
    cfg: &SftConfig,
    model: Qwen25Vl,
    prompts: Vec<EvalItem>,
    tok: &QwenTokenizer,
    tok_json: &Path,
    dirs: &StageDirs,
) -> Result<(Qwen25Vl, Vec<GrpoMetrics>)> {
    let StageDirs { out, plots: plot_dir, resume } = *dirs;
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
        cfg.grpo_lr()
    );
    trainer.run(out, Some(tok_json), true)?;
    let h = trainer.history.clone();
    plots::grpo(&h, plot_dir)?;
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

/// Runs stage 2 into `run.out_dir`; the policy (LoRA merged) goes to `final/`.
pub fn grpo(cfg: &SftConfig, opts: &RunOptions) -> Result<GrpoReport> {
    training_device(Recipe::Grpo, cfg, opts)?;
    claim_run_dir(Recipe::Grpo, cfg, opts)?;
    let out = PathBuf::from(&cfg.run.out_dir);
    let (model, tok, tok_json) = load_model(cfg)?;
    let mut records = Vec::new();
    if cfg.grpo.data.is_empty() {
        if !is_tiny(cfg) {
            return Err(arg_err!("grpo", "no prompts: set grpo.data"));
        }
        eprintln!("no data given: rendering 256 synthetic pairs for SAT-like prompts");
        records = render_sets(&out.join("data"), 256, cfg.run.seed, &synth_config(cfg, option_order(cfg)))?.1;
    }
    for f in &cfg.grpo.data {
        let rep = load_any(Path::new(f), false)?;
        eprintln!("{f}: {}", rep.summary());
        records.extend(rep.records);
    }
    let prompts = prompts(cfg, &records, &tok, &model)?;
    let dirs = StageDirs { out: &out, plots: &out.join("plots"), resume: opts.resume.as_deref() };
    let (mut model, history) = run_stage(cfg, model, prompts, &tok, &tok_json, &dirs)?;
    let policy_dir = out.join("final");
    save_trained(&mut model, &policy_dir, &tok_json, Recipe::Grpo)?;
    eprintln!("policy (LoRA merged) in {}", policy_dir.display());
    Ok(GrpoReport { history, policy_dir })
}
