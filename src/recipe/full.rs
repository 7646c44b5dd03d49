//! `--recipe full`: evaluation of the start model, SFT with the hybrid
//! cold-start mix, evaluation, GRPO on broader (SAT-like) questions,
//! evaluation; one run directory with both stages' checkpoints and metrics,
//! plots, `eval/*.jsonl`, `report.md` and `report.json`. With the tiny preset
//! and no data this is the embedded default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::grpo::{StageDirs, as_grpo_prompts};
use super::sft::cold_start_mix;
use super::{
    Recipe, RunOptions, claim_run_dir, load_model, option_order, plots, print_device_accounting, render_sets,
    save_trained, synth_config, training_device,
};
use crate::data::formats::load_any;
use crate::data::qa::{ACTIAL_SYSTEM, LETTERS, QaRecord, with_instruction};
use crate::model::Qwen25Vl;
use crate::model::image::ImageProcessorConfig;
use crate::model::tokenizer::QwenTokenizer;
use crate::train::config::SftConfig;
use crate::train::data::encode_records;
use crate::train::eval::{EvalItem, EvalReport, encode_prompts, evaluate, wilson95};
use crate::train::grpo_trainer::GrpoMetrics;
use crate::train::sft::SftTrainer;
use crate::util::{io_err, write_atomic};
use crate::{Result, arg_err};

/// One model's evaluation in `full`.
#[derive(Clone, Debug)]
pub struct StageEval {
    /// Held-out viewpoint questions, letter-only prompt.
    pub in_domain: EvalReport,
    /// The same questions asked for the reasoning (`data.cot_instruction`).
    pub in_domain_reasoning: Option<EvalReport>,
    /// Held-out SAT-like questions, asked as GRPO asks (`grpo.instruction`).
    pub out_of_domain: EvalReport,
}

impl StageEval {
    /// Each evaluated set with its file-name stem.
    pub fn sets(&self) -> Vec<(&'static str, &EvalReport)> {
        let mut v = vec![("in_domain", &self.in_domain)];
        v.extend(self.in_domain_reasoning.as_ref().map(|r| ("in_domain_reasoning", r)));
        v.push(("out_of_domain", &self.out_of_domain));
        v
    }
}

/// What answering without looking scores on a held-out set (percent).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Baselines {
    pub items: usize,
    /// Picking one of each question's options at random, on average.
    pub uniform_guess: f64,
    /// Answering the most frequent correct letter every time.
    pub best_constant: f64,
}

impl Baselines {
    fn of(records: &[QaRecord], items: &[EvalItem]) -> Baselines {
        let options: f64 = records.iter().map(|r| 1.0 / option_count(&r.prompt).max(1) as f64).sum();
        Baselines {
            items: items.len(),
            uniform_guess: 100.0 * options / records.len().max(1) as f64,
            best_constant: best_constant(items),
        }
    }
}

/// The options a rendered question lists (`A: … B: … C: …`).
fn option_count(prompt: &str) -> usize {
    LETTERS.iter().take_while(|l| prompt.contains(&format!(" {l}: ")) || prompt.contains(&format!(">{l}: "))).count()
}

/// Per question kind, as many items of each correct letter (the fewest any
/// letter has), at most `cap` per kind (0: no cap), in the rendered order: on
/// the result no constant letter scores above the others.
pub fn balanced(records: Vec<QaRecord>, cap: usize) -> Vec<QaRecord> {
    let mut by: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in &records {
        *by.entry((r.kind.as_str(), r.answer.as_str())).or_default() += 1;
    }
    let mut per_letter: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (&(kind, _), &n) in &by {
        let e = per_letter.entry(kind).or_insert((usize::MAX, 0));
        *e = (e.0.min(n), e.1 + 1);
    }
    let quota: BTreeMap<String, usize> = per_letter
        .into_iter()
        .map(|(k, (least, letters))| (k.to_string(), if cap == 0 { least } else { least.min(cap / letters) }))
        .collect();
    let mut taken: BTreeMap<(String, String), usize> = BTreeMap::new();
    records
        .into_iter()
        .filter(|r| {
            let t = taken.entry((r.kind.clone(), r.answer.clone())).or_default();
            *t += 1;
            *t <= quota[&r.kind]
        })
        .collect()
}

