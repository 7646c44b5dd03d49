//! The SFT trainer: micro-batches with gradient accumulation (token-mean loss over
//! the whole global batch), AdamW with warm-up and a schedule, global-norm
//! clipping, checkpoints that resume bit-identically, metrics and plots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::config::{LossMean, SftConfig};
use super::data::{Example, make_batch};
pub use super::optimizer::peft_key;
use super::optimizer::{AdamWState, CheckpointSpec, resume_from, start_run_log, write_checkpoint};
use crate::cuda::accounting::Accounting;
use crate::error::Result;
use crate::model::{Batch, LoraSpec, LossScale, Part, Qwen25Vl};
use crate::rng::Philox;

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
    /// On CUDA: what the device did during the step, per phase
    /// (`crate::cuda::accounting`); absent on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda: Option<Accounting>,
}

pub struct SftTrainer {
    pub cfg: SftConfig,
    pub model: Qwen25Vl,
    pub examples: Vec<Example>,
    /// Optimizer steps done.
    pub step: usize,
    pub total_steps: usize,
    pub opt: AdamWState,
    pub history: Vec<StepMetrics>,
    /// On CUDA: everything the device did in this process's steps and between
    /// them (checkpoints, evaluations), per phase; `None` on the CPU.
    pub device_accounting: Option<Accounting>,
    /// Per `data.curriculum` phase: its length in stream positions and the
    /// examples it draws from (indices into `examples`).
    curriculum: Vec<(usize, Stream)>,
    /// The whole set, after the curriculum.
    everything: Stream,
}

/// Adds an interval's device accounting to a run's total.
pub(crate) fn add_accounting(total: &mut Option<Accounting>, interval: Option<Accounting>) {
    if let Some(a) = interval {
        total.get_or_insert_with(Accounting::default).merge(&a);
    }
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

/// Applies `cfg`'s LoRA (adapters on the named targets) or freeze flags and its
/// activation-recomputation choices to `model`.
pub fn prepare_model(cfg: &SftConfig, model: &mut Qwen25Vl, what: &'static str) -> Result<()> {
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
        return Err(crate::arg_err!(what, "run.recompute_text_layers names layer {bad}, the model has {nt}"));
    }
    if let Some(&bad) = r.recompute_vision_blocks.iter().find(|&&i| i >= nv) {
        return Err(crate::arg_err!(what, "run.recompute_vision_blocks names block {bad}, the model has {nv}"));
    }
    model.text.recompute = (0..nt).map(|i| r.recompute_all || r.recompute_text_layers.contains(&i)).collect();
    model.vision.recompute = (0..nv).map(|i| r.recompute_all || r.recompute_vision_blocks.contains(&i)).collect();
    // On CUDA frozen weights are bf16 (what the kernels read); trainable ones keep
    // their f32 master copy. The CPU keeps every weight as loaded.
    model.place_on(crate::tensor::Device::parse(&r.device)?)
}

/// A sampling stream: groups of example indices. Epoch `q / len` visits the
/// groups in a permutation drawn from (seed, stream + epoch), each group's
/// examples one after another. Groups of one are plain per-example shuffling.
#[derive(Debug)]
struct Stream {
    groups: Vec<Vec<usize>>,
    /// Examples in all groups.
    len: usize,
}

impl Stream {
    /// `indices` one per group, or grouped by `key` (first-seen order) when
    /// `by_key`.
    fn new(indices: Vec<usize>, by_key: bool, key: impl Fn(usize) -> String) -> Stream {
        let len = indices.len();
        if !by_key {
            return Stream { groups: indices.into_iter().map(|i| vec![i]).collect(), len };
        }
        let mut slot: HashMap<String, usize> = HashMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in indices {
            let g = *slot.entry(key(i)).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(i);
        }
        Stream { groups, len }
    }

    /// The example at position `q`.
    fn at(&self, q: usize, seed: u64, stream: u64) -> usize {
        let n = self.groups.len();
        let mut rng = Philox::new(seed, stream + (q / self.len) as u64);
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u32() as usize) % (i + 1));
        }
        let mut r = q % self.len;
        for &g in &order {
            let members = &self.groups[g];
            if r < members.len() {
                return members[r];
            }
            r -= members.len();
        }
        unreachable!("position {r} past the stream's {} examples", self.len)
    }
}

