//! The plan of a run before it runs: peak device memory per phase and the time
//! of one step, from the model's dims (config.json alone) and the run config,
//! for the GPUs people rent (A100, H100, H200). `actial-train --plan` prints it.
//!
//! Memory follows what the CUDA path allocates (docs/ARCHITECTURE.md, "CUDA"):
//! trainable weights are f32 masters (4 B) with f32 gradients (4 B) and two
//! f32 AdamW moments (8 B); frozen weights are bf16 (2 B); activations are
//! bf16, with the tensors each layer keeps for its backward counted one by one
//! (only the layer inputs with recomputation); the fused LM head + loss holds
//! one chunk of logits; cuBLASLt has a 32 MiB workspace. Time is the larger of
//! FLOPs at the GPU's dense bf16 peak and bytes at its HBM bandwidth (a lower
//! bound: real kernels reach a fraction of peak). `tests/cuda_model.rs` checks
//! the memory model against the emulated pool's measured high-water mark.

use std::fmt::Write as _;

use super::config::SftConfig;
use crate::cuda::accounting::bytes;
use crate::model::config::Qwen25VlConfig;
use crate::model::kv_pool::{KV_BLOCK_SIZE, KvPoolSpec};

pub use crate::cuda::gpus::{GPUS, GpuSpec};

/// cuBLASLt's workspace (`cuda::gemm`).
pub const GEMM_WORKSPACE: u64 = 32 << 20;

/// Parameters by part, and how many of them train.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamCounts {
    pub vision: u64,
    pub merger: u64,
    /// Embedding, decoder layers, final norm and an untied LM head.
    pub language: u64,
    /// LoRA adapter parameters (0 without LoRA).
    pub lora: u64,
    pub trainable: u64,
    pub frozen: u64,
}

/// What a CPU run holds for its whole length before any activation: every
/// weight in f32 (4 bytes), and for each trainable one a gradient and two
/// AdamW moments (12 more). A lower bound of the run's memory.
pub fn cpu_state_bytes(c: &Qwen25VlConfig, run: &SftConfig) -> u64 {
    let p = param_counts(c, run);
    4 * (p.trainable + p.frozen) + 12 * p.trainable
}

/// One linear layer `din -> dout` and its name's last part (LoRA targets match it).
struct Lin {
    name: &'static str,
    din: u64,
    dout: u64,
    bias: bool,
}

fn text_linears(c: &Qwen25VlConfig) -> Vec<Lin> {
    let t = &c.text;
    let (d, i) = (t.hidden_size as u64, t.intermediate_size as u64);
    let (q, kv) = ((t.num_attention_heads * t.head_dim()) as u64, (t.num_key_value_heads * t.head_dim()) as u64);
    vec![
        Lin { name: "q_proj", din: d, dout: q, bias: true },
        Lin { name: "k_proj", din: d, dout: kv, bias: true },
        Lin { name: "v_proj", din: d, dout: kv, bias: true },
        Lin { name: "o_proj", din: q, dout: d, bias: false },
        Lin { name: "gate_proj", din: d, dout: i, bias: false },
        Lin { name: "up_proj", din: d, dout: i, bias: false },
        Lin { name: "down_proj", din: i, dout: d, bias: false },
    ]
}

fn vision_linears(c: &Qwen25VlConfig) -> Vec<Lin> {
    let v = &c.vision;
    let (d, i) = (v.hidden_size as u64, v.intermediate_size as u64);
    vec![
        Lin { name: "qkv", din: d, dout: 3 * d, bias: true },
        Lin { name: "proj", din: d, dout: d, bias: true },
        Lin { name: "gate_proj", din: d, dout: i, bias: true },
        Lin { name: "up_proj", din: d, dout: i, bias: true },
        Lin { name: "down_proj", din: i, dout: d, bias: true },
    ]
}

fn size(l: &Lin) -> u64 {
    l.din * l.dout + if l.bias { l.dout } else { 0 }
}