/// What the full recipe measured: the base, SFT and SFT + GRPO rows.
#[derive(Clone, Debug)]
pub struct FullReport {
    /// (model, its evaluation), in order: base, SFT, SFT + GRPO.
    pub rows: Vec<(String, StageEval)>,
    /// The bars to beat on each held-out set.
    pub in_domain_baselines: Baselines,
    pub out_of_domain_baselines: Baselines,
    pub grpo_last: Option<GrpoMetrics>,
    pub wall_s: f64,
    pub out_dir: PathBuf,
}

impl FullReport {
    /// The table `report.md` holds (and `actial-train` prints): every
    /// accuracy with its 95% interval, the bars to beat, and what GRPO changed
    /// per out-of-domain question kind.
    pub fn markdown(&self) -> String {
        let acc = |r: &EvalReport| {
            let (lo, hi) = r.accuracy_ci95();
            format!("{:.1}% [{:.1}, {:.1}]", 100.0 * r.accuracy(), 100.0 * lo, 100.0 * hi)
        };
        let fmt = |r: &EvalReport| format!("{:.1}%", 100.0 * r.format_rate());
        let mut md = String::from(
            "| model | in-domain accuracy (viewpoint, letter) | in-domain accuracy, asked to reason | its format | out-of-domain accuracy (SAT-like) | out-of-domain format |\n|---|---|---|---|---|---|\n",
        );
        for (name, e) in &self.rows {
            let (ra, rf) = match &e.in_domain_reasoning {
                Some(r) => (acc(r), fmt(r)),
                None => ("-".into(), "-".into()),
            };
            md += &format!(
                "| {name} | {} | {ra} | {rf} | {} | {} |\n",
                acc(&e.in_domain),
                acc(&e.out_of_domain),
                fmt(&e.out_of_domain)
            );
        }
        let (i, o) = (&self.in_domain_baselines, &self.out_of_domain_baselines);
        md += &format!(
            "\n[95% intervals, Wilson.] {} in-domain items (uniform guess {:.1}%, best constant letter {:.1}%), {} out-of-domain items (uniform guess {:.1}%, best constant letter {:.1}%); greedy decoding, Actial system prompt.\n",
            i.items, i.uniform_guess, i.best_constant, o.items, o.uniform_guess, o.best_constant
        );
        if let [.., (_, sft), (_, grpo)] = &self.rows[..] {
            md += "\n| out-of-domain kind | items | SFT | SFT + GRPO | change |\n|---|---|---|---|---|\n";
            let after = grpo.out_of_domain.per_kind();
            // Each with its interval: a kind of a few dozen items moves by chance alone.
            let with_ci = |p: f64, n: usize| {
                let (lo, hi) = wilson95((p * n as f64).round() as usize, n);
                format!("{:.1}% [{:.1}, {:.1}]", 100.0 * p, 100.0 * lo, 100.0 * hi)
            };
            for (kind, (a, _, n)) in sft.out_of_domain.per_kind() {
                let b = after.get(&kind).map_or(0.0, |x| x.0);
                md += &format!("| {kind} | {n} | {} | {} | {:+.1} |\n", with_ci(a, n), with_ci(b, n), 100.0 * (b - a));
            }
        }
        md
    }

    /// `report.json`: every row's accuracy and format rate, per question kind.
    pub fn to_json(&self) -> Value {
        let per_kind = |r: &EvalReport| {
            r.per_kind()
                .into_iter()
                .map(|(k, (a, f, n))| {
                    let (lo, hi) = wilson95((a * n as f64).round() as usize, n);
                    (k, json!({"accuracy": a, "accuracy_ci95": [lo, hi], "format": f, "items": n}))
                })
                .collect::<serde_json::Map<_, _>>()
        };
        let summary = |r: &EvalReport| {
            let (lo, hi) = r.accuracy_ci95();
            json!({"accuracy": r.accuracy(), "accuracy_ci95": [lo, hi], "format": r.format_rate(), "per_kind": per_kind(r)})
        };
        json!({
            "wall_s": self.wall_s,
            "sets": {"in_domain": self.in_domain_baselines, "out_of_domain": self.out_of_domain_baselines},
            "rows": self.rows.iter().map(|(n, e)| json!({
                "model": n,
                "in_domain": summary(&e.in_domain),
                "in_domain_reasoning": e.in_domain_reasoning.as_ref().map(summary),
                "out_of_domain": summary(&e.out_of_domain),
            })).collect::<Vec<_>>(),
            "grpo_last": self.grpo_last,
        })
    }
}

