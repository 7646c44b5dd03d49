//! Rollout throughput of the tiny preset: P prompts (two 112x112 images and the
//! paper's first question each) x G samples, temperature 1, exactly N new tokens
//! per sample (no stop token), timed. tools/bench_rollout.py runs this and
//! transformers' `generate` on the same checkpoint and prompts, side by side.
//!
//!   cargo run --release --example bench_rollout -- OUT_DIR [PROMPTS] [GROUP] [NEW_TOKENS]
//!
//! Writes OUT_DIR/{config.json, model.safetensors, prompts.safetensors} and prints
//! one JSON line. `ACTIAL_DEVICE=cuda` runs the rollouts on the GPU (bf16
//! weights; tools/gpu-check.sh reports both devices).

use std::path::PathBuf;
use std::time::Instant;

use actial::model::image::{ImageProcessorConfig, preprocess};
use actial::model::rollout::{PromptInput, RolloutConfig};
use actial::model::tiny::{tiny_config, tiny_tokenizer};
use actial::model::tokenizer::{Content, Message, Role};
use actial::model::{Qwen25Vl, weights};
use actial::ops::SamplingParams;
use actial::rng::Philox;
use actial::{DType, Device, Result, Tensor};

// See src/bin/actial-train.rs: the binaries use mimalloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    actial::util::keep_freed_memory();
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().expect("usage: bench_rollout OUT_DIR [PROMPTS] [GROUP] [NEW_TOKENS]"));
    let mut num = |d: usize| args.next().map(|s| s.parse().expect("a number")).unwrap_or(d);
    let (n_prompts, group, new_tokens) = (num(4), num(8), num(64));
    let tok = tiny_tokenizer()?;
    let cfg = tiny_config(&tok);
    let mut model = Qwen25Vl::random(cfg.clone(), 1)?;
    model.save(&out, DType::F32)?;
    let mut rng = Philox::new(3, 0);
    let question = "The object captured in these two photos did not move. From the camera's perspective, did the position \
        of the camera that captured the second photo move relative to the first photo's camera position? A: Move to the left \
        B: Move to the right C: No movement Select the correct option, please output only the option letter!";
    let msgs =
        [Message { role: Role::User, content: vec![Content::Image, Content::Image, Content::Text(question.into())] }];
    let enc = tok.encode_chat(&msgs, &[16, 16], true)?;
    let mut prompts = Vec::new();
    let mut all_px = Vec::new();
    for _ in 0..n_prompts {
        let imgs: Vec<image::RgbImage> = (0..2)
            .map(|_| image::RgbImage::from_fn(112, 112, |_, _| image::Rgb([(rng.next_u32() % 256) as u8, 90, 160])))
            .collect();
        let px = preprocess(&imgs, &ImageProcessorConfig::for_vision(&cfg.vision))?;
        all_px.push(px.pixel_values.clone());
        prompts.push(PromptInput { tokens: enc.ids.clone(), pixels: Some(px.pixel_values), grids: px.grids });
    }
    let ids: Vec<i32> = (0..n_prompts).flat_map(|_| enc.ids.iter().map(|&t| t as i32)).collect();
    let grids: Vec<i32> = (0..2 * n_prompts).flat_map(|_| [1, 8, 8]).collect();
    let px_refs: Vec<&Tensor> = all_px.iter().collect();
    let tensors = [
        ("input_ids".to_string(), Tensor::from_i32(ids, [n_prompts, enc.ids.len()], Device::Cpu)?),
        ("image_grid_thw".to_string(), Tensor::from_i32(grids, [2 * n_prompts, 3], Device::Cpu)?),
        ("pixel_values".to_string(), Tensor::cat(&px_refs, 0)?),
    ];
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::save_safetensors(&out.join("prompts.safetensors"), &refs, DType::F32, None)?;
    let device = Device::parse(&std::env::var("ACTIAL_DEVICE").unwrap_or_else(|_| "cpu".into()))?;
    if device != Device::Cpu {
        model.to_device(device, DType::BF16)?;
    }
    let c = RolloutConfig {
        group,
        max_new_tokens: new_tokens,
        sampling: SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 },
        stop: vec![],
        banned: model.vision_token_ids(),
        seed: 0,
        stream: 0,
        shards: 0,
        max_inflight_samples: 0,
    };
    model.rollout(&prompts, &RolloutConfig { max_new_tokens: 4, ..c.clone() })?; // warm-up
    let mut times = Vec::new();
    let mut generated = 0;
    for i in 0..3 {
        let t0 = Instant::now();
        let out = model.rollout(&prompts, &RolloutConfig { stream: i, ..c.clone() })?;
        device.synchronize()?;
        times.push(t0.elapsed().as_secs_f64());
        generated = out.iter().map(|s| s.tokens.len()).sum::<usize>();
    }
    times.sort_by(f64::total_cmp);
    let med = times[1];
    println!(
        "{{\"engine\": \"actial\", \"device\": \"{device}\", \"prompts\": {n_prompts}, \"group\": {group}, \"new_tokens\": {new_tokens}, \"generated\": {generated}, \"median_s\": {med:.4}, \"tokens_per_s\": {:.0}}}",
        generated as f64 / med
    );
    Ok(())
}