/// Parameter counts of the model `c` as `run` trains it (full: the parts
/// `train.*` names; LoRA: the adapters on `lora.targets` only).
pub fn param_counts(c: &Qwen25VlConfig, run: &SftConfig) -> ParamCounts {
    let (t, v) = (&c.text, &c.vision);
    let (d, vd) = (t.hidden_size as u64, v.hidden_size as u64);
    let layers = t.num_hidden_layers as u64;
    let per_layer: u64 = text_linears(c).iter().map(size).sum::<u64>() + 2 * d;
    let head = if t.tie_word_embeddings { 0 } else { t.vocab_size as u64 * d };
    let language = t.vocab_size as u64 * d + layers * per_layer + d + head;
    let per_block: u64 = vision_linears(c).iter().map(size).sum::<u64>() + 2 * vd;
    let vision = v.patch_dim() as u64 * vd + v.depth as u64 * per_block;
    let m = v.merge_unit() as u64 * vd;
    let merger = vd + m * m + m + m * v.out_hidden_size as u64 + v.out_hidden_size as u64;
    let total = vision + merger + language;
    if run.lora.enabled {
        let r = run.lora.rank as u64;
        let hits = |lins: Vec<Lin>| -> u64 {
            lins.iter().filter(|l| run.lora.targets.iter().any(|t| t == l.name)).map(|l| r * (l.din + l.dout)).sum()
        };
        let mut lora = 0;
        if run.lora.language {
            lora += layers * hits(text_linears(c));
        }
        if run.lora.vision {
            lora += v.depth as u64 * hits(vision_linears(c));
        }
        return ParamCounts { vision, merger, language, lora, trainable: lora, frozen: total };
    }
    let tr = &run.train;
    let trainable = [(tr.vision_tower, vision), (tr.merger, merger), (tr.language, language)]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n)
        .sum();
    ParamCounts { vision, merger, language, lora: 0, trainable, frozen: total - trainable }
}

/// What one micro-batch holds: packed text tokens and vision patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    pub tokens: u64,
    pub patches: u64,
}

impl Workload {
    /// An SFT micro-batch at the config's limits: `micro_batch` samples of
    /// `max_length` tokens, each with two images of `max_pixels` (the
    /// viewpoint pairs), as many patches as the length leaves room for (an
    /// LM image token is `merge_unit` patches).
    pub fn sft(c: &Qwen25VlConfig, run: &SftConfig) -> Workload {
        let per_image = (run.run.max_pixels / (c.vision.patch_size * c.vision.patch_size)) as u64;
        let (n, len) = (run.run.micro_batch as u64, run.run.max_length as u64);
        let patches = (2 * per_image).min(len * c.vision.merge_unit() as u64);
        Workload { tokens: n * len, patches: n * patches }
    }

    /// A GRPO update micro-batch: `grpo.micro_batch` sequences of prompt +
    /// response, one image of `grpo.max_image_pixels` each (within the prompt).
    pub fn grpo_update(c: &Qwen25VlConfig, run: &SftConfig) -> Workload {
        let g = &run.grpo;
        let per_image = (g.max_image_pixels / (c.vision.patch_size * c.vision.patch_size)) as u64;
        let n = run.grpo_micro_batch() as u64;
        let patches = per_image.min(g.max_prompt_tokens as u64 * c.vision.merge_unit() as u64);
        Workload { tokens: n * (g.max_prompt_tokens + g.max_new_tokens) as u64, patches: n * patches }
    }
}

/// Bytes of bf16 activations the backward keeps, per text token per decoder
/// layer: its input, the normed input, q, k, v, the attention output (and its
/// f32 log-sum-exp per head), the residual sum, the second normed input,
/// gate, up and their SwiGLU product (and two f32 rstd).
fn text_layer_bytes_per_token(c: &Qwen25VlConfig) -> u64 {
    let t = &c.text;
    let (d, i, hq) = (t.hidden_size as u64, t.intermediate_size as u64, t.num_attention_heads as u64);
    let (q, kv) = (hq * t.head_dim() as u64, (t.num_key_value_heads * t.head_dim()) as u64);
    2 * (4 * d + 2 * q + 2 * kv + 3 * i) + 4 * (2 + hq)
}

