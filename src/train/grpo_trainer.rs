//! The GRPO trainer (PAPER.md, stage 2): per step, `prompts_per_step` prompts are
//! rolled out `group` times each with the current policy; each response is scored
//! (0.5·accuracy + 0.5·format by default); advantages are normalised within each
//! group; then the policy is updated on PPO mini-batches for `ppo_epochs` epochs
//! with the clipped surrogate plus `beta`·k3 KL to a frozen reference.
//!
//! The update recomputes the policy's log-probs of the sampled tokens with a
//! teacher-forced forward over `prompt + response` (packed micro-batches), takes
//! d loss / d logp from [`grpo_loss`] and sends it back through
//! `ops::token_logprobs_backward` and the model's own backward.
//!
//! Reference policy: with LoRA, the model with the adapters removed (it shares the
//! frozen base weights, so it costs nothing); full fine-tuning keeps a frozen copy
//! (copy-on-write: a weight is duplicated the first time the optimizer changes it).
//! With `beta = 0` there is no reference.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::config::SftConfig;
use super::eval::EvalItem;
use super::grpo::{GrpoParams, group_advantages};
use super::optimizer::{AdamWState, CheckpointSpec, resume_from, start_run_log, write_checkpoint};
use super::reward::WeightedReward;
use super::sft::{add_accounting, prepare_model};
use crate::cuda::accounting::Accounting;
use crate::cuda::nvtx::{self, Phase};
use crate::error::Result;
use crate::model::rollout::{PromptInput, RolloutConfig, RolloutSample};
use crate::model::tokenizer::QwenTokenizer;
use crate::model::{Batch, Qwen25Vl, Sample};
use crate::ops::{self, PolicyTokens, SamplingParams};
use crate::rng::Philox;
use crate::tensor::{DType, Device, Tensor};

/// One GRPO step's figures (one line of metrics.jsonl).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GrpoMetrics {
    pub step: usize,
    pub lr: f32,
    pub reward_mean: f64,
    pub reward_std: f64,
    pub accuracy: f64,
    pub format_rate: f64,
    /// Mean k3 KL to the reference over response tokens (0 without a reference).
    pub kl: f64,
    pub clip_frac: f64,
    /// Mean per-token entropy of the policy (at the sampling temperature).
    pub entropy: f64,
    pub loss: f64,
    pub grad_norm: f64,
    pub response_len_mean: f64,
    pub response_len_max: usize,
    /// Responses cut at `max_new_tokens` without an end-of-turn token.
    pub truncated: usize,
    /// Groups whose rewards were all equal (no advantage, no policy gradient).
    pub flat_groups: usize,
    /// Mini-batch updates skipped because every advantage in them was 0
    /// (`grpo.skip_flat_updates`).
    pub skipped_updates: usize,
    pub groups: usize,
    pub rollout_tokens_per_s: f64,
    /// Teacher-forced tokens (prompt + response) per second in the update.
    pub update_tokens_per_s: f64,
    pub rollout_s: f64,
    pub update_s: f64,
    /// On CUDA: what the device did during the step, per phase
    /// (`crate::cuda::accounting`); absent on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda: Option<Accounting>,
}

/// Everything about one sampled response that the update needs.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// Index into the trainer's prompts.
    pub prompt: usize,
    /// Response tokens (the stop token included when produced).
    pub tokens: Vec<u32>,
    /// log-probs under the rollout policy.
    pub old_logp: Vec<f32>,
    /// log-probs under the reference (empty without one).
    pub ref_logp: Vec<f32>,
    pub advantage: f32,
}

/// Sums over one update's micro-batches.
#[derive(Clone, Debug, Default)]
pub struct UpdateStats {
    pub loss: f64,
    /// KL and clip fraction weighted by tokens.
    pub kl_tokens: f64,
    pub clip_tokens: f64,
    pub tokens: usize,
    pub entropy_sum: f64,
    pub entropy_rows: usize,
    /// Teacher-forced tokens (prompt + response).
    pub forward_tokens: usize,
}

pub struct GrpoTrainer {
    pub cfg: SftConfig,
    pub model: Qwen25Vl,
    pub reference: Option<Qwen25Vl>,
    pub prompts: Vec<EvalItem>,
    pub opt: AdamWState,
    pub step: usize,
    pub total_steps: usize,
    pub history: Vec<GrpoMetrics>,
    /// On CUDA: everything the device did in this process's steps and between
    /// them, per phase; `None` on the CPU.
    pub device_accounting: Option<Accounting>,
    reward: WeightedReward,
    stop: Vec<u32>,
    tokenizer: QwenTokenizer,
}