/// The share (percent) of the most frequent answer in `items`.
fn best_constant(items: &[EvalItem]) -> f64 {
    let mut n = BTreeMap::<&str, usize>::new();
    for i in items {
        *n.entry(i.answer.as_str()).or_default() += 1;
    }
    n.values().max().map_or(0.0, |&m| 100.0 * m as f64 / items.len().max(1) as f64)
}

/// The held-out sets every stage is evaluated on, encoded once.
struct HeldOut {
    in_domain: Vec<EvalItem>,
    in_domain_reasoning: Option<Vec<EvalItem>>,
    out_of_domain: Vec<EvalItem>,
}

impl HeldOut {
    fn encode(
        cfg: &SftConfig,
        view: &[QaRecord],
        sat: &[QaRecord],
        tok: &QwenTokenizer,
        proc: &ImageProcessorConfig,
    ) -> Result<HeldOut> {
        let (system, max) = (Some(ACTIAL_SYSTEM), cfg.grpo.max_prompt_tokens);
        let in_domain = encode_prompts(view, tok, proc, system, max)?.0;
        // Out of domain is asked the way GRPO asks (`grpo.instruction`).
        let out_of_domain = encode_prompts(&as_grpo_prompts(cfg, sat), tok, proc, system, max)?.0;
        // In domain a second time, asked to reason the way the CoT items were
        // (`data.cot_instruction`): whether the pseudo-CoT route answers better
        // than the bare letter. Without that instruction both prompts would be the same.
        let in_domain_reasoning = match &cfg.data.cot_instruction {
            Some(i) => {
                let asked: Vec<QaRecord> =
                    view.iter().map(|r| QaRecord { prompt: with_instruction(&r.prompt, i), ..r.clone() }).collect();
                Some(encode_prompts(&asked, tok, proc, system, max)?.0)
            }
            None => None,
        };
        Ok(HeldOut { in_domain, in_domain_reasoning, out_of_domain })
    }

    /// Greedy evaluation of `model` on every set, with a progress bar each.
    fn evaluate(&self, model: &Qwen25Vl, tok: &QwenTokenizer, stage: &str, max_new: usize) -> Result<StageEval> {
        let a = eval_with_bar(model, tok, &self.in_domain, &format!("eval {stage} in-domain"), max_new)?;
        let r = match &self.in_domain_reasoning {
            Some(items) => {
                Some(eval_with_bar(model, tok, items, &format!("eval {stage} in-domain, reasoning"), max_new)?)
            }
            None => None,
        };
        let b = eval_with_bar(model, tok, &self.out_of_domain, &format!("eval {stage} out-of-domain"), max_new)?;
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
    }
}

/// Greedy evaluation of `items` (32 prompts at a time) with a progress bar.
pub(super) fn eval_with_bar(
    model: &Qwen25Vl,
    tok: &QwenTokenizer,
    items: &[EvalItem],
    what: &str,
    max_new: usize,
) -> Result<EvalReport> {
    let pb = crate::util::progress_bar(what, items.len() as u64, "");
    let r = evaluate(model, tok, items, max_new, 32, &mut |n| pb.set_position(n as u64))?;
    pb.finish_and_clear();
    Ok(r)
}

/// The SFT records, the GRPO records and the held-out viewpoint and SAT-like
/// records: rendered (tiny preset, no data), else read from `data.train` and
/// `grpo.data` with the last 5% of each held out.
type Sets = (Vec<QaRecord>, Vec<QaRecord>, Vec<QaRecord>, Vec<QaRecord>);

fn data_sets(cfg: &SftConfig, out: &Path) -> Result<Sets> {
    if cfg.data.train.is_empty() {
        let pairs = cfg.synth.pairs as u64;
        eprintln!("rendering {pairs} training pairs and {} held-out pairs", cfg.synth.heldout_pairs);
        let synth = synth_config(cfg, option_order(cfg));
        let (view, sat) = render_sets(&out.join("data/train"), pairs, cfg.run.seed, &synth)?;
        let heldout_seed = cfg.run.seed + 1_000_003;
        let (hv, hs) = render_sets(&out.join("data/heldout"), cfg.synth.heldout_pairs as u64, heldout_seed, &synth)?;
        let (hv, hs) = (balanced(hv, cfg.synth.heldout_per_kind), balanced(hs, 0));
        return Ok((view, sat, hv, hs));
    }
    let (mut sft, mut grpo) = (Vec::new(), Vec::new());
    for f in &cfg.data.train {
        sft.extend(load_any(Path::new(f), false)?.records);
    }
    for f in &cfg.grpo.data {
        grpo.extend(load_any(Path::new(f), false)?.records);
    }
    // Real runs evaluate with actial-eval; hold out the last 5% of each set here.
    let cut = |r: &mut Vec<QaRecord>| r.split_off(r.len() - r.len() / 20);
    let (hv, hs) = (cut(&mut sft), cut(&mut grpo));
    Ok((sft, grpo, hv, hs))
}

