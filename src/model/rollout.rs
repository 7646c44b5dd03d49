//! Grouped rollouts for GRPO: every prompt (images + text) is prefilled once; its
//! G samples share that prefix's keys and values (no recomputation, no G copies)
//! and keep only their own generated suffix; all samples of all prompts decode
//! together, one token per step, with cascade attention (prefix + suffix merged by
//! log-sum-exp). Each token's log-probability under the sampling policy
//! (temperature-scaled, full vocabulary) is recorded.

use super::kv_pool::{KV_BLOCK_SIZE, KvPool, KvPoolSpec};
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
    /// Most samples decoding at once in each shard, rounded down to whole
    /// groups (at least one); 0: every sample of the call. Bounds the KV cache
    /// (`model::kv_pool`); results do not depend on it.
    pub max_inflight_samples: usize,
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
    ///
    /// Continuous batching over a paged KV cache ([`KvPool`]): at most
    /// `max_inflight_samples` samples (whole groups) decode at once; a prompt is
    /// prefilled and admitted when a group's slot is free, and a finished
    /// sample gives its blocks back at once (its group's prefix goes with the
    /// group's last sample). A sample's draws do not depend on what else is in
    /// flight.
    fn rollout_shard(
        &self,
        prompts: &[PromptInput],
        first: usize,
        total_all: usize,
        c: &RolloutConfig,
    ) -> Result<Vec<RolloutSample>> {
        let cfg = &self.config.text;
        let (g, dev) = (c.group, self.device());
        let total = prompts.len() * g;
        let stream_base = c.stream.wrapping_mul(1 << 32);
        let group_slots = match c.max_inflight_samples {
            0 => prompts.len(),
            n => (n / g.max(1)).max(1),
        }
        .clamp(1, prompts.len().max(1));
        let max_prompt = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(1);
        let spec = KvPoolSpec {
            block_size: KV_BLOCK_SIZE,
            group_slots,
            sample_slots: group_slots * g,
            max_prefix_tokens: max_prompt,
            max_suffix_tokens: c.max_new_tokens,
        };
        let mut pool = KvPool::new(cfg, dev, spec)?;
        // Generated tokens are text: their three M-RoPE components are equal, so
        // a step's cos/sin rows are rows of one table over every position the
        // rollout can reach (M-RoPE positions never pass the token count), made
        // (and on CUDA uploaded) once; a step sends only its positions.
        let reach = max_prompt + c.max_new_tokens;
        let all: Vec<i32> = (0..3).flat_map(|_| 0..reach as i32).collect();
        let (cos_table, sin_table) = self.rope_tables(&Tensor::from_i32(all, [3, reach], Device::Cpu)?)?;
        let head = &self.text.lm_head.as_ref().unwrap_or(&self.text.embed).value;
        let done = |s: &RolloutSample| s.stopped || s.tokens.len() >= c.max_new_tokens;

        let mut samples: Vec<RolloutSample> = Vec::with_capacity(total);
        let mut live: Vec<Option<LiveSample>> = (0..total).map(|_| None).collect();
        let mut inflight: Vec<LiveGroup> = Vec::new();
        let mut free_groups: Vec<usize> = (0..group_slots).rev().collect();
        let mut free_samples: Vec<usize> = (0..group_slots * g).rev().collect();
        let mut next = 0;
        loop {
            // Admit prompts while a group slot is free: prefill, store the
            // prefix in the pool, draw every sample's first token.
            while next < prompts.len() && !free_groups.is_empty() {
                let _r = nvtx::range(Phase::RolloutPrefill);
                let (p, prompt) = (next, &prompts[next]);
                next += 1;
                let batch = Batch::new(
                    &[Sample { tokens: prompt.tokens.clone(), labels: None }],
                    prompt.pixels.clone(),
                    &prompt.grids,
                    &self.config,
                )?;
                let (x, _) = self.embed(&batch)?;
                let (cos, sin) = self.rope_tables(&batch.positions)?;
                let len = prompt.tokens.len();
                let mut cache = KvCache::new(cfg, len, dev)?;
                let logits = self.text.forward_cached(&x, &cos, &sin, &mut cache)?;
                let gslot = free_groups.pop().expect("checked non-empty");
                let blocks = pool.alloc(len.div_ceil(KV_BLOCK_SIZE))?;
                for (b, &id) in blocks.iter().enumerate() {
                    pool.prefix.set(gslot, b, id)?;
                }
                pool.prefix.sync()?;
                let rows: Vec<i32> = (0..len).map(|r| pool.row(&blocks, r)).collect();
                let rows_dev = Tensor::from_i32(rows.clone(), [len], Device::Cpu)?.to_device(dev)?;
                let at = ops::StoreRows { host: &rows, device: &rows_dev, range: 0..len };
                for ((k, v), layer) in cache.layers.iter().zip(pool.layers.iter_mut()) {
                    ops::store_kv(&mut layer.0, &mut layer.1, k, v, &at)?;
                }
                drop(cache);
                let next_pos = batch.positions.to_vec_i32()?.into_iter().max().unwrap_or(-1) + 1;
                let last = logits.narrow(0, len - 1, 1)?;
                let (tok, lp) = draw(&last, g, c, &[stream_base + ((first + p) * g) as u64])?;
                for (j, (t, l)) in tok.into_iter().zip(lp).enumerate() {
                    debug_assert_eq!(samples.len(), p * g + j, "prompts are admitted in order");
                    samples.push(RolloutSample {
                        prompt: first + p,
                        tokens: vec![t],
                        logprobs: vec![l],
                        stopped: c.stop.contains(&t),
                    });
                    let slot = free_samples.pop().expect("a free group slot leaves its samples' slots free");
                    live[p * g + j] = Some(LiveSample { slot, blocks: Vec::new() });
                }
                inflight.push(LiveGroup { prompt: p, slot: gslot, blocks, prefix_len: len, next_pos });
            }
            retire(&mut inflight, &mut live, &samples, g, &done, &mut pool, &mut free_groups, &mut free_samples);
            if inflight.is_empty() {
                if next >= prompts.len() {
                    break;
                }
                continue;
            }

            // One decoding step of every live sample, grouped by prompt.
            let _r = nvtx::range(Phase::RolloutDecode);
            let (mut cu_group, mut group_slot, mut prefix_len) = (vec![0usize], Vec::new(), Vec::new());
            let (mut active, mut sample_slot, mut suffix_len, mut store_row, mut pos) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for grp in &inflight {
                for s in grp.prompt * g..(grp.prompt + 1) * g {
                    if done(&samples[s]) {
                        continue;
                    }
                    let ls = live[s].as_mut().expect("a sample in flight is live");
                    // The newest token's key row: one block more every block_size tokens.
                    let r = samples[s].tokens.len() - 1;
                    if r.is_multiple_of(KV_BLOCK_SIZE) {
                        let b = pool.alloc(1)?[0];
                        pool.suffix.set(ls.slot, ls.blocks.len(), b)?;
                        ls.blocks.push(b);
                    }
                    active.push(s);
                    sample_slot.push(ls.slot as i32);
                    suffix_len.push(r as i32 + 1);
                    store_row.push(pool.row(&ls.blocks, r));
                    pos.push(grp.next_pos + r as i32);
                }
                let n = active.len() - cu_group.last().expect("starts at 0");
                if n > 0 {
                    cu_group.push(active.len());
                    group_slot.push(grp.slot as i32);
                    prefix_len.push(grp.prefix_len as i32);
                }
            }
            pool.suffix.sync()?;
            let n = active.len();
            let rows = ops::DecodeRows::new(cu_group, group_slot, prefix_len, sample_slot, suffix_len, store_row, dev)?;
            let ids: Vec<i32> = active.iter().map(|&s| *samples[s].tokens.last().expect("one token") as i32).collect();
            let pos = Tensor::from_i32(pos, [n], Device::Cpu)?;
            let (cos, sin) = (ops::index_select(&cos_table, &pos)?, ops::index_select(&sin_table, &pos)?);
            let mut h = ops::index_select(&self.text.embed.value, &Tensor::from_i32(ids, [n], Device::Cpu)?)?;
            for (layer, kv) in self.text.layers.iter().zip(pool.layers.iter_mut()) {
                h = layer.forward_paged(&h, &cos, &sin, cfg, kv, (&pool.prefix, &pool.suffix), KV_BLOCK_SIZE, &rows)?;
            }
            let (normed, _) = ops::rms_norm(&h, &self.text.norm.value, cfg.rms_norm_eps)?;
            let logits = ops::linear(&normed, head, None)?;
            // Token t of sample s comes from stream t·total + s of the call.
            let streams: Vec<u64> = active
                .iter()
                .map(|&s| stream_base + (samples[s].tokens.len() * total_all + first * g + s) as u64)
                .collect();
            let (tok, lp) = draw(&logits, 1, c, &streams)?;
            for ((&s, t), l) in active.iter().zip(tok).zip(lp) {
                let smp = &mut samples[s];
                smp.tokens.push(t);
                smp.logprobs.push(l);
                smp.stopped = c.stop.contains(&t);
            }
            retire(&mut inflight, &mut live, &samples, g, &done, &mut pool, &mut free_groups, &mut free_samples);
        }
        Ok(samples)
    }
}

