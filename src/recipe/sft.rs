//! `--recipe sft`: stage 1 alone. SFT on `data.train` (with the hybrid
//! cold-start mix built on load when `data.cot_fraction` is set); with the tiny
//! preset and no data, on rendered viewpoint pairs mixed 9:1 with pseudo-CoTs.

use std::path::PathBuf;

use super::{
    RunOptions, claim_run_dir, is_tiny, load_model, option_order, plots, print_device_accounting, render_sets, resume,
    save_trained, synth_config, training_device,
};
use crate::data::formats::load_any;
use crate::data::mix::{MixConfig, mix};
use crate::data::qa::{ACTIAL_SYSTEM, QaRecord};
use crate::model::image::ImageProcessorConfig;
use crate::train::config::SftConfig;
use crate::train::data::encode_records;
use crate::train::sft::{SftTrainer, StepMetrics};
use crate::util::io_err;
use crate::{DType, Result, arg_err};

use super::Recipe;

/// What an SFT run did.
#[derive(Clone, Debug)]
pub struct SftReport {
    /// One entry per step this run trained (a resumed run: the steps after the resume).
    pub history: Vec<StepMetrics>,
    /// The run directory (checkpoints, metrics.jsonl, tb/, plots/).
    pub out_dir: PathBuf,
    /// With `merge_lora`: adapters merged, and where the merged model is.
    pub merged: Option<(usize, PathBuf)>,
}

impl SftReport {
    /// Training tokens per second over the run.
    pub fn tokens_per_s(&self) -> f64 {
        let h = &self.history;
        h.iter().map(|m| m.tokens as f64).sum::<f64>() / h.iter().map(|m| m.elapsed_s).sum::<f64>()
    }
}

/// The records SFT trains on: `data.train`'s files, or (tiny preset, no files)
/// `synth.pairs` rendered pairs in `out/data`; then the cold-start mix.
fn training_records(cfg: &SftConfig, out: &std::path::Path) -> Result<Vec<QaRecord>> {
    let mut records = Vec::new();
    let mut cot_fraction = cfg.data.cot_fraction;
    if cfg.data.train.is_empty() {
        if !is_tiny(cfg) {
            return Err(arg_err!("sft", "no training data: set data.train or pass --data FILE"));
        }
        eprintln!(
            "no data given: rendering {} synthetic viewpoint pairs into {}",
            cfg.synth.pairs,
            out.join("data").display()
        );
        let synth = synth_config(cfg, option_order(cfg));
        records = render_sets(&out.join("data"), cfg.synth.pairs as u64, cfg.run.seed, &synth)?.0;
        cot_fraction = cot_fraction.or(Some(0.1));
    }
    for f in &cfg.data.train {
        let rep = load_any(std::path::Path::new(f), false)?;
        eprintln!("{f}: {}", rep.summary());
        records.extend(rep.records);
    }
    match cot_fraction {
        Some(f) => Ok(cold_start_mix(cfg, &records, f)),
        None => Ok(records),
    }
}

/// The hybrid cold-start mix of `records` with a `cot_fraction` share of
/// pseudo-CoT items (`data.cot_*`).
pub(super) fn cold_start_mix(cfg: &SftConfig, records: &[QaRecord], cot_fraction: f64) -> Vec<QaRecord> {
    let mc = MixConfig {
        cot_fraction,
        cot_unique: cfg.data.cot_unique,
        system: ACTIAL_SYSTEM.into(),
        seed: cfg.run.seed,
        cot_instruction: cfg.data.cot_instruction.clone(),
        cot_style: cfg.data.cot_style,
    };
    let (mixed, rep) = mix(records, &Default::default(), &mc);
    eprintln!(
        "hybrid cold-start mix: {} letter items + {} CoT slots ({} unique CoTs)",
        rep.letters, rep.cot_slots, rep.cot_unique
    );
    mixed
}

/// Runs stage 1 into `run.out_dir`: checkpoints, metrics, TensorBoard events,
/// plots; with `merge_lora` also `merged/`.
pub fn sft(cfg: &SftConfig, opts: &RunOptions) -> Result<SftReport> {
    training_device(Recipe::Sft, cfg, opts)?;
    claim_run_dir(Recipe::Sft, cfg, opts)?;
    let out = PathBuf::from(&cfg.run.out_dir);
    let (model, tok, tok_json) = load_model(cfg)?;
    let mut proc = ImageProcessorConfig::for_vision(&model.config.vision);
    proc.max_pixels = cfg.run.max_pixels;

    let records = training_records(cfg, &out)?;
    let enc = encode_records(&records, &tok, &proc, cfg.data.system.as_deref(), cfg.run.max_length)?;
    for (reason, n) in &enc.skipped {
        eprintln!("  {n} samples skipped: {reason}");
    }
    if is_tiny(cfg) && cfg.lora.enabled {
        // Adapters need their base: keep the tiny base loadable by other tools.
        let mut base = load_model(cfg)?.0;
        base.save(&out.join("base"), DType::F32)?;
        std::fs::copy(&tok_json, out.join("base/tokenizer.json")).map_err(io_err(&tok_json))?;
    }
    let mut trainer = SftTrainer::new(cfg.clone(), model, enc.examples)?;
    resume(&mut trainer, opts)?;
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
    plots::sft(&trainer.history, &out.join("plots"))?;
    let mut report = SftReport { history: trainer.history.clone(), out_dir: out.clone(), merged: None };
    if let (Some(first), Some(last)) = (report.history.first(), report.history.last()) {
        eprintln!(
            "done: loss {:.4} -> {:.4} over {} steps, {:.0} tokens/s, peak memory {:.0} MB; checkpoints and plots in {}",
            first.loss,
            last.loss,
            report.history.len(),
            report.tokens_per_s(),
            last.peak_rss_mb,
            out.display()
        );
    }
    print_device_accounting("sft", &trainer.device_accounting);
    if opts.merge_lora {
        let n = trainer.model.merge_lora()?;
        let dir = out.join("merged");
        save_trained(&mut trainer.model, &dir, &tok_json, Recipe::Sft)?;
        eprintln!("merged {n} LoRA adapters into {}", dir.display());
        report.merged = Some((n, dir));
    }
    Ok(report)
}
