//! Turning dataset records into training examples: images decoded and
//! preprocessed once, the conversation tokenised with the chat template and an
//! assistant-only label mask.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::eval::user_content;
use crate::data::qa::{ImageRef, QaRecord};
use crate::error::Result;
use crate::model::image::{ImageProcessorConfig, ProcessedImages, decode_image, load_image, preprocess};
use crate::model::tokenizer::{Message, QwenTokenizer, Role};
use crate::model::{Batch, Qwen25VlConfig, Sample};
use crate::tensor::Tensor;

/// One encoded sample.
#[derive(Clone, Debug)]
pub struct Example {
    pub id: String,
    /// The record's kind (`camera_rotation`, `sat_nearer`, ...; `data.curriculum_kinds`).
    pub kind: String,
    pub tokens: Vec<u32>,
    pub labels: Vec<i32>,
    /// `[N, patch_dim]` rows of this sample's images, in order (None: text only).
    pub pixels: Option<Tensor>,
    pub grids: Vec<[usize; 3]>,
    /// Supervised tokens after the shift (what the loss averages over).
    pub target_tokens: usize,
    /// The response is in the reasoning format (`<think>…</think><answer>…</answer>`,
    /// `mix::cot_answer`): a pseudo-CoT item of the mix, not a letter answer
    /// (`data.curriculum` phases may select it).
    pub reasoning: bool,
    /// Examples sharing a key are drawn into one batch under
    /// `data.batch_by_pair`: the record's `meta.pair` (the three questions of one
    /// photo pair and its pseudo-CoT), else its id.
    pub pair: String,
}

/// Examples built from records, and the records dropped with reasons.
#[derive(Debug, Default)]
pub struct Encoded {
    pub examples: Vec<Example>,
    pub skipped: BTreeMap<String, usize>,
}

/// Skipped records counted by reason, each reason shown with its first case
/// (the record and the file or error), so a user can find what to fix.
#[derive(Debug, Default)]
pub struct Skips {
    counts: BTreeMap<String, usize>,
    first: BTreeMap<String, String>,
}

impl Skips {
    pub fn add(&mut self, reason: &str, case: impl FnOnce() -> String) {
        *self.counts.entry(reason.to_string()).or_default() += 1;
        self.first.entry(reason.to_string()).or_insert_with(case);
    }

    /// Counts keyed by "reason (first: case)".
    pub fn into_map(self) -> BTreeMap<String, usize> {
        let first = self.first;
        self.counts.into_iter().map(|(r, n)| (format!("{r} (first: {})", first[&r]), n)).collect()
    }
}

/// A record's images, decoded and preprocessed (None: a text-only record), or
/// why they cannot be used: the reason, and the error naming the file.
pub fn record_images(
    r: &QaRecord,
    proc: &ImageProcessorConfig,
) -> std::result::Result<Option<ProcessedImages>, (&'static str, String)> {
    let images: Result<Vec<_>> = r
        .images
        .iter()
        .map(|i| match i {
            ImageRef::Path(p) => load_image(p),
            ImageRef::Bytes(b) => decode_image(b, &format!("record {}", r.id)),
        })
        .collect();
    let images = images.map_err(|e| ("missing or undecodable image", e.to_string()))?;
    if images.is_empty() {
        return Ok(None);
    }
    preprocess(&images, proc)
        .map(Some)
        .map_err(|e| ("image too small or too elongated", format!("record {}: {e}", r.id)))
}

/// Encodes `records`; samples longer than `max_length` tokens, with undecodable
/// images or with nothing to supervise are skipped and counted by reason.
pub fn encode_records(
    records: &[QaRecord],
    tok: &QwenTokenizer,
    proc: &ImageProcessorConfig,
    default_system: Option<&str>,
    max_length: usize,
) -> Result<Encoded> {
    let mut enc = Encoded::default();
    let mut skips = Skips::default();
    // Records that show the same image files (a pair's three questions, a photo's
    // questions) share one preprocessed pixel tensor.
    let mut cache: HashMap<Vec<PathBuf>, Option<ProcessedImages>> = HashMap::new();
    for r in records {
        if r.response.trim().is_empty() {
            // A prompt-only row (GRPO or evaluation data): SFT would train an
            // empty reply.
            skips.add("no response to train on", || format!("record {}", r.id));
            continue;
        }
        let paths: Option<Vec<PathBuf>> = r
            .images
            .iter()
            .map(|i| match i {
                ImageRef::Path(p) => Some(p.clone()),
                ImageRef::Bytes(_) => None,
            })
            .collect();
        let cached = paths.as_ref().and_then(|k| cache.get(k).cloned());
        let px = match cached {
            Some(px) => px,
            None => {
                let px = match record_images(r, proc) {
                    Ok(px) => px,
                    Err((reason, case)) => {
                        skips.add(reason, || case);
                        continue;
                    }
                };
                if let Some(k) = paths {
                    cache.insert(k, px.clone());
                }
                px
            }
        };
        let counts: Vec<usize> = px
            .iter()
            .flat_map(|p| p.grids.iter().map(|g| g[0] * g[1] * g[2] / (proc.merge_size * proc.merge_size)))
            .collect();
        let mut messages = Vec::new();
        if let Some(s) = r.system.as_deref().or(default_system) {
            messages.push(Message::text(Role::System, s));
        }
        messages.push(Message { role: Role::User, content: user_content(&r.prompt) });
        messages.push(Message::text(Role::Assistant, r.response.clone()));
        let e = tok.encode_chat(&messages, &counts, false)?;
        if e.ids.len() > max_length {
            skips.add("longer than run.max_length", || format!("record {}, {} tokens", r.id, e.ids.len()));
            continue;
        }
        let target_tokens = e.labels[1..].iter().filter(|&&l| l >= 0).count();
        if target_tokens == 0 {
            skips.add("no supervised tokens", || format!("record {}", r.id));
            continue;
        }
        let (pixels, grids) = match px {
            Some(p) => (Some(p.pixel_values), p.grids),
            None => (None, vec![]),
        };
        enc.examples.push(Example {
            id: r.id.clone(),
            kind: r.kind.clone(),
            tokens: e.ids,
            labels: e.labels,
            pixels,
            grids,
            target_tokens,
            reasoning: crate::data::mix::cot_answer(&r.response).is_some(),
            pair: match r.meta.get("pair") {
                Some(v) => format!("pair {v}"),
                None => r.id.clone(),
            },
        });
    }
    enc.skipped = skips.into_map();
    Ok(enc)
}

/// Packs examples into one batch (pixel rows concatenated in order).
pub fn make_batch(examples: &[&Example], cfg: &Qwen25VlConfig) -> Result<Batch> {
    let samples: Vec<Sample> =
        examples.iter().map(|e| Sample { tokens: e.tokens.clone(), labels: Some(e.labels.clone()) }).collect();
    let pix: Vec<&Tensor> = examples.iter().filter_map(|e| e.pixels.as_ref()).collect();
    let grids: Vec<[usize; 3]> = examples.iter().flat_map(|e| e.grids.iter().copied()).collect();
    let pixels = if pix.is_empty() { None } else { Some(Tensor::cat(&pix, 0)?) };
    Batch::new(&samples, pixels, &grids, cfg)
}
