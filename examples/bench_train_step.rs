//! One training step (forward + backward, all parameters trainable) of the tiny
//! preset, timed. tools/bench_train_step.py runs this and PyTorch eager on the same
//! checkpoint and batch, side by side, and prints the ratio.
//!
//!   cargo run --release --example bench_train_step -- OUT_DIR [STEPS] [full|lora]
//!
//! A 4th argument `recompute` turns on activation recomputation in every layer
//! and block (peak memory is reported either way). `ACTIAL_DEVICE=cuda` runs the
//! step on the GPU (frozen weights bf16, f32 masters; tools/gpu-check.sh).
//!
//! `lora`: rank-16 adapters (alpha 32) on q/k/v/o/gate/up/down of the language
//! model, everything else frozen (PyTorch side: PEFT with the same targets).
//!
//! Writes OUT_DIR/{config.json, model.safetensors, batch.safetensors} (the random
//! tiny model and a batch of 16 two-image viewpoint questions), then prints one
//! JSON line with the timings.

use std::path::PathBuf;
use std::time::Instant;

use actial::model::image::{ImageProcessorConfig, preprocess};
use actial::model::tiny::{tiny_config, tiny_tokenizer};
use actial::model::tokenizer::{Content, Message, Role};
use actial::model::{Batch, LoraSpec, Part, Qwen25Vl, Sample, weights};
use actial::rng::Philox;
use actial::{DType, Device, Result, Tensor};

// mimalloc reuses freed buffers instead of returning them to the OS: the CPU path
// allocates every activation, and glibc's fresh mmaps cost page faults per step
// (~30% of a tiny-model training step; docs/ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 16;

fn main() -> Result<()> {
    actial::util::keep_freed_memory();
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().expect("usage: bench_train_step OUT_DIR [STEPS]"));
    let steps: usize = args.next().map(|s| s.parse().expect("STEPS is a number")).unwrap_or(10);
    let lora = args.next().as_deref() == Some("lora");
    let recompute = args.next().as_deref() == Some("recompute");
    let tok = tiny_tokenizer()?;
    let cfg = tiny_config(&tok);
    let mut model = Qwen25Vl::random(cfg.clone(), 1)?;
    model.save(&out, DType::F32)?;

    // 16 samples: two 112x112 images, the paper's first question, a letter answer.
    let mut rng = Philox::new(2, 0);
    let imgs: Vec<image::RgbImage> = (0..2 * BATCH)
        .map(|_| image::RgbImage::from_fn(112, 112, |_, _| image::Rgb([(rng.next_u32() % 256) as u8, 90, 160])))
        .collect();
    let px = preprocess(&imgs, &ImageProcessorConfig::for_vision(&cfg.vision))?;
    let question = "The object captured in these two photos did not move. From the camera's perspective, did the position \
        of the camera that captured the second photo move relative to the first photo's camera position? A: Move to the left \
        B: Move to the right C: No movement Select the correct option, please output only the option letter!";
    let msgs = [
        Message { role: Role::User, content: vec![Content::Image, Content::Image, Content::Text(question.into())] },
        Message::text(Role::Assistant, "A"),
    ];
    let enc = tok.encode_chat(&msgs, &[16, 16], false)?;
    let samples: Vec<Sample> =
        (0..BATCH).map(|_| Sample { tokens: enc.ids.clone(), labels: Some(enc.labels.clone()) }).collect();
    let batch = Batch::new(&samples, Some(px.pixel_values.clone()), &px.grids, &cfg)?;

    // The same batch for PyTorch, padded layout [B, L] (no padding is needed: equal lengths).
    let l = enc.ids.len();
    let ids: Vec<i32> = samples.iter().flat_map(|s| s.tokens.iter().map(|&t| t as i32)).collect();
    let labels: Vec<i32> = samples.iter().flat_map(|s| s.labels.clone().unwrap()).collect();
    let grid: Vec<i32> = px.grids.iter().flat_map(|g| g.iter().map(|&x| x as i32)).collect();
    let t = |v: Vec<i32>, s: &[usize]| Tensor::from_i32(v, s, Device::Cpu);
    let tensors = [
        ("input_ids".to_string(), t(ids, &[BATCH, l])?),
        ("labels".to_string(), t(labels, &[BATCH, l])?),
        ("image_grid_thw".to_string(), t(grid, &[2 * BATCH, 3])?),
        ("pixel_values".to_string(), px.pixel_values.clone()),
    ];
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::save_safetensors(&out.join("batch.safetensors"), &refs, DType::F32, None)?;

    if lora {
        let targets =
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].map(String::from).to_vec();
        model.add_lora(&LoraSpec { rank: 16, alpha: 32.0, targets, language: true, vision: false, seed: 0 })?;
    } else {
        for part in [Part::VisionTower, Part::Merger, Part::Language] {
            model.set_trainable(part, true)?;
        }
    }
    if recompute {
        model.text.recompute = vec![true; model.text.layers.len()];
        model.vision.recompute = vec![true; model.vision.blocks.len()];
    }
    let device = Device::parse(&std::env::var("ACTIAL_DEVICE").unwrap_or_else(|_| "cpu".into()))?;
    if device != Device::Cpu {
        model.to_device(device, DType::BF16)?;
    }
    let mut times = Vec::new();
    let mut loss = 0.0;
    for i in 0..steps + 2 {
        model.zero_grad()?;
        device.synchronize()?;
        let t0 = Instant::now();
        loss = model.forward_backward(&batch, None)?.loss;
        device.synchronize()?;
        if i >= 2 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"engine\": \"actial\", \"device\": \"{device}\", \"lora\": {lora}, \"median_s\": {median:.5}, \"min_s\": {:.5}, \"tokens\": {}, \"tokens_per_s\": {:.0}, \"loss\": {loss:.6}, \"threads\": {}, \"recompute\": {recompute}, \"peak_rss_mb\": {:.0}}}",
        times[0],
        batch.tokens(),
        batch.tokens() as f64 / median,
        rayon::current_num_threads(),
        actial::train::sft::peak_rss_mb()
    );
    Ok(())
}