/// Position `p` of a stream that visits `0..n` in a fresh permutation per epoch,
/// seeded by (seed, tag + epoch): a pure function, so resuming needs only the step.
pub fn epoch_order_at(seed: u64, tag: u64, n: usize, p: usize) -> usize {
    let epoch = (p / n) as u64;
    let mut rng = Philox::new(seed, tag + epoch);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (rng.next_u32() as usize) % (i + 1));
    }
    order[p % n]
}

impl GrpoTrainer {
    /// Prepares `model` (LoRA or freeze flags from `cfg`) and the reference.
    pub fn new(
        cfg: SftConfig,
        mut model: Qwen25Vl,
        prompts: Vec<EvalItem>,
        tokenizer: QwenTokenizer,
    ) -> Result<GrpoTrainer> {
        cfg.validate().map_err(|m| crate::arg_err!("grpo", "{m}"))?;
        if prompts.is_empty() {
            return Err(crate::arg_err!("grpo", "no prompts"));
        }
        // The reference is the model as it enters stage 2, before any adapter.
        // Its parameters share the policy's tensors until the optimizer writes them
        // (copy-on-write); it keeps no gradients.
        let mut reference = (cfg.grpo.beta > 0.0).then(|| {
            let mut r = model.clone();
            r.visit(&mut |_, p| p.grad = None);
            r
        });
        prepare_model(&cfg, &mut model, "grpo")?;
        if let Some(r) = reference.as_mut() {
            r.place_on(model.device())?;
        }
        let opt = AdamWState::new(&mut model)?;
        if opt.m.is_empty() {
            return Err(crate::arg_err!("grpo", "nothing to train: every part is frozen"));
        }
        let g = &cfg.grpo;
        let reward = WeightedReward::actial(g.accuracy_weight, g.format_weight);
        let stop = vec![tokenizer.ids.im_end, tokenizer.ids.endoftext];
        let total_steps = g.steps;
        Ok(GrpoTrainer {
            cfg,
            model,
            reference,
            prompts,
            opt,
            step: 0,
            total_steps,
            history: Vec::new(),
            device_accounting: None,
            reward,
            stop,
            tokenizer,
        })
    }

    pub fn trainable_params(&self) -> usize {
        self.opt.numel()
    }

    /// The rollout settings of the current step.
    pub fn rollout_config(&self) -> RolloutConfig {
        let g = &self.cfg.grpo;
        RolloutConfig {
            group: g.group,
            max_new_tokens: g.max_new_tokens,
            sampling: SamplingParams { temperature: g.temperature, top_k: g.top_k, top_p: g.top_p },
            stop: self.stop.clone(),
            banned: self.model.vision_token_ids(),
            seed: self.cfg.run.seed,
            stream: self.step as u64,
            shards: 0,
            max_inflight_samples: g.max_inflight_samples,
        }
    }

    /// Packs `seqs` (prompt + response) into one batch; returns it with, per
    /// sequence, the packed rows whose logits predict its response tokens.
    pub fn pack(&self, seqs: &[&Rollout]) -> Result<(Batch, Vec<i32>, Vec<i32>)> {
        let mut samples = Vec::with_capacity(seqs.len());
        let (mut pix, mut grids) = (Vec::new(), Vec::new());
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        let mut offset = 0usize;
        for s in seqs {
            let p = &self.prompts[s.prompt].prompt;
            let mut tokens = p.tokens.clone();
            tokens.extend_from_slice(&s.tokens);
            // Row `t` of the logits predicts token `t + 1`.
            for j in 0..s.tokens.len() {
                rows.push((offset + p.tokens.len() - 1 + j) as i32);
                ids.push(s.tokens[j] as i32);
            }
            offset += tokens.len();
            samples.push(Sample { tokens, labels: None });
            if let Some(px) = &p.pixels {
                pix.push(px.clone());
            }
            grids.extend(p.grids.iter().copied());
        }
        let pixels = if pix.is_empty() { None } else { Some(Tensor::cat(&pix.iter().collect::<Vec<_>>(), 0)?) };
        Ok((Batch::new(&samples, pixels, &grids, &self.model.config)?, rows, ids))
    }

