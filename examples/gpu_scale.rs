//! The CUDA path at a released model's widths, measured: one SFT step (full
//! fine-tuning and LoRA) and one GRPO step (rollouts of a group, then the
//! update) of a model with Qwen2.5-VL-3B's (or 7B's) widths and vocabulary but
//! only a few layers, so that it runs in seconds on one GPU. Per step it prints
//! the device accounting, and next to it what `actial-train --plan` predicts
//! for the same dims and workload:
//!
//! - the pool's high-water mark of the step, measured and planned;
//! - device-to-host bytes per decode draw (the budget: 16) and launches per
//!   decoder layer per decode step;
//!
//!   cargo run --release --example gpu_scale -- [3b|7b|tiny] [LAYERS] [PROMPTS] [GROUP] [NEW_TOKENS] [IMAGE_PX]
//!
//! Defaults: 3b, 2 layers (and 2 vision blocks), 2 prompts, groups of 16, 64
//! new tokens, 224 px renders (64 image tokens each). `ACTIAL_DEVICE` picks the
//! device (default cuda:0; `ACTIAL_EMULATED_DRIVER=1` runs it on the CPU, at
//! `tiny` widths in minutes). tools/gpu-check.sh runs it on a lent GPU.

use actial::cuda::accounting::Phase;
use actial::data::synth::{SynthConfig, pair_records, synth_pair};
use actial::model::Qwen25Vl;
use actial::model::image::ImageProcessorConfig;
use actial::model::tiny::tiny_tokenizer;
use actial::train::config::SftConfig;
use actial::train::plan::{Workload, grpo_update_memory, rollout_memory, step_memory};
use actial::{DType, Device};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let width = args.next().unwrap_or_else(|| "3b".into());
    let mut num = |d: usize| args.next().map(|s| s.parse().expect("a number")).unwrap_or(d);
    let (layers, prompts, group, new_tokens, image_px) = (num(2), num(2), num(16), num(64), num(224));
    let device = std::env::var("ACTIAL_DEVICE").unwrap_or_else(|_| "cuda".into());
    Device::parse(&device)?.check_available()?;
    let tok = tiny_tokenizer()?;
    let cfg = actial::model::tiny::with_released_widths(&tok, &width, layers)?;
    let t = &cfg.text;
    println!(
        "{width} widths, {layers} layers: text {} (heads {}/{}, MLP {}), vocab {}, vision {} x {} blocks; {device}",
        t.hidden_size,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.intermediate_size,
        t.vocab_size,
        cfg.vision.hidden_size,
        cfg.vision.depth
    );

    // Viewpoint questions on rendered pairs: SFT examples and GRPO prompts.
    let dir = std::env::temp_dir().join(format!("actial-gpu-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let synth = SynthConfig { size: image_px as u32, supersample: 1, ..SynthConfig::default() };
    let mut records = Vec::new();
    for i in 0..prompts.max(4) as u64 {
        let p = synth_pair(8, i, &synth);
        let paths = [dir.join(format!("{i}_a.png")), dir.join(format!("{i}_b.png"))];
        for (img, path) in p.images.iter().zip(&paths) {
            img.save(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        records.extend(pair_records(i, &p, paths).0);
    }
    let proc = ImageProcessorConfig::for_vision(&cfg.vision);
    let examples = actial::train::data::encode_records(&records, &tok, &proc, None, 4096)?.examples;
    let system = Some(actial::data::qa::ACTIAL_SYSTEM);
    let (items, _) = actial::train::eval::encode_prompts(&records[..prompts], &tok, &proc, system, 4096)?;

    let mut base = Qwen25Vl::random(cfg.clone(), 7)?;
    base.to_device(Device::Cpu, DType::BF16)?;

    println!("\n## SFT step (4 samples of two {image_px}px photos in one micro-batch)");
    println!(
        "{:<6} {:>8} {:>16} {:>16} {:>8} {:>9} {:>7}",
        "mode", "tokens", "pool peak", "planned", "off", "launches", "gemms"
    );
    for lora in [false, true] {
        let mut c = SftConfig::tiny_defaults();
        (c.run.global_batch, c.run.micro_batch, c.run.steps, c.optim.warmup_steps) = (4, 4, 2, 1);
        c.run.device = device.clone();
        c.lora.enabled = lora;
        let mut tr = actial::train::sft::SftTrainer::new(c.clone(), base.clone(), examples.clone())?;
        tr.train_step()?; // the cuBLASLt workspace exists from here on, as in every later step
        let m = tr.train_step()?;
        let Some(acc) = m.cuda.as_ref() else {
            println!("(no device accounting on {device})");
            return Ok(());
        };
        let patches: usize =
            (4..8).map(|p| tr.examples[tr.example_at(p)].pixels.as_ref().map_or(0, |px| px.dims()[0])).sum();
        let plan = step_memory(&cfg, &c, Workload { tokens: m.tokens as u64, patches: patches as u64 }, false);
        let tot = acc.total();
        println!(
            "{:<6} {:>8} {:>16} {:>16} {:>+7.1}% {:>9} {:>7}",
            if lora { "LoRA" } else { "full" },
            m.tokens,
            mib(acc.pool_peak_bytes),
            mib(plan.peak),
            100.0 * (plan.peak as f64 / acc.pool_peak_bytes as f64 - 1.0),
            tot.launches,
            tot.gemms
        );
    }

    println!("\n## GRPO step ({prompts} prompts x {group} samples x up to {new_tokens} new tokens, LoRA, beta 0.04)");
    let mut c = SftConfig::embedded_defaults();
    c.run.device = device.clone();
    c.lora.enabled = true;
    let g = &mut c.grpo;
    (g.steps, g.prompts_per_step, g.group, g.mini_batch_prompts, g.micro_batch) =
        (1, prompts, group, prompts, Some(group));
    (g.max_new_tokens, g.beta, g.skip_flat_updates) = (new_tokens, 0.04, false);
    g.max_prompt_tokens = items.iter().map(|i| i.prompt.tokens.len()).max().unwrap_or(0);
    let mut tr = actial::train::grpo_trainer::GrpoTrainer::new(c.clone(), base, items, tok)?;
    // The rollout alone first (the step's peak is usually the update's): the
    // pool's high-water mark while the KV pool is full, against its plan.
    let dev = Device::parse(&device)?;
    let inputs: Vec<_> = tr.prompts.iter().map(|p| p.prompt.clone()).collect();
    let _ = actial::cuda::take_accounting(dev);
    tr.model.rollout(&inputs, &tr.rollout_config())?;
    let rollout_peak = actial::cuda::take_accounting(dev).map_or(0, |a| a.pool_peak_bytes);
    let planned_rollout = rollout_memory(&cfg, &c).peak;
    println!(
        "rollout alone: pool peak {}, planned {} ({:+.1}%; the plan leaves out the prefill's activations)",
        mib(rollout_peak),
        mib(planned_rollout),
        100.0 * (planned_rollout as f64 / rollout_peak.max(1) as f64 - 1.0)
    );
    let m = tr.train_step()?;
    let acc = m.cuda.clone().expect("a CUDA step carries its accounting");
    println!("{}", acc.table());
    let decode = acc.phase(Phase::RolloutDecode);
    let samples = (prompts * group) as f64;
    // Every sample's first token comes from the prefill; each later one is a decode draw.
    let draws = (m.response_len_mean * samples - samples).max(1.0);
    let steps = (m.response_len_max.max(2) - 1) as f64;
    println!(
        "decode: {draws:.0} draws in {steps:.0} steps; {:.1} B to the host per draw (budget 16), {:.1} B to the \
         device per draw; {:.1} launches + {:.1} GEMMs per decoder layer per decode step",
        decode.d2h_bytes as f64 / draws,
        decode.h2d_bytes as f64 / draws,
        decode.launches as f64 / (steps * layers as f64),
        decode.gemms as f64 / (steps * layers as f64),
    );
    // The plan for this step's own workload: the rollout with its real prompt
    // length; the update over one micro-batch (one group: its prompt and
    // images `group` times, and the responses as long as they came out).
    let rollout = rollout_memory(&cfg, &c);
    let prompt = &tr.prompts.iter().max_by_key(|p| p.prompt.tokens.len()).expect("prompts").prompt;
    let patches = prompt.pixels.as_ref().map_or(0, |px| px.dims()[0]) * group;
    let tokens = ((prompt.tokens.len() as f64 + m.response_len_mean) * group as f64).round() as u64;
    let update = grpo_update_memory(&cfg, &c, Workload { tokens, patches: patches as u64 }, false);
    let planned = rollout.peak.max(update.peak);
    println!(
        "pool peak of the step {}, planned {} ({:+.1}%: rollout {}, update micro-batch of {tokens} tokens, {patches} \
         patches {}); response length mean {:.1}, max {}",
        mib(acc.pool_peak_bytes),
        mib(planned),
        100.0 * (planned as f64 / acc.pool_peak_bytes as f64 - 1.0),
        mib(rollout.peak),
        mib(update.peak),
        m.response_len_mean,
        m.response_len_max
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}
