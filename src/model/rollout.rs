//! Grouped rollouts for GRPO: every prompt (images + text) is prefilled once; its
//! G samples share that prefix's keys and values (no recomputation, no G copies)
//! and keep only their own generated suffix; all samples of all prompts decode
//! together, one token per step, with cascade attention (prefix + suffix merged by
//! log-sum-exp). Each token's log-probability under the sampling policy
//! (temperature-scaled, full vocabulary) is recorded.

use super::text::KvCache;
use super::{Batch, Qwen25Vl, Sample};
use crate::cuda::nvtx::{self, Phase};
use crate::error::Result;
use crate::ops::{self, SamplingParams};
use crate::tensor::{Device, Tensor};

/// One prompt to roll out.
#[derive(Clone, Debug)]
pub struct PromptInput {
    pub tokens: Vec<u32>,
    pub pixels: Option<Tensor>,
    pub grids: Vec<[usize; 3]>,
}

#[derive(Clone, Debug)]
pub struct RolloutConfig {
    /// Samples per prompt (G).
    pub group: usize,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// End-of-turn ids: a sample stops after producing one (it is kept).
    pub stop: Vec<u32>,
    /// Ids never drawn (the vision placeholders: a sampled `<|image_pad|>` would
    /// make the response unreadable as text). Their mass is removed before
    /// sampling; the recorded log-probs stay the model's own (unmasked) ones, which
    /// is what a teacher-forced recomputation gives.
    pub banned: Vec<u32>,
    pub seed: u64,
    /// Separates the random streams of different rollout calls (e.g. the step).
    pub stream: u64,
    /// Decode the prompts in this many independent shards, one thread each, with
    /// serial ops inside (0: automatic: on the CPU one per thread for small
    /// models, where a decoding step's ops are too small to split across
    /// threads; 1 for large ones and on CUDA). Results do not depend on it.
    pub shards: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RolloutSample {
    pub prompt: usize,
    /// Generated tokens, the stop token included when one was produced.
    pub tokens: Vec<u32>,
    /// log π(token) under the sampling temperature, one per token.
    pub logprobs: Vec<f32>,
    pub stopped: bool,
}

/// Draws `n` tokens from each row of `logits` (row `r`'s draws on Philox streams
/// `streams[r]..streams[r] + n`) with `c.banned` masked out, and the model's
/// unmasked log-probs of the drawn tokens. On CUDA the masking happens in the
/// sampler; only the ids and log-probs come back.
fn draw(logits: &Tensor, n: usize, c: &RolloutConfig, streams: &[u64]) -> Result<(Vec<u32>, Vec<f32>)> {
    ops::sample_streams(logits, n, &c.sampling, c.seed, streams, &c.banned)
}

impl Qwen25Vl {
    /// The vision placeholder ids a rollout should never draw.
    pub fn vision_token_ids(&self) -> Vec<u32> {
        let t = &self.config.tokens;
        vec![t.image_token_id, t.video_token_id, t.vision_start_token_id, t.vision_end_token_id]
    }

