//! AdamW state over a model's trainable parameters, the optimizer step (global
//! norm, clipping, update) and checkpoints (weights or PEFT adapter + moments +
//! trainer state) shared by the SFT and GRPO trainers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::config::{LoraSection, OptimSection};
use crate::error::{Error, Result};
use crate::model::{Qwen25Vl, weights};
use crate::ops::{self, AdamSlot, AdamW};
use crate::tensor::{DType, Tensor};

pub use crate::model::weights::peft_key;

/// AdamW first and second moments by parameter name.
pub struct AdamWState {
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
}

impl AdamWState {
    /// Zero moments for every trainable parameter of `model`.
    pub fn new(model: &mut Qwen25Vl) -> Result<AdamWState> {
        let mut shapes = Vec::new();
        model.visit(&mut |n, p| {
            if p.trainable() {
                shapes.push((n, p.value.dims().to_vec(), p.value.device()));
            }
        });
        let (mut m, mut v) = (BTreeMap::new(), BTreeMap::new());
        for (n, d, dev) in shapes {
            m.insert(n.clone(), Tensor::zeros(d.clone(), DType::F32, dev)?);
            v.insert(n, Tensor::zeros(d, DType::F32, dev)?);
        }
        Ok(AdamWState { m, v })
    }

    /// Trainable parameter count.
    pub fn numel(&self) -> usize {
        self.m.values().map(Tensor::numel).sum()
    }

    /// Global gradient norm, clipping to `o.max_grad_norm`, then the AdamW update
    /// number `step` (1-based) at `lr`. Returns the norm before clipping; a
    /// non-finite norm is an error naming `what` and the step, with nothing updated.
    pub fn step(
        &mut self,
        model: &mut Qwen25Vl,
        o: &OptimSection,
        lr: f32,
        step: u64,
        what: &'static str,
    ) -> Result<f64> {
        let _r = crate::cuda::nvtx::range(crate::cuda::nvtx::Phase::Optimizer);
        let mut grads = Vec::new();
        model.visit(&mut |_, p| {
            if let Some(g) = &p.grad {
                grads.push(g.clone());
            }
        });
        let refs: Vec<&Tensor> = grads.iter().collect();
        let grad_norm = ops::grad_norm(&refs)?;
        if !grad_norm.is_finite() {
            return Err(crate::arg_err!(
                what,
                "step {step}: gradient norm is {grad_norm}; stopping (the last checkpoint is intact)"
            ));
        }
        drop(grads);
        let max = o.max_grad_norm;
        let clip = if max > 0.0 { crate::cpu::optim::clip_coef(grad_norm, max) } else { 1.0 };
        let h = AdamW { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weight_decay: o.weight_decay };
        // Every trainable tensor in one `adamw_step` call: one multi-tensor launch
        // on CUDA, the same per-tensor loop as before on the CPU.
        let mut ms: std::collections::HashMap<&str, &mut Tensor> =
            self.m.iter_mut().map(|(k, t)| (k.as_str(), t)).collect();
        let mut vs: std::collections::HashMap<&str, &mut Tensor> =
            self.v.iter_mut().map(|(k, t)| (k.as_str(), t)).collect();
        let mut slots = Vec::new();
        for (name, p) in model.params_mut() {
            let crate::model::Param { value, grad: Some(grad) } = p else { continue };
            let (Some(m), Some(v)) = (ms.remove(name.as_str()), vs.remove(name.as_str())) else {
                return Err(crate::arg_err!(what, "no optimizer state for {name}"));
            };
            slots.push(AdamSlot { param: value, grad: &*grad, m, v });
        }
        // The clip coefficient is folded into the update: no pass over the
        // gradients. The update reports whether every weight stayed finite (a
        // flag set inside the kernel on CUDA): a NaN weight must never reach a
        // checkpoint.
        if !ops::adamw_step(&mut slots, &h, step, clip)? {
            return Err(crate::arg_err!(
                what,
                "step {step}: the optimizer update left non-finite weights (gradient norm {grad_norm:.4e}, lr {lr:.3e}); \
                 stopping without saving (the last checkpoint is intact)"
            ));
        }
        Ok(grad_norm)
    }
}

/// Where a checkpoint's weights go and what they are.
pub struct CheckpointSpec<'a> {
    /// LoRA: write a PEFT adapter (with this section's settings) instead of weights.
    pub lora: Option<&'a LoraSection>,
    /// The base model path recorded in adapter_config.json.
    pub base_model: &'a str,
    pub tokenizer_json: Option<&'a Path>,
    pub keep_last: usize,
}

