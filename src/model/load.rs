//! One way every binary names a model: `tiny` (the pretrained tiny base,
//! assets/tiny-base), `tiny-random` (random weights of the tiny preset: plumbing
//! checks only) or a directory (Hugging Face layout, or an actial checkpoint /
//! `final/`), loaded with its tokenizer and image processor and checked against
//! each other.

use std::path::{Path, PathBuf};

use super::Qwen25Vl;
use super::image::ImageProcessorConfig;
use super::tiny::{tiny_base_dir, tiny_config, tiny_dir, tiny_tokenizer};
use super::tokenizer::QwenTokenizer;
use crate::error::{Error, Result};

/// A model with what reads its inputs.
pub struct LoadedModel {
    pub model: Qwen25Vl,
    pub tokenizer: QwenTokenizer,
    /// The tokenizer.json it came with (copied next to a trained model).
    pub tokenizer_file: PathBuf,
    pub processor: ImageProcessorConfig,
    /// Its directory (`None` for `tiny-random`).
    pub dir: Option<PathBuf>,
}

/// Loads `name` (`tiny`, `tiny-random` or a directory); `seed` initialises
/// `tiny-random`.
pub fn load_model(name: &str, seed: u64) -> Result<LoadedModel> {
    if name == "tiny-random" {
        let tokenizer = tiny_tokenizer()?;
        let cfg = tiny_config(&tokenizer);
        let processor = ImageProcessorConfig::for_vision(&cfg.vision);
        return Ok(LoadedModel {
            model: Qwen25Vl::random(cfg, seed)?,
            tokenizer,
            tokenizer_file: tiny_dir().join("tokenizer.json"),
            processor,
            dir: None,
        });
    }
    let dir = if name == "tiny" { tiny_base_dir() } else { PathBuf::from(name) };
    if !dir.join("config.json").is_file() {
        let hint = if name == "tiny" {
            "the pretrained tiny base is committed with the repository (docs/TINY_BASE.md); `tiny-random` gives random weights"
        } else {
            "expected a model directory (config.json, *.safetensors, tokenizer.json), `tiny` or `tiny-random`"
        };
        return Err(Error::Config {
            file: dir.join("config.json").display().to_string(),
            msg: format!("not found: {hint}"),
        });
    }
    let model = Qwen25Vl::from_dir(&dir)?;
    let tokenizer_file = dir.join("tokenizer.json");
    let tokenizer = QwenTokenizer::from_file(&tokenizer_file)?;
    tokenizer.check_config(&model.config)?;
    let processor = ImageProcessorConfig::from_dir(&dir, &model.config.vision)?;
    Ok(LoadedModel { model, tokenizer, tokenizer_file, processor, dir: Some(dir) })
}

impl LoadedModel {
    /// Whether this project trained it (its directory, or the adapter's, holds
    /// `trainer_state.json` or `actial_model.json`): such models answer in the
    /// Actial system prompt's format.
    pub fn trained_here(&self, adapter: Option<&Path>) -> bool {
        ["trainer_state.json", "actial_model.json"].iter().any(|f| {
            self.dir.as_ref().is_some_and(|d| d.join(f).is_file()) || adapter.is_some_and(|a| a.join(f).is_file())
        })
    }
}