/// The same for a vision block, per patch.
fn vision_block_bytes_per_patch(c: &Qwen25VlConfig) -> u64 {
    let v = &c.vision;
    let (d, i, h) = (v.hidden_size as u64, v.intermediate_size as u64, v.num_heads as u64);
    2 * (8 * d + 3 * i) + 4 * (2 + h)
}

/// A memory plan: named items and the peak they add up to.
#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    pub items: Vec<(String, u64)>,
    pub peak: u64,
}

impl MemoryPlan {
    fn add(&mut self, name: impl Into<String>, b: u64) {
        self.items.push((name.into(), b));
        self.peak += b;
    }
}

/// Peak device memory of one SFT (or GRPO update) micro-batch step on CUDA.
pub fn step_memory(c: &Qwen25VlConfig, run: &SftConfig, w: Workload, recompute: bool) -> MemoryPlan {
    let p = param_counts(c, run);
    let t = &c.text;
    let (d, v) = (t.hidden_size as u64, t.vocab_size as u64);
    let layers = t.num_hidden_layers as u64;
    let mut m = MemoryPlan::default();
    m.add("weights: frozen, bf16", 2 * p.frozen);
    m.add("weights: trainable f32 masters", 4 * p.trainable);
    m.add("gradients, f32", 4 * p.trainable);
    m.add("AdamW moments, f32", 8 * p.trainable);
    m.add("cuBLASLt workspace", GEMM_WORKSPACE);
    let text_layer = text_layer_bytes_per_token(c) * w.tokens;
    let vision_block = vision_block_bytes_per_patch(c) * w.patches;
    let depth = c.vision.depth as u64;
    let (text_kept, vision_kept) = if recompute {
        // Layer inputs only, plus one layer's cache rebuilt in the backward.
        (2 * d * w.tokens * layers + text_layer, 2 * c.vision.hidden_size as u64 * w.patches * depth + vision_block)
    } else {
        (text_layer * layers, vision_block * depth)
    };
    m.add(
        format!("activations: text, {} tokens{}", w.tokens, if recompute { ", recomputed" } else { "" }),
        text_kept + 4 * d * w.tokens,
    );
    if w.patches > 0 {
        // The tower keeps its blocks' caches in a training forward even when
        // it is frozen (only its backward is skipped).
        let pixels = 4 * c.vision.patch_dim() as u64 * w.patches;
        m.add(format!("activations: vision, {} patches", w.patches), vision_kept + pixels);
    }
    // The backward's peak beyond what is kept: one layer's gradients in flight
    // (about one layer's activations) and the bf16 cast of an f32 master the
    // GEMMs read; or the fused loss: one chunk of logits, dh, the head's cast.
    let chunk = (crate::model::text::DEFAULT_LOGIT_CHUNK_BYTES as u64 / (4 * v)).max(1).min(w.tokens.max(1));
    let head_cast = if p.trainable > 0 && run.train.language && !run.lora.enabled { 2 * v * d } else { 0 };
    let loss = 2 * chunk * v + 2 * d * w.tokens + head_cast;
    let largest_linear = text_linears(c).iter().map(|l| l.din * l.dout).max().unwrap_or(0);
    let backward = text_layer + if p.trainable > 0 && !run.lora.enabled { 2 * largest_linear } else { 0 };
    m.add("transient: max(fused loss chunk, one layer's backward)", loss.max(backward));
    m
}

/// FLOPs of one training step over `w` (forward + backward): 6 per weight
/// per token for the LM (plus attention), vision as QWEN25VL.md counts it.
pub fn step_flops(c: &Qwen25VlConfig, run: &SftConfig, w: Workload) -> f64 {
    let t = &c.text;
    let matmul: u64 = text_linears(c).iter().map(|l| l.din * l.dout).sum::<u64>() * t.num_hidden_layers as u64
        + t.vocab_size as u64 * t.hidden_size as u64;
    let seq = run.run.max_length.max(1) as f64;
    let attn = 6.0 * (t.num_hidden_layers * t.hidden_size) as f64 * seq;
    let text = (6.0 * matmul as f64 + attn) * w.tokens as f64;
    let v = &c.vision;
    let vmat: u64 = vision_linears(c).iter().map(|l| l.din * l.dout).sum::<u64>() * v.depth as u64
        + v.patch_dim() as u64 * v.hidden_size as u64;
    let trained = run.train.vision_tower || run.lora.vision;
    let vision = (if trained { 6.0 } else { 2.0 }) * vmat as f64 * w.patches as f64;
    text + vision
}