/// A PEFT adapter: adapter_model.safetensors + adapter_config.json.
pub fn save_adapter(model: &mut Qwen25Vl, dir: &Path, l: &LoraSection, base_model: &str) -> Result<()> {
    let mut named = Vec::new();
    let mut modules = std::collections::BTreeSet::new();
    model.visit(&mut |n, p| {
        if n.contains(".lora_") {
            modules.insert(
                n.rsplit_once(".lora_").map(|(m, _)| m.rsplit('.').next().unwrap_or(m).to_string()).unwrap_or_default(),
            );
            named.push((peft_key(&n), p.value.clone()));
        }
    });
    let refs: Vec<(String, &Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::save_safetensors(&dir.join("adapter_model.safetensors"), &refs, DType::F32, None)?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": l.rank,
        "lora_alpha": l.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "target_modules": modules,
    });
    weights::write_atomic(
        &dir.join("adapter_config.json"),
        serde_json::to_string_pretty(&config).expect("JSON").as_bytes(),
    )
}

/// Writes `out/checkpoint-NNNNNN` (weights or adapter, tokenizer, optimizer
/// moments, `state` as trainer_state.json) through a temporary directory and a
/// rename, so a crash never leaves a half checkpoint; then deletes the oldest
/// beyond `keep_last`. Returns its path.
pub fn write_checkpoint(
    out: &Path,
    step: usize,
    model: &mut Qwen25Vl,
    opt: &AdamWState,
    spec: &CheckpointSpec,
    state: &serde_json::Value,
) -> Result<PathBuf> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| Error::Io { path: p.clone(), source: e }
    };
    let final_dir = out.join(format!("checkpoint-{step:06}"));
    let tmp = out.join(format!(".checkpoint-{step:06}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let written = (|| -> Result<()> {
        match spec.lora {
            Some(l) => save_adapter(model, &tmp, l, spec.base_model)?,
            None => model.save(&tmp, DType::F32)?,
        }
        if let Some(t) = spec.tokenizer_json {
            std::fs::copy(t, tmp.join("tokenizer.json")).map_err(io(t))?;
        }
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (k, t) in &opt.m {
            named.push((format!("m.{k}"), t.clone()));
        }
        for (k, t) in &opt.v {
            named.push((format!("v.{k}"), t.clone()));
        }
        let refs: Vec<(String, &Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
        weights::save_safetensors(&tmp.join("optimizer.safetensors"), &refs, DType::F32, None)?;
        weights::write_atomic(
            &tmp.join("trainer_state.json"),
            serde_json::to_string_pretty(state).expect("JSON").as_bytes(),
        )?;
        Ok(())
    })();
    // A failed write (a full disk) leaves no half directory behind: the space
    // comes back and the next attempt starts clean.
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    // Pruning looks only behind this step, by step number: a checkpoint of a
    // later step (a longer run resumed from an earlier checkpoint) is never
    // counted as "newer" and this one is never the one deleted.
    let older: Vec<PathBuf> = checkpoints_in(out)?.into_iter().filter(|&(s, _)| s < step).map(|(_, p)| p).collect();
    for old in older.iter().take(older.len().saturating_sub(spec.keep_last.max(1) - 1)) {
        std::fs::remove_dir_all(old).map_err(io(old))?;
    }
    Ok(final_dir)
}