/// A sample in flight: its suffix table row and blocks.
struct LiveSample {
    slot: usize,
    blocks: Vec<u32>,
}

/// A prompt in flight: its prefix table row and blocks, prompt length, and
/// the position of its first generated token.
struct LiveGroup {
    prompt: usize,
    slot: usize,
    blocks: Vec<u32>,
    prefix_len: usize,
    next_pos: i32,
}

/// Gives back the blocks and slots of finished samples, and of groups whose
/// samples have all finished.
#[allow(clippy::too_many_arguments)]
fn retire(
    inflight: &mut Vec<LiveGroup>,
    live: &mut [Option<LiveSample>],
    samples: &[RolloutSample],
    g: usize,
    done: &dyn Fn(&RolloutSample) -> bool,
    pool: &mut KvPool,
    free_groups: &mut Vec<usize>,
    free_samples: &mut Vec<usize>,
) {
    inflight.retain(|grp| {
        let range = grp.prompt * g..(grp.prompt + 1) * g;
        for s in range.clone() {
            if done(&samples[s])
                && let Some(ls) = live[s].take()
            {
                pool.release(&ls.blocks);
                free_samples.push(ls.slot);
            }
        }
        let finished = range.clone().all(|s| live[s].is_none());
        if finished {
            pool.release(&grp.blocks);
            free_groups.push(grp.slot);
        }
        !finished
    });
}
