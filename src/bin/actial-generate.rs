//! Generation with a Qwen2.5-VL model: images + a prompt in, the answer out.
//!
//!   actial-generate --model DIR --image A.png --image B.png --prompt "..." \
//!       [--system TEXT] [--max-new-tokens N] [--greedy] [--dump-logits FILE] [--max-pixels N]
//!
//! Decoding follows the model's `generation_config.json` when it has one (as
//! transformers' `generate` does: Qwen2.5-VL-Instruct ships top_k 1 with
//! repetition_penalty 1.05), greedy otherwise or with `--greedy`; the choice is
//! printed.
//! DIR is a Hugging Face model directory (config.json, *.safetensors,
//! tokenizer.json, optional preprocessor_config.json and generation_config.json),
//! `tiny` (the pretrained tiny base, assets/tiny-base) or `tiny-random`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use actial::model::generate::Decoding;
use actial::model::image::{ResizeBackend, load_image, preprocess};
use actial::model::load::load_model;
use actial::model::tokenizer::{Content, Message, Role};
use actial::model::weights;
use actial::{DType, Result};
use clap::Parser;

// mimalloc reuses freed buffers instead of returning them to the OS: the CPU path
// allocates every activation, and glibc's fresh mmaps cost page faults per step
// (~30% of a tiny-model training step; docs/ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(version, about = "Generation with a Qwen2.5-VL model")]
struct Args {
    /// Model directory (HF layout, or an actial checkpoint / final/), `tiny` (the
    /// pretrained tiny base) or `tiny-random` (random weights).
    #[arg(long)]
    model: String,
    /// Image files (PNG or JPEG), placed before the prompt in the order given.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// The user prompt (may start with "-").
    #[arg(long, allow_hyphen_values = true)]
    prompt: String,
    /// System prompt (default: Qwen's "You are a helpful assistant.").
    #[arg(long, allow_hyphen_values = true)]
    system: Option<String>,
    /// Greedy decoding even when the model's generation_config.json samples.
    #[arg(long)]
    greedy: bool,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Write the logits of every prompt position ([seq, vocab], f32) as safetensors.
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    /// Whose resize to reproduce: `torchvision` (transformers 5's default
    /// processor when torchvision is installed) or `pil`.
    #[arg(long, value_enum, default_value = "torchvision")]
    image_processor: ResizeBackend,
    /// Pixel budget per image (default: the processor's, 12845056).
    #[arg(long)]
    max_pixels: Option<usize>,
    /// A PEFT LoRA adapter directory to apply on top of the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Seed of the random weights of `--model tiny-random` and of sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn run(args: Args) -> Result<()> {
    let loaded = load_model(&args.model, args.seed)?;
    if loaded.dir.is_none() {
        eprintln!("note: --model tiny-random has random weights (seed {}): the output is not meaningful", args.seed);
    }
    let decoding = match (&loaded.dir, args.greedy) {
        (Some(dir), false) => Decoding::from_generation_config(dir)?
            .map(|d| Decoding { seed: args.seed, ..d })
            .unwrap_or(Decoding::GREEDY),
        _ => Decoding::GREEDY,
    };
    let (mut model, tok, mut proc) = (loaded.model, loaded.tokenizer, loaded.processor);
    if let Some(a) = &args.adapter {
        let n = model.load_peft_adapter(a)?;
        eprintln!("applied {n} LoRA adapters from {}", a.display());
    }
    let device = actial::Device::parse(&args.device)?;
    if let Some(w) = actial::cuda::unverified_warning(device) {
        eprintln!("{w}");
    }
    model.place_on(device)?;
    let model = model;
    if let Some(m) = args.max_pixels {
        proc.max_pixels = m;
    }
    proc.resize = args.image_processor;
    let images = args.images.iter().map(|p| load_image(p)).collect::<Result<Vec<_>>>()?;
    let px = if images.is_empty() { None } else { Some(preprocess(&images, &proc)?) };
    let counts: Vec<usize> = px.iter().flat_map(|p| p.grids.iter().map(|g| g[0] * g[1] * g[2] / 4)).collect();

    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(Message::text(Role::System, s.clone()));
    }
    let mut content: Vec<Content> = images.iter().map(|_| Content::Image).collect();
    content.push(Content::Text(args.prompt.clone()));
    messages.push(Message { role: Role::User, content });
    let enc = tok.encode_chat(&messages, &counts, true)?;

    let stop: Vec<u32> = [tok.ids.im_end, tok.ids.endoftext]
        .into_iter()
        .chain(model.config.tokens.eos_token_id.iter().copied())
        .collect();
    let t0 = Instant::now();
    let (pixels, grids) = match px {
        Some(p) => (Some(p.pixel_values), p.grids),
        None => (None, vec![]),
    };
    let inputs_for_dump = (pixels.clone(), grids.clone());
    eprintln!(
        "decoding: {}{}",
        decoding.describe(),
        if decoding != Decoding::GREEDY { " (the model's generation_config.json; --greedy for argmax)" } else { "" }
    );
    let keep_logits = args.dump_logits.is_some();
    let out = model.generate(&enc.ids, pixels, &grids, args.max_new_tokens, &stop, keep_logits, &decoding)?;
    let secs = t0.elapsed().as_secs_f64();
    println!("{}", tok.decode(&out.tokens, true)?);
    eprintln!(
        "{} prompt tokens, {} new tokens{} in {secs:.2} s ({:.1} tokens/s incl. prefill)",
        enc.ids.len(),
        out.tokens.len(),
        if out.stopped { " (stopped at end of turn)" } else { " (token limit)" },
        out.tokens.len() as f64 / secs
    );
    if let (Some(path), Some(logits)) = (&args.dump_logits, &out.prompt_logits) {
        // The exact inputs too, so other tools can rerun the same prompt.
        let ids = actial::Tensor::from_i32(
            enc.ids.iter().map(|&t| t as i32).collect(),
            [1, enc.ids.len()],
            actial::Device::Cpu,
        )?;
        let mut tensors = vec![("logits".to_string(), logits.clone()), ("input_ids".to_string(), ids)];
        if let (Some(px), g) = inputs_for_dump {
            let flat: Vec<i32> = g.iter().flat_map(|x| x.iter().map(|&v| v as i32)).collect();
            tensors.push(("pixel_values".to_string(), px));
            tensors.push((
                "image_grid_thw".to_string(),
                actial::Tensor::from_i32(flat, [g.len(), 3], actial::Device::Cpu)?,
            ));
        }
        let refs: Vec<(String, &actial::Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
        weights::save_safetensors(path, &refs, DType::F32, None)?;
        eprintln!("wrote prompt logits {} to {}", logits.shape(), path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    actial::util::keep_freed_memory();
    let r = run(Args::parse());
    if let Some(table) = actial::ops::profile::report() {
        eprintln!("\n{table}");
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