    /// Log-probs of each sequence's response tokens under `model` (no gradient).
    pub fn logprobs(&self, model: &Qwen25Vl, seqs: &[&Rollout]) -> Result<Vec<Vec<f32>>> {
        let t = self.cfg.grpo.temperature;
        let mut out = Vec::with_capacity(seqs.len());
        for micro in seqs.chunks(self.cfg.grpo_micro_batch()) {
            let (batch, rows, ids) = self.pack(micro)?;
            let (normed, _) = model.forward_hidden(&batch)?;
            let n = rows.len();
            // Only the response positions go through the LM head.
            let sel = ops::index_select(&normed, &Tensor::from_i32(rows, [n], Device::Cpu)?)?;
            let ids = Tensor::from_i32(ids, [n], Device::Cpu)?;
            let lp = {
                let _r = nvtx::range(Phase::Loss);
                let head = &model.text.head().value;
                ops::linear_token_logprobs(&sel, head, &ids, t, model.text.logit_chunk_rows(), false)?
            };
            let lp = lp.logp.to_vec_f32()?;
            let mut at = 0;
            for s in micro {
                out.push(lp[at..at + s.tokens.len()].to_vec());
                at += s.tokens.len();
            }
        }
        Ok(out)
    }

    /// The GRPO loss of the sequences `mini` of `rolls` under the current policy,
    /// micro-batch by micro-batch; with `backward`, its gradient is accumulated into
    /// the trainable parameters. `p` carries the mini-batch's token and sequence
    /// counts, so the micro-batch losses add up to the mini-batch loss. The LM
    /// head runs fused with the log-probs on the response positions only, a
    /// chunk of rows at a time: no `[tokens, vocab]` tensor.
    pub fn accumulate(
        &mut self,
        rolls: &[Rollout],
        mini: &[usize],
        p: &GrpoParams,
        backward: bool,
        stats: &mut UpdateStats,
    ) -> Result<()> {
        let temperature = self.cfg.grpo.temperature;
        let chunk = self.model.text.logit_chunk_rows();
        for micro in mini.chunks(self.cfg.grpo_micro_batch()) {
            let seqs: Vec<&Rollout> = micro.iter().map(|&i| &rolls[i]).collect();
            let (batch, rows, ids) = self.pack(&seqs)?;
            stats.forward_tokens += batch.tokens();
            let (normed, cache) = self.model.forward_hidden(&batch)?;
            let nr = rows.len();
            let rows_t = Tensor::from_i32(rows, [nr], Device::Cpu)?;
            let ids_t = Tensor::from_i32(ids, [nr], Device::Cpu)?;
            let sel = ops::index_select(&normed, &rows_t)?;
            let head_w = self.model.text.head().value.clone();
            let lt = {
                let _r = nvtx::range(Phase::Loss);
                ops::linear_token_logprobs(&sel, &head_w, &ids_t, temperature, chunk, true)?
            };
            // GRPO's objective where the log-probs are: on CUDA only its four
            // sums come to the host, the gradient stays on the device.
            let (mut old, mut reference, mut advantage, mut den) = (vec![], vec![], vec![], vec![]);
            let tokens: usize = seqs.iter().map(|s| s.tokens.len()).sum();
            for s in &seqs {
                let k = s.tokens.len();
                old.extend_from_slice(&s.old_logp);
                reference.extend_from_slice(if s.ref_logp.is_empty() { &s.old_logp } else { &s.ref_logp });
                advantage.extend(std::iter::repeat_n(s.advantage, k));
                den.extend(std::iter::repeat_n(p.denominator(k, tokens, seqs.len()) as f32, k));
            }
            let pt = PolicyTokens { old: &old, reference: &reference, advantage: &advantage, den: &den };
            let (dlogp, sums) = {
                let _r = nvtx::range(Phase::Loss);
                ops::policy_loss(&lt.logp, lt.entropy.as_ref(), &pt, &p.token_params())?
            };
            if !sums.loss.is_finite() {
                return Err(crate::arg_err!(
                    "grpo",
                    "step {}: loss is {} (non-finite); stopping (the last checkpoint is intact)",
                    self.step + 1,
                    sums.loss
                ));
            }
            stats.loss += sums.loss;
            stats.kl_tokens += sums.kl;
            stats.clip_tokens += sums.clipped;
            stats.tokens += tokens;
            stats.entropy_sum += sums.entropy;
            stats.entropy_rows += lt.entropy.as_ref().map_or(0, |e| e.numel());
            if !backward {
                continue;
            }
            let dsel = {
                let _r = nvtx::range(Phase::Loss);
                let head = self.model.text.head_mut();
                ops::linear_token_logprobs_backward(
                    &sel,
                    &head_w,
                    &ids_t,
                    &lt.lse,
                    &dlogp,
                    temperature,
                    head.grad.as_mut(),
                    chunk,
                )?
            };
            let mut dnormed = Tensor::zeros(normed.dims(), DType::F32, normed.device())?;
            ops::index_select_backward(&mut dnormed, &rows_t, &dsel, None)?;
            drop((normed, sel));
            self.model.backward_hidden(&batch, cache, &dnormed)?;
        }
        Ok(())
    }