/// Per-token loss weights for `batch` (samples `ex`): every row of sample `e`
/// gets `weight(e.target_tokens)` (at least 1 token; unsupervised rows are
/// ignored by the loss anyway).
fn per_sample_scale(ex: &[&Example], batch: &Batch, weight: impl Fn(usize) -> f32) -> LossScale {
    let mut rows = vec![0.0f32; batch.tokens()];
    for (e, range) in ex.iter().zip(&batch.sample_ranges) {
        rows[range.clone()].fill(weight(e.target_tokens.max(1)));
    }
    LossScale::PerRow(rows)
}

impl SftTrainer {
    /// Prepares `model` for training as `cfg` says (LoRA or freeze flags).
    pub fn new(cfg: SftConfig, mut model: Qwen25Vl, examples: Vec<Example>) -> Result<SftTrainer> {
        if examples.is_empty() {
            return Err(crate::arg_err!("sft", "no training examples"));
        }
        prepare_model(&cfg, &mut model, "sft")?;
        let g = cfg.run.global_batch;
        let total_steps = if cfg.run.steps > 0 { cfg.run.steps } else { (cfg.run.epochs * examples.len()).div_ceil(g) };
        let opt = AdamWState::new(&mut model)?;
        if opt.m.is_empty() {
            return Err(crate::arg_err!("sft", "nothing to train: every part is frozen"));
        }
        let mut curriculum = Vec::new();
        for (k, ph) in cfg.data.curriculum.iter().enumerate() {
            let wanted = |e: &Example| ph.kinds.contains(&e.kind) && ph.answers.is_none_or(|a| a.matches(e.reasoning));
            let subset: Vec<usize> = (0..examples.len()).filter(|&i| wanted(&examples[i])).collect();
            if subset.is_empty() {
                let style = ph.answers.map(|a| format!(" answered as {a:?}")).unwrap_or_default();
                return Err(crate::arg_err!(
                    "sft",
                    "data.curriculum phase {k}: no training example has one of the kinds {:?}{style}",
                    ph.kinds
                ));
            }
            let by_pair = ph.batch_by_pair.unwrap_or(cfg.data.batch_by_pair);
            curriculum.push((ph.steps * g, Stream::new(subset, by_pair, |i| examples[i].pair.clone())));
        }
        let everything =
            Stream::new((0..examples.len()).collect(), cfg.data.batch_by_pair, |i| examples[i].pair.clone());
        Ok(SftTrainer {
            cfg,
            model,
            examples,
            step: 0,
            total_steps,
            opt,
            history: Vec::new(),
            device_accounting: None,
            curriculum,
            everything,
        })
    }

    /// The loss weighting of step `step` (0-based): its curriculum phase's, if
    /// that phase sets one, else `train.loss_mean`.
    pub fn loss_mean_at(&self, step: usize) -> LossMean {
        let mut end = 0;
        for ph in &self.cfg.data.curriculum {
            end += ph.steps;
            if step < end {
                return ph.loss_mean.unwrap_or(self.cfg.train.loss_mean);
            }
        }
        self.cfg.train.loss_mean
    }

    /// Trainable parameter count.
    pub fn trainable_params(&self) -> usize {
        self.opt.numel()
    }

    /// Example index at stream position `p`: the curriculum phases' positions
    /// first (each phase's steps x global batch, from its own subset), then the
    /// whole set; in each, epoch `q / N` visits a permutation seeded by (seed,
    /// stream, epoch). A pure function, so resuming needs only `step`.
    pub fn example_at(&self, p: usize) -> usize {
        let mut q = p;
        for (k, (len, stream)) in self.curriculum.iter().enumerate() {
            if q < *len {
                return stream.at(q, self.cfg.run.seed, 0xc0de_0000 + ((k as u64) << 20));
            }
            q -= len;
        }
        self.everything.at(q, self.cfg.run.seed, 0xda7a_0000)
    }

