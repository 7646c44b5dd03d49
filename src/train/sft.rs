//! The SFT trainer: micro-batches with gradient accumulation (token-mean loss over
//! the whole global batch), AdamW with warm-up and a schedule, global-norm
//! clipping, checkpoints that resume bit-identically, metrics and plots.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::config::SftConfig;
use super::data::{Example, make_batch};
use crate::error::{Error, Result};
use crate::model::{LoraSpec, Part, Qwen25Vl, weights};
use crate::ops::{self, AdamSlot, AdamW};
use crate::rng::Philox;
use crate::tensor::{DType, Tensor};

/// One optimizer step's figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f32,
    pub grad_norm: f64,
    pub tokens: usize,
    pub target_tokens: usize,
    pub tokens_per_s: f64,
    pub peak_rss_mb: f64,
    pub elapsed_s: f64,
}

pub struct SftTrainer {
    pub cfg: SftConfig,
    pub model: Qwen25Vl,
    pub examples: Vec<Example>,
    /// Optimizer steps done.
    pub step: usize,
    pub total_steps: usize,
    /// AdamW first and second moments by parameter name.
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    pub history: Vec<StepMetrics>,
}

/// Peak resident memory of this process in MB (Linux VmHWM; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// PEFT's key for a LoRA tensor of hub name `name` (transformers >= 4.52 module
/// paths: `model.language_model.*`, `model.visual.*`).
pub fn peft_key(name: &str) -> String {
    let module = if let Some(rest) = name.strip_prefix("visual.") {
        format!("model.visual.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.") {
        format!("model.language_model.{rest}")
    } else {
        name.to_string()
    };
    format!("base_model.model.{module}")
}

impl SftTrainer {
    /// Prepares `model` for training as `cfg` says (LoRA or freeze flags).
    pub fn new(cfg: SftConfig, mut model: Qwen25Vl, examples: Vec<Example>) -> Result<SftTrainer> {
        if examples.is_empty() {
            return Err(crate::arg_err!("sft", "no training examples"));
        }
        if cfg.lora.enabled {
            let l = &cfg.lora;
            let spec = LoraSpec {
                rank: l.rank,
                alpha: l.alpha,
                targets: l.targets.clone(),
                language: l.language,
                vision: l.vision,
                seed: cfg.run.seed,
            };
            model.add_lora(&spec)?;
        } else {
            model.set_trainable(Part::VisionTower, cfg.train.vision_tower)?;
            model.set_trainable(Part::Merger, cfg.train.merger)?;
            model.set_trainable(Part::Language, cfg.train.language)?;
        }
        let r = &cfg.run;
        let (nt, nv) = (model.text.layers.len(), model.vision.blocks.len());
        if let Some(&bad) = r.recompute_text_layers.iter().find(|&&i| i >= nt) {
            return Err(crate::arg_err!("sft", "run.recompute_text_layers names layer {bad}, the model has {nt}"));
        }
        if let Some(&bad) = r.recompute_vision_blocks.iter().find(|&&i| i >= nv) {
            return Err(crate::arg_err!("sft", "run.recompute_vision_blocks names block {bad}, the model has {nv}"));
        }
        model.text.recompute = (0..nt).map(|i| r.recompute_all || r.recompute_text_layers.contains(&i)).collect();
        model.vision.recompute = (0..nv).map(|i| r.recompute_all || r.recompute_vision_blocks.contains(&i)).collect();
        let g = cfg.run.global_batch;
        let total_steps = if cfg.run.steps > 0 { cfg.run.steps } else { (cfg.run.epochs * examples.len()).div_ceil(g) };
        let mut t = SftTrainer {
            cfg,
            model,
            examples,
            step: 0,
            total_steps,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
            history: Vec::new(),
        };
        let mut moments = Vec::new();
        t.model.visit(&mut |n, p| {
            if p.trainable() {
                moments.push((n, p.value.dims().to_vec()));
            }
        });
        for (n, d) in moments {
            t.m.insert(n.clone(), Tensor::zeros(d.clone(), DType::F32, crate::tensor::Device::Cpu)?);
            t.v.insert(n, Tensor::zeros(d, DType::F32, crate::tensor::Device::Cpu)?);
        }
        if t.m.is_empty() {
            return Err(crate::arg_err!("sft", "nothing to train: every part is frozen"));
        }
        Ok(t)
    }

    /// Trainable parameter count.
    pub fn trainable_params(&self) -> usize {
        self.m.values().map(Tensor::numel).sum()
    }

    /// Example index at stream position `p`: epoch `p / N` visits a permutation
    /// seeded by (seed, epoch). A pure function, so resuming needs only `step`.
    fn example_at(&self, p: usize) -> usize {
        let n = self.examples.len();
        let epoch = (p / n) as u64;
        let mut rng = Philox::new(self.cfg.run.seed, 0xda7a_0000 + epoch);
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u32() as usize) % (i + 1));
        }
        order[p % n]
    }

    /// One optimizer step over the next global batch.
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let t0 = Instant::now();
        let g = self.cfg.run.global_batch;
        let n = self.examples.len();
        // One permutation per epoch: compute the batch's indices with at most two.
        let idx: Vec<usize> = (self.step * g..(self.step + 1) * g).map(|p| self.example_at(p)).collect();
        let target_tokens: usize = idx.iter().map(|&i| self.examples[i].target_tokens).sum();
        // Every micro-batch's loss is scaled by 1/(all supervised tokens of the global
        // batch): accumulated gradients equal those of one big batch.
        let scale = 1.0 / target_tokens as f32;
        self.model.zero_grad()?;
        let (mut loss_sum, mut tokens) = (0.0f64, 0usize);
        for micro in idx.chunks(self.cfg.run.micro_batch) {
            let ex: Vec<&Example> = micro.iter().map(|&i| &self.examples[i]).collect();
            let batch = make_batch(&ex, &self.model.config)?;
            tokens += batch.tokens();
            let out = self.model.forward_backward(&batch, Some(scale))?;
            loss_sum += out.loss_sum;
        }
        let loss = loss_sum / target_tokens as f64;
        if !loss.is_finite() {
            return Err(crate::arg_err!(
                "sft",
                "step {}: loss is {loss}; stopping (the last checkpoint is intact)",
                self.step + 1
            ));
        }
        // Global norm and clipping over all trainable grads.
        let mut grads = Vec::new();
        self.model.visit(&mut |_, p| {
            if let Some(g) = &p.grad {
                grads.push(g.clone());
            }
        });
        let refs: Vec<&Tensor> = grads.iter().collect();
        let grad_norm = ops::grad_norm(&refs)?;
        if !grad_norm.is_finite() {
            return Err(crate::arg_err!(
                "sft",
                "step {}: gradient norm is {grad_norm}; stopping (the last checkpoint is intact)",
                self.step + 1
            ));
        }
        drop(grads);
        let max = self.cfg.optim.max_grad_norm;
        let clip = if max > 0.0 { crate::cpu::optim::clip_coef(grad_norm, max) } else { 1.0 };
        let lr = self.cfg.lr_at(self.step, self.total_steps);
        let o = &self.cfg.optim;
        let h = AdamW { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weight_decay: o.weight_decay };
        let (m, v) = (&mut self.m, &mut self.v);
        let mut result = Ok(());
        let step = self.step as u64 + 1;
        self.model.visit(&mut |name, p| {
            let Some(grad) = p.grad.as_mut() else { return };
            if result.is_err() {
                return;
            }
            if clip < 1.0 {
                result = ops::scale_assign(grad, clip);
            }
            let (Some(mt), Some(vt)) = (m.get_mut(&name), v.get_mut(&name)) else {
                result = Err(crate::arg_err!("sft", "no optimizer state for {name}"));
                return;
            };
            let grad = p.grad.as_ref().expect("checked above").clone();
            if result.is_ok() {
                result = ops::adamw_step(&mut [AdamSlot { param: &mut p.value, grad: &grad, m: mt, v: vt }], &h, step);
            }
        });
        result?;
        self.step += 1;
        let secs = t0.elapsed().as_secs_f64();
        let metrics = StepMetrics {
            step: self.step,
            epoch: (self.step * g) as f64 / n as f64,
            loss,
            lr,
            grad_norm,
            tokens,
            target_tokens,
            tokens_per_s: tokens as f64 / secs,
            peak_rss_mb: peak_rss_mb(),
            elapsed_s: secs,
        };
        self.history.push(metrics.clone());
        Ok(metrics)
    }

    /// Writes a checkpoint of step `self.step` into `out/checkpoint-NNNNNN` through a
    /// temporary directory and a rename (a crash never leaves a half checkpoint),
    /// then deletes the oldest beyond `run.keep_last`. Returns its path.
    pub fn save_checkpoint(&mut self, out: &Path, tokenizer_json: Option<&Path>) -> Result<PathBuf> {
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |e| Error::Io { path: p.clone(), source: e }
        };
        let final_dir = out.join(format!("checkpoint-{:06}", self.step));
        let tmp = out.join(format!(".checkpoint-{:06}.tmp", self.step));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        if self.cfg.lora.enabled {
            self.save_adapter(&tmp)?;
        } else {
            self.model.save(&tmp, DType::F32)?;
        }
        if let Some(t) = tokenizer_json {
            std::fs::copy(t, tmp.join("tokenizer.json")).map_err(io(t))?;
        }
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (k, t) in &self.m {
            named.push((format!("m.{k}"), t.clone()));
        }
        for (k, t) in &self.v {
            named.push((format!("v.{k}"), t.clone()));
        }
        let refs: Vec<(String, &Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
        weights::save_safetensors(&tmp.join("optimizer.safetensors"), &refs, DType::F32, None)?;
        let state = json!({
            "step": self.step,
            "total_steps": self.total_steps,
            "examples": self.examples.len(),
            "config": self.cfg,
            "history": self.history,
        });
        weights::write_atomic(
            &tmp.join("trainer_state.json"),
            serde_json::to_string_pretty(&state).expect("JSON").as_bytes(),
        )?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        // keep_last
        let mut ckpts: Vec<PathBuf> = std::fs::read_dir(out)
            .map_err(io(out))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with("checkpoint-")))
            .collect();
        ckpts.sort();
        let keep = self.cfg.run.keep_last.max(1);
        for old in ckpts.iter().take(ckpts.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(old).map_err(io(old))?;
        }
        Ok(final_dir)
    }

    /// A PEFT adapter: adapter_model.safetensors + adapter_config.json.
    pub fn save_adapter(&mut self, dir: &Path) -> Result<()> {
        let mut named = Vec::new();
        let mut modules = std::collections::BTreeSet::new();
        self.model.visit(&mut |n, p| {
            if n.contains(".lora_") {
                modules.insert(
                    n.rsplit_once(".lora_")
                        .map(|(m, _)| m.rsplit('.').next().unwrap_or(m).to_string())
                        .unwrap_or_default(),
                );
                named.push((peft_key(&n), p.value.clone()));
            }
        });
        let refs: Vec<(String, &Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
        weights::save_safetensors(&dir.join("adapter_model.safetensors"), &refs, DType::F32, None)?;
        let l = &self.cfg.lora;
        let config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self.cfg.model.path,
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

    /// Restores weights (full or adapter), optimizer moments and the step from a
    /// checkpoint written by [`Self::save_checkpoint`].
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let state_path = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&state_path)
            .map_err(|e| Error::Io { path: state_path.display().to_string(), source: e })?;
        let state: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config { file: state_path.display().to_string(), msg: e.to_string() })?;
        let ckpt_name = if self.cfg.lora.enabled { "adapter_model.safetensors" } else { "model.safetensors" };
        let ckpt = weights::Checkpoint::open(&dir.join(ckpt_name))?;
        let opt = weights::Checkpoint::open(&dir.join("optimizer.safetensors"))?;
        let lora = self.cfg.lora.enabled;
        let mut result = Ok(());
        let (m, v) = (&mut self.m, &mut self.v);
        self.model.visit(&mut |name, p| {
            if result.is_err() || !p.trainable() {
                return;
            }
            let key = if lora { peft_key(&name) } else { name.clone() };
            result = (|| -> Result<()> {
                let t = ckpt.tensor(&key)?;
                p.value = if t.dims() == p.value.dims() { t } else { t.reshape(p.value.dims())? };
                m.insert(name.clone(), opt.tensor(&format!("m.{name}"))?);
                v.insert(name.clone(), opt.tensor(&format!("v.{name}"))?);
                Ok(())
            })();
        });
        result?;
        self.step = state["step"]
            .as_u64()
            .ok_or_else(|| Error::Config { file: state_path.display().to_string(), msg: "no step".into() })?
            as usize;
        if let Ok(h) = serde_json::from_value::<Vec<StepMetrics>>(state["history"].clone()) {
            self.history = h;
        }
        Ok(())
    }

    /// Trains to `total_steps`, logging to `out/metrics.jsonl`, checkpointing every
    /// `run.save_every` steps and at the end, with a progress bar.
    pub fn run(&mut self, out: &Path, tokenizer_json: Option<&Path>, progress: bool) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::Io { path: out.display().to_string(), source: e })?;
        let metrics_path = out.join("metrics.jsonl");
        // Keep the lines up to the resumed step (a killed run may have logged more).
        let kept: String = std::fs::read_to_string(&metrics_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| serde_json::from_str::<StepMetrics>(l).map(|m| m.step <= self.step).unwrap_or(false))
            .map(|l| format!("{l}\n"))
            .collect();
        weights::write_atomic(&metrics_path, kept.as_bytes())?;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(|e| Error::Io { path: metrics_path.display().to_string(), source: e })?;
        let pb = if progress {
            indicatif::ProgressBar::new(self.total_steps as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        pb.set_style(
            indicatif::ProgressStyle::with_template("sft {wide_bar} {pos}/{len} [{elapsed} < {eta}] {msg}")
                .expect("valid template"),
        );
        pb.set_position(self.step as u64);
        while self.step < self.total_steps {
            let m = self.train_step()?;
            writeln!(log, "{}", serde_json::to_string(&m).expect("JSON"))
                .map_err(|e| Error::Io { path: metrics_path.display().to_string(), source: e })?;
            pb.set_message(format!("loss {:.4} lr {:.2e} {:.0} tok/s", m.loss, m.lr, m.tokens_per_s));
            pb.inc(1);
            let every = self.cfg.run.save_every;
            if every > 0 && self.step.is_multiple_of(every) && self.step < self.total_steps {
                self.save_checkpoint(out, tokenizer_json)?;
            }
        }
        pb.finish_and_clear();
        self.save_checkpoint(out, tokenizer_json)?;
        Ok(())
    }
}