    /// One GRPO step: rollouts, rewards, advantages, PPO updates.
    pub fn train_step(&mut self) -> Result<GrpoMetrics> {
        let g = self.cfg.grpo.clone();
        let lr = self.cfg.grpo_lr_at(self.step);
        // 1. Rollouts.
        let device = self.model.device();
        add_accounting(&mut self.device_accounting, crate::cuda::take_accounting(device));
        let t0 = Instant::now();
        let idx: Vec<usize> = (self.step * g.prompts_per_step..(self.step + 1) * g.prompts_per_step)
            .map(|p| epoch_order_at(self.cfg.run.seed, 0x6270_0000, self.prompts.len(), p))
            .collect();
        let inputs: Vec<PromptInput> = idx.iter().map(|&i| self.prompts[i].prompt.clone()).collect();
        let samples: Vec<RolloutSample> = self.model.rollout(&inputs, &self.rollout_config())?;
        let rollout_s = t0.elapsed().as_secs_f64();
        let gen_tokens: usize = samples.iter().map(|s| s.tokens.len()).sum();

        // 2. Rewards and group advantages.
        let (mut rewards, mut acc, mut fmt) = (Vec::new(), 0.0f64, 0.0f64);
        for s in &samples {
            let text_ids: Vec<u32> = s.tokens.iter().copied().filter(|t| !self.stop.contains(t)).collect();
            let text = self.tokenizer.decode(&text_ids, false)?;
            let (r, parts) = self.reward.score(&text, &self.prompts[idx[s.prompt]].answer);
            rewards.push(r);
            acc += parts[0] as f64;
            fmt += parts[1] as f64;
        }
        let n = samples.len() as f64;
        let reward_mean = rewards.iter().map(|&r| r as f64).sum::<f64>() / n;
        let reward_std = (rewards.iter().map(|&r| (r as f64 - reward_mean).powi(2)).sum::<f64>() / n).sqrt();
        let (adv, flat_groups) = group_advantages(&rewards, g.group, 1e-4);
        let mut rolls: Vec<Rollout> = samples
            .iter()
            .zip(&adv)
            .map(|(s, &a)| Rollout {
                prompt: idx[s.prompt],
                tokens: s.tokens.clone(),
                old_logp: s.logprobs.clone(),
                ref_logp: vec![],
                advantage: a,
            })
            .collect();

        // 3. Reference log-probs.
        let t1 = Instant::now();
        if let Some(reference) = &self.reference {
            let refs: Vec<&Rollout> = rolls.iter().collect();
            let lp = self.logprobs(reference, &refs)?;
            for (r, l) in rolls.iter_mut().zip(lp) {
                r.ref_logp = l;
            }
        }

        // 4. PPO epochs over shuffled mini-batches; one optimizer update each.
        let params = GrpoParams {
            eps_low: g.eps_low,
            eps_high: g.eps_high,
            beta: g.beta,
            clip_ratio_c: g.clip_ratio_c,
            kl_clamp: g.kl_clamp,
            agg: g.loss_agg,
            adv_eps: 1e-4,
            max_completion_len: g.max_new_tokens,
            global_tokens: 0,
            global_seqs: 0,
        };
        let per_mini = g.mini_batch_prompts * g.group;
        let mut stats = UpdateStats::default();
        let (mut grad_norm, mut updates, mut skipped_updates) = (0.0f64, 0usize, 0usize);
        for epoch in 0..g.ppo_epochs {
            let mut order: Vec<usize> = (0..rolls.len()).collect();
            let mut rng = Philox::new(self.cfg.run.seed ^ 0x9090_0000, (self.step * g.ppo_epochs + epoch) as u64);
            for i in (1..order.len()).rev() {
                order.swap(i, (rng.next_u32() as usize) % (i + 1));
            }
            for mini in order.chunks(per_mini) {
                // No advantage anywhere in the mini-batch: no policy signal, only
                // the KL pull toward a reference the policy has barely left. Adam
                // would scale that near-zero gradient (and weight decay's nudge) to
                // full-size steps, a random walk; `grpo.skip_flat_updates` skips it.
                if g.skip_flat_updates && mini.iter().all(|&i| rolls[i].advantage == 0.0) {
                    skipped_updates += 1;
                    continue;
                }
                self.model.zero_grad()?;
                let mini_tokens: usize = mini.iter().map(|&i| rolls[i].tokens.len()).sum();
                let p = GrpoParams { global_tokens: mini_tokens, global_seqs: mini.len(), ..params };
                self.accumulate(&rolls, mini, &p, true, &mut stats)?;
                updates += 1;
                let step_no = (self.step * g.ppo_epochs * rolls.len().div_ceil(per_mini) + updates) as u64;
                grad_norm = self.opt.step(&mut self.model, &self.cfg.optim, lr, step_no, "grpo")?;
            }
        }
        let update_s = t1.elapsed().as_secs_f64();
        self.step += 1;
        let lens: Vec<usize> = rolls.iter().map(|r| r.tokens.len()).collect();
        let m = GrpoMetrics {
            step: self.step,
            lr,
            reward_mean,
            reward_std,
            accuracy: acc / n,
            format_rate: fmt / n,
            kl: if self.reference.is_some() { stats.kl_tokens / stats.tokens.max(1) as f64 } else { 0.0 },
            clip_frac: stats.clip_tokens / stats.tokens.max(1) as f64,
            entropy: stats.entropy_sum / stats.entropy_rows.max(1) as f64,
            loss: stats.loss / updates.max(1) as f64,
            grad_norm,
            response_len_mean: lens.iter().sum::<usize>() as f64 / n,
            response_len_max: lens.iter().copied().max().unwrap_or(0),
            truncated: samples.iter().filter(|s| !s.stopped).count(),
            flat_groups,
            skipped_updates,
            groups: idx.len(),
            rollout_tokens_per_s: gen_tokens as f64 / rollout_s,
            update_tokens_per_s: stats.forward_tokens as f64 / update_s,
            rollout_s,
            update_s,
            cuda: crate::cuda::take_accounting(device),
        };
        add_accounting(&mut self.device_accounting, m.cuda.clone());
        self.history.push(m.clone());
        Ok(m)
    }

