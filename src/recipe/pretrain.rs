//! `--recipe pretrain`: the tiny base model from random init (or an earlier
//! stage's model, `pretrain.init`): multiple-choice and single-photo skills,
//! never how the camera moved (`actial::data::pretrain`). Writes `model/`
//! (bf16, with `actial_pretrain.json`: what made it) and `report.json`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::full::eval_with_bar;
use super::{Recipe, RunOptions, claim_run_dir, is_tiny, render_sets, resume, synth_config, training_device};
use crate::data::pretrain::{PretrainMix, pretrain_records};
use crate::data::qa::{LETTERS, OptionOrder, QaRecord};
use crate::model::Qwen25Vl;
use crate::model::image::ImageProcessorConfig;
use crate::model::tiny::{tiny_config, tiny_dir, tiny_tokenizer};
use crate::train::config::SftConfig;
use crate::train::data::encode_records;
use crate::train::eval::{EvalItem, EvalReport, encode_prompts, evaluate};
use crate::train::sft::SftTrainer;
use crate::util::{io_err, write_atomic};
use crate::{DType, Result, arg_err};

/// What pretraining reached.
#[derive(Clone, Debug)]
pub struct PretrainReport {
    pub steps: usize,
    /// Training time (rendering included, final evaluation not).
    pub wall_s: f64,
    /// The periodic held-out checks (`pretrain.eval_every`).
    pub periodic: Vec<Value>,
    /// Held-out set name and its final evaluation.
    pub sets: Vec<(&'static str, EvalReport)>,
    /// The pretrained model (`out/model`).
    pub model_dir: PathBuf,
}

impl PretrainReport {
    /// The held-out table `actial-train` prints.
    pub fn markdown(&self) -> String {
        let mut md = String::from("| held-out set | items | accuracy | per kind |\n|---|---|---|---|\n");
        for (name, r) in &self.sets {
            let kinds: Vec<String> =
                r.per_kind().iter().map(|(k, (a, _, n))| format!("{k} {:.0}% ({n})", 100.0 * a)).collect();
            md += &format!("| {name} | {} | {:.1}% | {} |\n", r.items.len(), 100.0 * r.accuracy(), kinds.join(", "));
        }
        md
    }
}

/// Runs pretraining into `run.out_dir`.
pub fn pretrain(cfg: &SftConfig, opts: &RunOptions) -> Result<PretrainReport> {
    if !is_tiny(cfg) {
        return Err(arg_err!(
            "pretrain",
            "pretraining builds the tiny preset from random init; model.path must be \"tiny\""
        ));
    }
    if cfg.lora.enabled {
        return Err(arg_err!("pretrain", "pretraining from random init trains every weight; set lora.enabled=false"));
    }
    training_device(Recipe::Pretrain, cfg, opts)?;
    claim_run_dir(Recipe::Pretrain, cfg, opts)?;
    let p = &cfg.pretrain;
    let t_start = std::time::Instant::now();
    let out = PathBuf::from(&cfg.run.out_dir);
    let tok = tiny_tokenizer()?;
    let tok_json = tiny_dir().join("tokenizer.json");
    let model = match &p.init {
        Some(dir) => {
            let m = Qwen25Vl::from_dir(Path::new(dir))?;
            if m.config != tiny_config(&tok) {
                return Err(arg_err!("pretrain", "pretrain.init {dir}: not the tiny preset's config"));
            }
            eprintln!("pretraining from {dir}");
            m
        }
        None => Qwen25Vl::random(tiny_config(&tok), cfg.model.init_seed)?,
    };
    let mut proc = ImageProcessorConfig::for_vision(&model.config.vision);
    proc.max_pixels = cfg.run.max_pixels;
    let order = cfg.synth.option_order.unwrap_or_default();
    let synth = synth_config(cfg, order);
    let seed = cfg.run.seed;

    let pb = crate::util::progress_bar("render", p.photos + p.pairs + p.perspective_photos, "");
    let records = pretrain_records(&out.join("data/train"), seed, p.mix(), &synth, &|| pb.inc(1))?;
    pb.finish_and_clear();
    // Held out: other seeds for photos, text items and viewpoint pairs.
    let held_mix = PretrainMix {
        photos: 150,
        pairs: 100,
        text_items: 400,
        perspective_items: 100,
        perspective_photos: 60,
        reasoning_every: 0,
    };
    let held = pretrain_records(&out.join("data/heldout"), seed + 1, held_mix, &synth, &|| {})?;
    let (held_text, held_images): (Vec<QaRecord>, Vec<QaRecord>) = held
        .into_iter()
        .filter(|r| LETTERS.iter().any(|l| r.answer == l.to_string()))
        .partition(|r| r.images.is_empty());
    let (held_photo, held_pair): (Vec<QaRecord>, Vec<QaRecord>) =
        held_images.into_iter().partition(|r| r.images.len() == 1);
    // The viewpoint check uses the paper's shuffled options whatever the base's
    // own order (near chance = near 33%; with a fixed order a constant letter
    // would already score 50%).
    let shuffled = synth_config(cfg, OptionOrder::Shuffled);
    let viewpoint = render_sets(&out.join("data/heldout_viewpoint"), 150, seed + 1, &shuffled)?.0;
    eprintln!(
        "pretrain data: {} records from {} photos, {} two-photo items and {} text items",
        records.len(),
        p.photos,
        p.pairs,
        p.text_items
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
    resume(&mut trainer, opts)?;
    eprintln!(
        "pretrain: {} examples, {} parameters, {} steps of {} samples",
        trainer.examples.len(),
        trainer.trainable_params(),
        trainer.total_steps,
        cfg.run.global_batch
    );
    let every = p.eval_every;
    let quick = |e: &[EvalItem]| e[..e.len().min(96)].to_vec();
    let (quick_text, quick_photo, quick_pair) = (quick(&e_text), quick(&e_photo), quick(&e_pair));
    let periodic = RefCell::new(Vec::<Value>::new());
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
        periodic.borrow_mut().push(json!({"step": t.step, "text": a, "single_photo": b, "photo_of_two": c}));
        Ok(())
    })?;
    let wall_s = t_start.elapsed().as_secs_f64();
    let model = &trainer.model;
    let sets = vec![
        ("text-only multiple choice", eval_with_bar(model, &tok, &e_text, "eval text", 16)?),
        ("single photo multiple choice", eval_with_bar(model, &tok, &e_photo, "eval photos", 16)?),
        ("one photo of two, multiple choice", eval_with_bar(model, &tok, &e_pair, "eval photo pairs", 16)?),
        ("viewpoint (two photos, not trained)", eval_with_bar(model, &tok, &e_view, "eval viewpoint", 16)?),
    ];
    let model_dir = out.join("model");
    trainer.model.save(&model_dir, DType::BF16)?;
    let mix_json = json!({
        "photos": p.photos,
        "pairs": p.pairs,
        "text_items": p.text_items,
        "perspective_items": p.perspective_items,
        "perspective_photos": p.perspective_photos,
        "reasoning_every": p.reasoning_every,
    });
    let mut info = json!({
        "option_order": order,
        "synth_scene": cfg.synth.scene,
        "init": p.init,
        "steps": trainer.step,
        "seed": seed,
        "init_seed": cfg.model.init_seed,
        "wall_s": wall_s,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "held_out_accuracy": sets.iter().map(|(n, r)| (n.to_string(), json!(r.accuracy()))).collect::<serde_json::Map<_, _>>(),
    });
    extend(&mut info, &mix_json);
    write_atomic(
        &model_dir.join("actial_pretrain.json"),
        serde_json::to_string_pretty(&info).expect("JSON").as_bytes(),
    )?;
    std::fs::copy(&tok_json, model_dir.join("tokenizer.json")).map_err(io_err(&tok_json))?;
    let report = PretrainReport { steps: trainer.step, wall_s, periodic: periodic.into_inner(), sets, model_dir };
    let mut json_report = json!({
        "steps": report.steps,
        "wall_s": wall_s,
        "seed": seed,
        "init_seed": cfg.model.init_seed,
        "periodic": report.periodic,
        "final": report.sets.iter().map(|(n, r)| json!({"set": n, "items": r.items.len(), "accuracy": r.accuracy(), "per_kind": r.per_kind()})).collect::<Vec<_>>(),
    });
    extend(&mut json_report, &mix_json);
    write_atomic(&out.join("report.json"), serde_json::to_string_pretty(&json_report).expect("JSON").as_bytes())?;
    eprintln!("pretrained base (bf16) in {} after {:.0} s", report.model_dir.display(), wall_s);
    Ok(report)
}

/// Adds `extra`'s keys to the object `v`.
fn extend(v: &mut Value, extra: &Value) {
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}