/// The `checkpoint-NNNNNN` directories directly under `out`, by step number.
pub fn checkpoints_in(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::Io { path: out.display().to_string(), source: e }),
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let step = name.to_str().and_then(|n| n.strip_prefix("checkpoint-")).and_then(|s| s.parse::<usize>().ok());
        if let Some(step) = step {
            found.push((step, e.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// A training error with the last good checkpoint named (the newest under
/// `out`, which a failed step never touches), for a run that stops.
pub fn stopped(e: Error, out: &Path, what: &'static str) -> Error {
    let last = match checkpoints_in(out) {
        Ok(c) => c.last().map(|(_, p)| p.display().to_string()).unwrap_or_else(|| "none yet".into()),
        Err(_) => "unknown".into(),
    };
    crate::arg_err!(what, "{e}; last good checkpoint: {last}")
}

/// Restores trainable weights (full or adapter) and optimizer moments from a
/// checkpoint written by [`write_checkpoint`]; returns its trainer_state.json.
pub fn read_checkpoint(
    dir: &Path,
    model: &mut Qwen25Vl,
    opt: &mut AdamWState,
    lora: bool,
) -> Result<serde_json::Value> {
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| Error::Io { path: state_path.display().to_string(), source: e })?;
    let state: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config { file: state_path.display().to_string(), msg: e.to_string() })?;
    let ckpt_name = if lora { "adapter_model.safetensors" } else { "model.safetensors" };
    let ckpt = weights::Checkpoint::open(&dir.join(ckpt_name))?;
    let moments = weights::Checkpoint::open(&dir.join("optimizer.safetensors"))?;
    let mut result = Ok(());
    let (m, v) = (&mut opt.m, &mut opt.v);
    model.visit(&mut |name, p| {
        if result.is_err() || !p.trainable() {
            return;
        }
        let key = if lora { peft_key(&name) } else { name.clone() };
        result = (|| -> Result<()> {
            // Checkpoints load on the host; the state goes where the model is.
            let dev = p.value.device();
            let t = ckpt.tensor(&key)?;
            p.value = if t.dims() == p.value.dims() { t } else { t.reshape(p.value.dims())? }.to_device(dev)?;
            m.insert(name.clone(), moments.tensor(&format!("m.{name}"))?.to_device(dev)?);
            v.insert(name.clone(), moments.tensor(&format!("v.{name}"))?.to_device(dev)?);
            Ok(())
        })();
    });
    result?;
    Ok(state)
}

/// A resumed run must continue the same run: the model, adapter, freeze flags,
/// seed, batch size and data size (the sample stream is a function of them) must
/// match what the checkpoint recorded. Returns an error naming each difference.
pub fn check_resume(
    state: &serde_json::Value,
    cfg: &super::config::SftConfig,
    items: usize,
    file: &Path,
) -> Result<()> {
    let now = serde_json::to_value(cfg).expect("config serialises");
    let saved = &state["config"];
    let mut diffs = Vec::new();
    for key in ["model", "lora", "train"] {
        if saved[key] != now[key] {
            diffs.push(format!("[{key}] was {} and is now {}", saved[key], now[key]));
        }
    }
    for key in ["seed", "global_batch"] {
        if saved["run"][key] != now["run"][key] {
            diffs.push(format!("run.{key} was {} and is now {}", saved["run"][key], now["run"][key]));
        }
    }
    for key in ["examples", "prompts"] {
        if let Some(n) = state[key].as_u64()
            && n as usize != items
        {
            diffs.push(format!("{n} {key} then, {items} now"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::Checkpoint {
            file: file.display().to_string(),
            msg: format!("cannot resume a different run: {}", diffs.join("; ")),
        })
    }
}

/// Resumes from `dir`: checks it belongs to this run ([`check_resume`]), restores
/// the trainable weights and moments, and returns the step and trainer_state.json.
pub fn resume_from(
    dir: &Path,
    model: &mut Qwen25Vl,
    opt: &mut AdamWState,
    cfg: &super::config::SftConfig,
    items: usize,
) -> Result<(usize, serde_json::Value)> {
    let file = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&file).map_err(|e| Error::Io { path: file.display().to_string(), source: e })?;
    let saved: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config { file: file.display().to_string(), msg: e.to_string() })?;
    check_resume(&saved, cfg, items, &file)?;
    let state = read_checkpoint(dir, model, opt, cfg.lora.enabled)?;
    let step = state["step"]
        .as_u64()
        .ok_or_else(|| Error::Config { file: file.display().to_string(), msg: "no step".into() })?;
    Ok((step as usize, state))
}

/// Where a stage's per-step figures go: `metrics.jsonl` (one JSON line per
/// step) and TensorBoard event files in `tb/`.
pub struct RunLog {
    file: std::fs::File,
    path: PathBuf,
    tb: super::tensorboard::TbWriter,
    stage: String,
}

impl RunLog {
    /// Logs one step's metrics (a struct with a `step` field).
    pub fn write<T: serde::Serialize>(&mut self, m: &T) -> Result<()> {
        use std::io::Write as _;
        let line = serde_json::to_string(m).expect("JSON");
        writeln!(self.file, "{line}").map_err(|e| Error::Io { path: self.path.display().to_string(), source: e })?;
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        let step = v["step"].as_u64().unwrap_or(0) as usize;
        self.tb.json_scalars(step, &self.stage, &v)
    }
}

/// Opens `out/metrics.jsonl` for appending after keeping only its lines up to
/// `step` (a killed run may have logged more than its last checkpoint), a new
/// TensorBoard event file in `out/tb/` (marking the resume, see
/// `train::tensorboard`), and a progress bar at `step` of `total` labelled
/// `stage`.
pub fn start_run_log(
    out: &Path,
    step: usize,
    total: usize,
    stage: &str,
    progress: bool,
) -> Result<(RunLog, indicatif::ProgressBar)> {
    std::fs::create_dir_all(out).map_err(|e| Error::Io { path: out.display().to_string(), source: e })?;
    let path = out.join("metrics.jsonl");
    let line_step = |l: &str| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64());
    let kept: String = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| line_step(l).is_some_and(|s| s as usize <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    weights::write_atomic(&path, kept.as_bytes())?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    let tb = super::tensorboard::TbWriter::create(&out.join("tb"), (step > 0).then_some(step))?;
    let pb = if progress { indicatif::ProgressBar::new(total as u64) } else { indicatif::ProgressBar::hidden() };
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{stage} {{wide_bar}} {{pos}}/{{len}} [{{elapsed}} < {{eta}}] {{msg}}"
        ))
        .expect("valid template"),
    );
    pb.set_position(step as u64);
    Ok((RunLog { file, path, tb, stage: stage.to_string() }, pb))
}