    /// Samples `group` responses for every prompt. Output order: prompt-major,
    /// `prompt * group + j`. Sample `s`'s token `t` is drawn from Philox stream
    /// `stream·2³² + t·total + s` (the first token: `+ s`), so results depend only
    /// on (seed, stream), not on sharding or on which samples already stopped.
    pub fn rollout(&self, prompts: &[PromptInput], c: &RolloutConfig) -> Result<Vec<RolloutSample>> {
        let threads = rayon::current_num_threads();
        // On CUDA every op goes to one stream: shards would only contend for it
        // (and run on threads outside the caller's device handle).
        let shards = match c.shards {
            0 if self.device() == Device::Cpu && self.config.text.hidden_size <= 1024 => threads,
            0 => 1,
            n => n,
        }
        .min(prompts.len())
        .max(1);
        let total = prompts.len() * c.group;
        if shards == 1 {
            return self.rollout_shard(prompts, 0, total, c);
        }
        let per = prompts.len().div_ceil(shards);
        let parts: Vec<Result<Vec<RolloutSample>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = prompts
                .chunks(per)
                .enumerate()
                .map(|(i, chunk)| {
                    scope.spawn(move || {
                        // A one-thread pool: the shard's ops run serially on it.
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(1)
                            .build()
                            .map_err(|e| crate::arg_err!("rollout", "thread pool: {e}"))?;
                        pool.install(|| self.rollout_shard(chunk, i * per, total, c))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a rollout shard panicked")).collect()
        });
        let mut out = Vec::with_capacity(total);
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }

    /// Rolls out `prompts`, which are prompts `first..first + len` of a call with
    /// `total` samples (for the stream ids); prompt indices in the output are global.
    fn rollout_shard(
        &self,
        prompts: &[PromptInput],
        first: usize,
        total_all: usize,
        c: &RolloutConfig,
    ) -> Result<Vec<RolloutSample>> {
        let cfg = &self.config.text;
        let g = c.group;
        let total = prompts.len() * g;
        let stream_base = c.stream.wrapping_mul(1 << 32);
        let n_layers = cfg.num_hidden_layers;
        // Prefill each prompt once; sample the first token of all its G samples.
        let mut prefix_k: Vec<Vec<Tensor>> = vec![Vec::new(); n_layers];
        let mut prefix_v: Vec<Vec<Tensor>> = vec![Vec::new(); n_layers];
        let mut next_pos = Vec::with_capacity(prompts.len());
        let (mut cu_k_prefix, mut samples) = (vec![0i32], Vec::with_capacity(total));
        let prefill_range = nvtx::range(Phase::RolloutPrefill);
        for (p, prompt) in prompts.iter().enumerate() {
            let batch = Batch::new(
                &[Sample { tokens: prompt.tokens.clone(), labels: None }],
                prompt.pixels.clone(),
                &prompt.grids,
                &self.config,
            )?;
            let (x, _) = self.embed(&batch)?;
            let (cos, sin) = self.rope_tables(&batch.positions)?;
            let len = prompt.tokens.len();
            let mut cache = KvCache::new(cfg, len, self.device())?;
            let logits = self.text.forward_cached(&x, &cos, &sin, &mut cache)?;
            for (l, (k, v)) in cache.layers.into_iter().enumerate() {
                prefix_k[l].push(k);
                prefix_v[l].push(v);
            }
            cu_k_prefix.push(cu_k_prefix.last().expect("starts at 0") + len as i32);
            next_pos.push(batch.positions.to_vec_i32()?.into_iter().max().unwrap_or(-1) + 1);
            let last = logits.narrow(0, len - 1, 1)?;
            let (tok, lp) = draw(&last, g, c, &[stream_base + ((first + p) * g) as u64])?;
            for (t, l) in tok.into_iter().zip(lp) {
                samples.push(RolloutSample {
                    prompt: first + p,
                    tokens: vec![t],
                    logprobs: vec![l],
                    stopped: c.stop.contains(&t),
                });
            }
        }
        let prefix: Vec<(Tensor, Tensor)> = (0..n_layers)
            .map(|l| {
                let ks: Vec<&Tensor> = prefix_k[l].iter().collect();
                let vs: Vec<&Tensor> = prefix_v[l].iter().collect();
                Ok((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?))
            })
            .collect::<Result<_>>()?;
        drop((prefix_k, prefix_v));
        let cu_k_prefix = Tensor::from_i32(cu_k_prefix.clone(), [cu_k_prefix.len()], Device::Cpu)?;
        // Each sample's own suffix cache, per layer.
        let shape = [c.max_new_tokens.max(1), cfg.num_key_value_heads, cfg.head_dim()];
        let mut suffix: Vec<Vec<(Tensor, Tensor)>> = (0..total)
            .map(|_| {
                (0..n_layers)
                    .map(|_| {
                        let (dev, dtype) = (self.device(), super::text::kv_dtype(self.device()));
                        Ok((Tensor::zeros(shape, dtype, dev)?, Tensor::zeros(shape, dtype, dev)?))
                    })
                    .collect()
            })
            .collect::<Result<_>>()?;
        let head = &self.text.lm_head.as_ref().unwrap_or(&self.text.embed).value;
        // Generated tokens are text: their three M-RoPE components are equal, so
        // a step's cos/sin rows are rows of one table over every position the
        // rollout can reach, made (and on CUDA uploaded) once; a step sends
        // only its positions.
        let reach = next_pos.iter().copied().max().unwrap_or(0).max(0) as usize + c.max_new_tokens;
        let all: Vec<i32> = (0..3).flat_map(|_| 0..reach as i32).collect();
        let (cos_table, sin_table) = self.rope_tables(&Tensor::from_i32(all, [3, reach], Device::Cpu)?)?;
        drop(prefill_range);
        for step in 1..c.max_new_tokens {
            let _r = nvtx::range(Phase::RolloutDecode);
            // Active samples, in prompt order (cascade segments are per prompt).
            let active: Vec<usize> = (0..total).filter(|&s| !samples[s].stopped).collect();
            if active.is_empty() {
                break;
            }
            let lens: Vec<usize> = active.iter().map(|&s| samples[s].tokens.len() - 1).collect();
            let ids: Vec<i32> = active.iter().map(|&s| *samples[s].tokens.last().expect("one token") as i32).collect();
            let n = active.len();
            let pos: Vec<i32> =
                active.iter().zip(&lens).map(|(&s, &len)| next_pos[samples[s].prompt - first] + len as i32).collect();
            let mut cu_q = vec![0i32];
            for p in 0..prompts.len() {
                let k = active.iter().filter(|&&s| samples[s].prompt == first + p).count() as i32;
                cu_q.push(cu_q.last().expect("starts at 0") + k);
            }
            let cu_q = Tensor::from_i32(cu_q.clone(), [cu_q.len()], Device::Cpu)?;
            let pos = Tensor::from_i32(pos, [n], Device::Cpu)?;
            let (cos, sin) = (ops::index_select(&cos_table, &pos)?, ops::index_select(&sin_table, &pos)?);
            let mut h = ops::index_select(&self.text.embed.value, &Tensor::from_i32(ids, [n], Device::Cpu)?)?;
            for (l, layer) in self.text.layers.iter().enumerate() {
                let mut kv: Vec<&mut (Tensor, Tensor)> = suffix
                    .iter_mut()
                    .enumerate()
                    .filter(|(s, _)| !samples[*s].stopped)
                    .map(|(_, v)| &mut v[l])
                    .collect();
                h = layer.forward_cascade(&h, &cos, &sin, cfg, &prefix[l], &cu_q, &cu_k_prefix, &mut kv, &lens)?;
            }
            let (normed, _) = ops::rms_norm(&h, &self.text.norm.value, cfg.rms_norm_eps)?;
            let logits = ops::linear(&normed, head, None)?;
            let streams: Vec<u64> =
                active.iter().map(|&s| stream_base + (step * total_all + first * g + s) as u64).collect();
            let (tok, lp) = draw(&logits, 1, c, &streams)?;
            for ((&s, t), l) in active.iter().zip(tok).zip(lp) {
                let smp = &mut samples[s];
                smp.tokens.push(t);
                smp.logprobs.push(l);
                smp.stopped = c.stop.contains(&t);
            }
        }
        Ok(samples)
    }
}