    /// One optimizer step over the next global batch.
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let t0 = Instant::now();
        let device = self.model.device();
        add_accounting(&mut self.device_accounting, crate::cuda::take_accounting(device));
        let g = self.cfg.run.global_batch;
        let n = self.examples.len();
        // One permutation per epoch: compute the batch's indices with at most two.
        let idx: Vec<usize> = (self.step * g..(self.step + 1) * g).map(|p| self.example_at(p)).collect();
        let target_tokens: usize = idx.iter().map(|&i| self.examples[i].target_tokens).sum();
        self.model.zero_grad()?;
        let (mut loss_sum, mut tokens) = (0.0f64, 0usize);
        for micro in idx.chunks(self.cfg.run.micro_batch) {
            let ex: Vec<&Example> = micro.iter().map(|&i| &self.examples[i]).collect();
            let batch = make_batch(&ex, &self.model.config)?;
            tokens += batch.tokens();
            // Scales chosen over the whole global batch, so accumulated micro-batch
            // gradients equal those of one big batch.
            let scale = match self.loss_mean_at(self.step) {
                // 1 / (all supervised tokens of the global batch).
                LossMean::Token => LossScale::Uniform(1.0 / target_tokens as f32),
                // 1 / (the sample's supervised tokens x samples in the global batch).
                LossMean::Sample => per_sample_scale(&ex, &batch, |n| 1.0 / (n * idx.len()) as f32),
                // Each token 1 / (sqrt(its sample's tokens) x the batch's sum of
                // sqrt(tokens)): a sample weighs sqrt(n), the weights sum to 1.
                LossMean::Sqrt => {
                    let total: f64 = idx.iter().map(|&i| (self.examples[i].target_tokens.max(1) as f64).sqrt()).sum();
                    per_sample_scale(&ex, &batch, |n| (1.0 / ((n as f64).sqrt() * total)) as f32)
                }
            };
            let step = self.step + 1;
            let out = self
                .model
                .forward_backward_scaled(&batch, scale)
                .map_err(|e| crate::arg_err!("sft", "step {step}: {e}; stopping (the last checkpoint is intact)"))?;
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
        let lr = self.cfg.lr_at(self.step, self.total_steps);
        let grad_norm = self.opt.step(&mut self.model, &self.cfg.optim, lr, self.step as u64 + 1, "sft")?;
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
            cuda: crate::cuda::take_accounting(device),
        };
        add_accounting(&mut self.device_accounting, metrics.cuda.clone());
        self.history.push(metrics.clone());
        Ok(metrics)
    }

    /// Writes `out/checkpoint-NNNNNN` for the current step (see
    /// [`write_checkpoint`]). Returns its path.
    pub fn save_checkpoint(&mut self, out: &Path, tokenizer_json: Option<&Path>) -> Result<PathBuf> {
        let state = json!({
            "step": self.step,
            "total_steps": self.total_steps,
            "examples": self.examples.len(),
            "config": self.cfg,
            "history": self.history,
        });
        let spec = CheckpointSpec {
            lora: self.cfg.lora.enabled.then_some(&self.cfg.lora),
            base_model: &self.cfg.model.path,
            tokenizer_json,
            keep_last: self.cfg.run.keep_last,
        };
        write_checkpoint(out, self.step, &mut self.model, &self.opt, &spec, &state)
    }

    /// Restores weights (full or adapter), optimizer moments and the step from a
    /// checkpoint written by [`Self::save_checkpoint`].
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let (step, state) = resume_from(dir, &mut self.model, &mut self.opt, &self.cfg, self.examples.len())?;
        self.step = step;
        if let Ok(h) = serde_json::from_value::<Vec<StepMetrics>>(state["history"].clone()) {
            self.history = h;
        }
        Ok(())
    }

    /// Trains to `total_steps`, logging to `out/metrics.jsonl`, checkpointing every
    /// `run.save_every` steps and at the end, with a progress bar.
    pub fn run(&mut self, out: &Path, tokenizer_json: Option<&Path>, progress: bool) -> Result<()> {
        self.run_with(out, tokenizer_json, progress, &mut |_, _| Ok(()))
    }

    /// [`SftTrainer::run`] with `after_step` called after every optimizer step
    /// (periodic evaluations; print through the progress bar).
    pub fn run_with(
        &mut self,
        out: &Path,
        tokenizer_json: Option<&Path>,
        progress: bool,
        after_step: &mut dyn FnMut(&SftTrainer, &indicatif::ProgressBar) -> Result<()>,
    ) -> Result<()> {
        let (mut log, pb) = start_run_log(out, self.step, self.total_steps, "sft", progress)?;
        while self.step < self.total_steps {
            let m = self.train_step().map_err(|e| super::optimizer::stopped(e, out, "sft"))?;
            log.write(&m)?;
            pb.set_message(format!("loss {:.4} lr {:.2e} {:.0} tok/s", m.loss, m.lr, m.tokens_per_s));
            pb.inc(1);
            after_step(self, &pb)?;
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