/// Seconds of one step at the GPU's peaks: compute, or the bytes the step
/// must move (weights read three times, the optimizer's f32 state read and
/// written), whichever is larger.
pub fn step_seconds(gpu: &GpuSpec, flops: f64, c: &Qwen25VlConfig, run: &SftConfig) -> f64 {
    let p = param_counts(c, run);
    let traffic = 3.0 * (2 * p.frozen + 4 * p.trainable) as f64 + 2.0 * 16.0 * p.trainable as f64;
    (flops / (gpu.bf16_tflops * 1e12)).max(traffic / (gpu.hbm_tbs * 1e12))
}

/// The paged KV pool of a GRPO rollout (`model::kv_pool`): sized for the
/// groups in flight (`grpo.max_inflight_samples`, whole groups; 0: every
/// prompt of a step), each with its prompt's prefix and every sample's suffix
/// at `max_new_tokens`, in blocks.
pub fn rollout_kv(run: &SftConfig) -> KvPoolSpec {
    let g = &run.grpo;
    let group_slots = match g.max_inflight_samples {
        0 => g.prompts_per_step,
        n => (n / g.group.max(1)).max(1),
    }
    .clamp(1, g.prompts_per_step.max(1));
    KvPoolSpec {
        block_size: KV_BLOCK_SIZE,
        group_slots,
        sample_slots: group_slots * g.group,
        max_prefix_tokens: g.max_prompt_tokens,
        max_suffix_tokens: g.max_new_tokens,
    }
}

/// Device memory of a GRPO rollout: weights, optimizer state, the paged KV
/// pool for the samples in flight, and the decode step's logits.
pub fn rollout_memory(c: &Qwen25VlConfig, run: &SftConfig) -> MemoryPlan {
    let t = &c.text;
    let g = &run.grpo;
    let p = param_counts(c, run);
    let kv = rollout_kv(run);
    let mut m = MemoryPlan::default();
    m.add("weights (policy), bf16 for frozen, f32 masters for trainable", 2 * p.frozen + 4 * p.trainable);
    if g.beta > 0.0 {
        m.add("weights (reference), bf16", 2 * (p.frozen + p.trainable));
    }
    m.add("gradients + AdamW moments, f32", 12 * p.trainable);
    m.add("cuBLASLt workspace", GEMM_WORKSPACE);
    m.add(
        format!(
            "KV pool: {} prompts x {} tokens + {} samples x {} tokens in flight, blocks of {}",
            kv.group_slots, g.max_prompt_tokens, kv.sample_slots, g.max_new_tokens, kv.block_size
        ),
        kv.bytes(t, crate::tensor::Device::Cuda(0)),
    );
    m.add("decode logits, [samples in flight, vocab] bf16", 2 * kv.sample_slots as u64 * t.vocab_size as u64);
    m
}

/// Peak device memory of a GRPO update micro-batch over `w`: an SFT step's
/// items, plus the reference model's bf16 weights when the KL term needs it.
pub fn grpo_update_memory(c: &Qwen25VlConfig, run: &SftConfig, w: Workload, recompute: bool) -> MemoryPlan {
    let mut update = step_memory(c, run, w, recompute);
    if run.grpo.beta > 0.0 {
        let p = param_counts(c, run);
        update.add("weights (reference), bf16", 2 * (p.frozen + p.trainable));
    }
    update
}

/// The planned peak of each phase a recipe runs (SFT when `sft`, the GRPO
/// rollout and update when `grpo`), at the config's limits.
pub fn phase_peaks(c: &Qwen25VlConfig, run: &SftConfig, sft: bool, grpo: bool) -> Vec<(&'static str, u64)> {
    let recompute = run.run.recompute_all;
    let mut out = Vec::new();
    if sft {
        out.push(("SFT step", step_memory(c, run, Workload::sft(c, run), recompute).peak));
    }
    if grpo {
        out.push(("GRPO rollout", rollout_memory(c, run).peak));
        out.push(("GRPO update", grpo_update_memory(c, run, Workload::grpo_update(c, run), recompute).peak));
    }
    out
}

