//! The built-in `tiny` preset: a Qwen2.5-VL-shaped model small enough to train on a
//! CPU in minutes (used by tests and the embedded default), with its own
//! byte-level BPE tokenizer under assets/tiny/.

use std::path::PathBuf;

use super::config::{Qwen25VlConfig, SpecialTokens, TextConfig, VisionConfig};
use super::tokenizer::QwenTokenizer;
use crate::error::Result;

/// Vocabulary size of the tiny tokenizer (including the 14 special tokens).
pub const TINY_VOCAB: usize = 1024;

/// The project's `assets/`: `$ACTIAL_ASSETS` when set, else the source tree the
/// binary was built from, else `./assets` (binaries carried to another machine,
/// such as the GPU check's, run from a checkout at a different path).
fn assets_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ACTIAL_ASSETS") {
        return PathBuf::from(d);
    }
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    if built.is_dir() { built } else { PathBuf::from("assets") }
}

/// `assets/tiny`: the tiny tokenizer.
pub fn tiny_dir() -> PathBuf {
    assets_dir().join("tiny")
}

/// `assets/tiny-base`: the pretrained tiny base (`actial-train --recipe pretrain`,
/// docs/TINY_BASE.md), the start of the embedded default.
pub fn tiny_base_dir() -> PathBuf {
    assets_dir().join("tiny-base")
}

/// The tiny tokenizer (assets/tiny/tokenizer.json).
pub fn tiny_tokenizer() -> Result<QwenTokenizer> {
    QwenTokenizer::from_file(&tiny_dir().join("tokenizer.json"))
}

/// The tiny config: vision depth 4 / width 128 (4 heads of 32, windows of 112 px,
/// full attention in blocks 1 and 3), LM 4 layers / width 128 (4 query heads, 2 kv
/// heads, head dim 32, M-RoPE sections [4, 6, 6], rope theta 1e4), tied embeddings. Special ids come
/// from the tokenizer.
pub fn tiny_config(tok: &QwenTokenizer) -> Qwen25VlConfig {
    let vision = VisionConfig {
        depth: 4,
        hidden_size: 128,
        num_heads: 4,
        intermediate_size: 256,
        out_hidden_size: 128,
        in_channels: 3,
        patch_size: 14,
        temporal_patch_size: 2,
        spatial_merge_size: 2,
        window_size: 112,
        fullatt_block_indexes: vec![1, 3],
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
    };
    let text = TextConfig {
        vocab_size: tok.vocab_size(),
        hidden_size: 128,
        intermediate_size: 384,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-6,
        // Qwen2.5-VL uses 1e6 for 128k contexts; with head dim 32 and prompts of
        // ~100 tokens that leaves almost no rotation to tell neighbours apart.
        rope_theta: 10_000.0,
        mrope_section: [4, 6, 6],
        tie_word_embeddings: true,
    };
    let t = &tok.ids;
    let tokens = SpecialTokens {
        image_token_id: t.image_pad,
        video_token_id: t.video_pad,
        vision_start_token_id: t.vision_start,
        vision_end_token_id: t.vision_end,
        eos_token_id: vec![t.im_end],
        bos_token_id: Some(t.endoftext),
    };
    Qwen25VlConfig { vision, text, tokens }
}

/// The tiny layout (its tokenizer's special ids, patch, merge and window sizes)
/// with a released checkpoint's widths and vocabulary (`assets/configs/`:
/// "3b" or "7b"), `layers` decoder layers and as many vision blocks, the last
/// one with full attention: the CUDA path at real widths in seconds
/// (`examples/gpu_scale.rs`, `tests/cuda_model.rs`). "tiny" keeps tiny's widths.
pub fn with_released_widths(tok: &QwenTokenizer, which: &str, layers: usize) -> Result<Qwen25VlConfig> {
    let mut cfg = tiny_config(tok);
    let released = match which {
        "tiny" => None,
        "3b" => Some(include_str!("../../assets/configs/qwen2.5-vl-3b-instruct/config.json")),
        "7b" => Some(include_str!("../../assets/configs/qwen2.5-vl-7b-instruct/config.json")),
        other => return Err(crate::arg_err!("with_released_widths", "{other:?}: expected 3b, 7b or tiny")),
    };
    if let Some(json) = released {
        let r = Qwen25VlConfig::from_json_str(json, which)?;
        let (t, v) = (&mut cfg.text, &mut cfg.vision);
        (t.hidden_size, t.intermediate_size, t.vocab_size) =
            (r.text.hidden_size, r.text.intermediate_size, r.text.vocab_size);
        (t.num_attention_heads, t.num_key_value_heads) = (r.text.num_attention_heads, r.text.num_key_value_heads);
        (t.mrope_section, t.rope_theta, t.tie_word_embeddings) =
            (r.text.mrope_section, r.text.rope_theta, r.text.tie_word_embeddings);
        (v.hidden_size, v.intermediate_size, v.num_heads) =
            (r.vision.hidden_size, r.vision.intermediate_size, r.vision.num_heads);
        (v.out_hidden_size, v.window_size, v.patch_size) =
            (r.vision.out_hidden_size, r.vision.window_size, r.vision.patch_size);
    }
    cfg.text.num_hidden_layers = layers;
    cfg.vision.depth = layers;
    cfg.vision.fullatt_block_indexes = vec![layers.saturating_sub(1)];
    Ok(cfg)
}