    /// Writes `out/checkpoint-NNNNNN` for the current step.
    pub fn save_checkpoint(&mut self, out: &Path, tokenizer_json: Option<&Path>) -> Result<PathBuf> {
        let state = json!({
            "stage": "grpo",
            "step": self.step,
            "total_steps": self.total_steps,
            "prompts": self.prompts.len(),
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

    /// Restores a checkpoint written by [`Self::save_checkpoint`].
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let (step, state) = resume_from(dir, &mut self.model, &mut self.opt, &self.cfg, self.prompts.len())?;
        self.step = step;
        if let Ok(h) = serde_json::from_value::<Vec<GrpoMetrics>>(state["history"].clone()) {
            self.history = h;
        }
        Ok(())
    }

    /// Trains to `total_steps`: metrics.jsonl, checkpoints every `grpo.save_every`
    /// steps and at the end, a progress bar. A non-finite loss or gradient stops
    /// the run with the step and the last good checkpoint named.
    pub fn run(&mut self, out: &Path, tokenizer_json: Option<&Path>, progress: bool) -> Result<()> {
        let (mut log, pb) = start_run_log(out, self.step, self.total_steps, "grpo", progress)?;
        while self.step < self.total_steps {
            let m = self.train_step().map_err(|e| super::optimizer::stopped(e, out, "grpo"))?;
            log.write(&m)?;
            pb.set_message(format!(
                "reward {:.3} acc {:.2} fmt {:.2} kl {:.4} len {:.0}",
                m.reward_mean, m.accuracy, m.format_rate, m.kl, m.response_len_mean
            ));
            pb.inc(1);
            let every = self.cfg.grpo_save_every();
            if every > 0 && self.step.is_multiple_of(every) && self.step < self.total_steps {
                self.save_checkpoint(out, tokenizer_json)?;
            }
        }
        pb.finish_and_clear();
        self.save_checkpoint(out, tokenizer_json)?;
        Ok(())
    }
}