/// The plan as text: parameters, then per phase (SFT when `sft`, the GRPO
/// rollout and update when `grpo`) the memory items, the peak, whether it fits
/// each GPU, the step time there, and the cheapest change when it does not fit.
pub fn report(c: &Qwen25VlConfig, run: &SftConfig, sft: bool, grpo: bool) -> String {
    let p = param_counts(c, run);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model: vision {}, merger {}, language {} parameters; {} trainable ({}), {} frozen",
        count(p.vision),
        count(p.merger),
        count(p.language),
        if run.lora.enabled { "LoRA" } else { "full" },
        count(p.trainable),
        count(p.frozen),
    );
    let recompute = run.run.recompute_all;
    let largest = GPUS.iter().map(|g| g.memory_bytes).max().unwrap_or(0);
    if sft {
        sft_report(&mut s, c, run, largest);
    }
    if grpo {
        let rollout = rollout_memory(c, run);
        let kv = rollout_kv(run);
        let title = format!(
            "GRPO rollout ({} of {} samples in flight at a time, continuous batching):",
            kv.sample_slots,
            run.grpo.prompts_per_step * run.grpo.group
        );
        write_phase(&mut s, c, run, &title, &rollout, None);
        if rollout.peak > largest {
            // Groups in flight that fit beside everything else.
            let one = KvPoolSpec { group_slots: 1, sample_slots: run.grpo.group, ..kv };
            let per_group = one.bytes(&c.text, crate::tensor::Device::Cuda(0))
                + 2 * one.sample_slots as u64 * c.text.vocab_size as u64;
            let kv_all = per_group * kv.group_slots as u64;
            let room = largest.saturating_sub(rollout.peak.saturating_sub(kv_all));
            let fit = room / per_group.max(1);
            if fit == 0 {
                let _ = writeln!(
                    s,
                    "  the weights, gradients and moments leave no room for one group's KV: lora.enabled = true first"
                );
            } else {
                let _ = writeln!(
                    s,
                    "  cheapest change: grpo.max_inflight_samples <= {} ({fit} groups of {} in flight)",
                    fit * run.grpo.group as u64,
                    run.grpo.group
                );
            }
        }
        let wu = Workload::grpo_update(c, run);
        let update = grpo_update_memory(c, run, wu, recompute);
        write_phase(
            &mut s,
            c,
            run,
            &format!(
                "GRPO update (micro-batch {}: {} tokens, {} patches):",
                run.grpo_micro_batch(),
                wu.tokens,
                wu.patches
            ),
            &update,
            None,
        );
    }
    let _ = writeln!(
        s,
        "\nStep times are lower bounds at the datasheet peaks (dense bf16 FLOP/s, HBM bandwidth); \
         memory follows the CUDA path's allocations (src/train/plan.rs)."
    );
    s
}

/// `7.62B` / `2.01M` / `950` parameters.
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n => n.to_string(),
    }
}

/// `12.44 s` / `3.1 ms`.
fn seconds(t: f64) -> String {
    if t >= 1.0 { format!("{t:.2} s") } else { format!("{:.2} ms", t * 1e3) }
}