/// Runs the whole recipe into `run.out_dir` and writes its report.
pub fn full(cfg: &SftConfig, opts: &RunOptions) -> Result<FullReport> {
    let t0 = std::time::Instant::now();
    training_device(Recipe::Full, cfg, opts)?;
    claim_run_dir(Recipe::Full, cfg, opts)?;
    if cfg.data.train.is_empty() != cfg.grpo.data.is_empty() {
        return Err(arg_err!(
            "full",
            "give both data.train (SFT) and grpo.data (GRPO) files, or neither (rendered synthetic data)"
        ));
    }
    let out = PathBuf::from(&cfg.run.out_dir);
    let (model, tok, tok_json) = load_model(cfg)?;
    let mut proc = ImageProcessorConfig::for_vision(&model.config.vision);
    proc.max_pixels = cfg.run.max_pixels;

    let (sft_records, grpo_records, held_view, held_sat) = data_sets(cfg, &out)?;
    let held = HeldOut::encode(cfg, &held_view, &held_sat, &tok, &proc)?;
    let max_new = cfg.grpo.max_new_tokens;
    let mut rows: Vec<(String, StageEval)> = Vec::new();
    rows.push(("base".into(), held.evaluate(&model, &tok, "base", max_new)?));

    // Stage 1: SFT with the hybrid cold-start mix.
    let mixed = cold_start_mix(cfg, &sft_records, cfg.data.cot_fraction.unwrap_or(0.1));
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
    plots::sft(&sft.history, &out.join("plots"))?;
    print_device_accounting("sft", &sft.device_accounting);
    let mut model = sft.model;
    model.merge_lora()?;
    rows.push(("SFT (hybrid cold-start)".into(), held.evaluate(&model, &tok, "SFT", max_new)?));

    // Stage 2: GRPO.
    let prompts = super::grpo::prompts(cfg, &grpo_records, &tok, &model)?;
    let dirs = StageDirs { out: &out.join("grpo"), plots: &out.join("plots"), resume: None };
    let (mut model, grpo_hist) = super::grpo::run_stage(cfg, model, prompts, &tok, &tok_json, &dirs)?;
    rows.push(("SFT + GRPO".into(), held.evaluate(&model, &tok, "SFT+GRPO", max_new)?));
    save_trained(&mut model, &out.join("final"), &tok_json, Recipe::Full)?;

    let report = FullReport {
        rows,
        in_domain_baselines: Baselines::of(&held_view, &held.in_domain),
        out_of_domain_baselines: Baselines::of(&held_sat, &held.out_of_domain),
        grpo_last: grpo_hist.last().cloned(),
        wall_s: t0.elapsed().as_secs_f64(),
        out_dir: out.clone(),
    };
    write_report(&report)?;
    Ok(report)
}

/// `eval/{base,sft,grpo}_{set}.jsonl` (every item's answer), `report.md`, `report.json`.
fn write_report(report: &FullReport) -> Result<()> {
    let out = &report.out_dir;
    let eval_dir = out.join("eval");
    std::fs::create_dir_all(&eval_dir).map_err(io_err(&eval_dir))?;
    for (i, (_, e)) in report.rows.iter().enumerate() {
        for (set, r) in e.sets() {
            let lines: String = r.items.iter().map(|it| serde_json::to_string(it).expect("JSON") + "\n").collect();
            write_atomic(&eval_dir.join(format!("{}_{set}.jsonl", ["base", "sft", "grpo"][i])), lines.as_bytes())?;
        }
    }
    write_atomic(&out.join("report.md"), report.markdown().as_bytes())?;
    write_atomic(&out.join("report.json"), serde_json::to_string_pretty(&report.to_json()).expect("JSON").as_bytes())
}