/// The SFT part of [`report`].
fn sft_report(s: &mut String, c: &Qwen25VlConfig, run: &SftConfig, largest: u64) {
    let w = Workload::sft(c, run);
    let recompute = run.run.recompute_all;
    let sft = step_memory(c, run, w, recompute);
    write_phase(
        s,
        c,
        run,
        &format!(
            "SFT step (micro-batch {}: {} tokens, {} patches{}):",
            run.run.micro_batch,
            w.tokens,
            w.patches,
            if recompute { ", recomputation" } else { "" }
        ),
        &sft,
        Some(step_flops(c, run, w) * (run.run.global_batch / run.run.micro_batch.max(1)).max(1) as f64),
    );
    if sft.peak > largest {
        let _ = writeln!(s, "  cheapest changes, in order:");
        let with_recompute = step_memory(c, run, w, true).peak;
        if !recompute && with_recompute < sft.peak {
            let _ = writeln!(s, "    run.recompute_all = true: peak {}", bytes(with_recompute));
        }
        if run.run.micro_batch > 1 {
            let mut one = run.clone();
            one.run.micro_batch = 1;
            let _ = writeln!(
                s,
                "    run.micro_batch = 1 (same global batch): peak {}",
                bytes(step_memory(c, &one, Workload::sft(c, &one), true).peak)
            );
        }
        if !run.lora.enabled {
            let mut lora = run.clone();
            lora.lora.enabled = true;
            let _ = writeln!(s, "    lora.enabled = true: peak {}", bytes(step_memory(c, &lora, w, recompute).peak));
        }
    }
}

/// One phase of [`report`]: its memory items, the peak, and per GPU whether it
/// fits and (given the step's FLOPs) the step time at peak.
fn write_phase(s: &mut String, c: &Qwen25VlConfig, run: &SftConfig, title: &str, m: &MemoryPlan, flops: Option<f64>) {
    let _ = writeln!(s, "\n{title}");
    for (name, n) in &m.items {
        let _ = writeln!(s, "  {name:<70} {:>12}", bytes(*n));
    }
    let _ = writeln!(s, "  {:<70} {:>12}", "peak", bytes(m.peak));
    for gpu in &GPUS {
        let fits = m.peak <= gpu.memory_bytes;
        let time =
            flops.map(|f| format!(", step >= {} at peak", seconds(step_seconds(gpu, f, c, run)))).unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<11} {} ({:.0}% of {}){time}",
            gpu.name,
            if fits { "fits" } else { "DOES NOT FIT" },
            100.0 * m.peak as f64 / gpu.memory_bytes as f64,
            bytes(gpu.memory_bytes)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Qwen25Vl;
    use crate::model::tiny::{tiny_config, tiny_tokenizer};

    /// Bench percentages use the datasheet of the GPU the driver names.
    #[test]
    fn the_datasheet_follows_the_device_name() {
        assert_eq!(GpuSpec::for_device_name("NVIDIA H200").hbm_tbs, 4.8);
        assert_eq!(GpuSpec::for_device_name("NVIDIA A100-SXM4-80GB").bf16_tflops, 312.0);
        assert_eq!(GpuSpec::for_device_name("NVIDIA H100 80GB HBM3").name, "H100 80GB");
        assert_eq!(GpuSpec::for_device_name("emulated GPU").name, "H100 80GB", "unknown: an H100's");
    }

    /// The counts from dims alone equal the parameters the model builds, by part.
    #[test]
    fn parameter_counts_match_the_built_model() {
        let cfg = tiny_config(&tiny_tokenizer().unwrap());
        let mut model = Qwen25Vl::random(cfg.clone(), 1).unwrap();
        let (mut vision, mut merger, mut language) = (0u64, 0u64, 0u64);
        model.visit(&mut |name, p| {
            let n = p.value.numel() as u64;
            if name.starts_with("visual.merger") {
                merger += n;
            } else if name.starts_with("visual.") {
                vision += n;
            } else {
                language += n;
            }
        });
        let run = SftConfig::tiny_defaults();
        let p = param_counts(&cfg, &run);
        assert_eq!((p.vision, p.merger, p.language), (vision, merger, language));
        assert_eq!(p.trainable + p.frozen, vision + merger + language);
    }

    /// The released 7B: 0.68B vision (tower + merger) and 7.62B language
    /// parameters (QWEN25VL.md).
    #[test]
    fn the_7b_counts_match_the_release() {
        let json = include_str!("../../assets/configs/qwen2.5-vl-7b-instruct/config.json");
        let cfg = Qwen25VlConfig::from_json_str(json, "7b config.json").unwrap();
        let p = param_counts(&cfg, &SftConfig::tiny_defaults());
        assert_eq!(((p.vision + p.merger) as f64 / 1e8).round(), 7.0, "{p:?}");
        assert_eq!((p.language as f64 / 1e7).round(), 762.0, "{p:?}");
    }
}
