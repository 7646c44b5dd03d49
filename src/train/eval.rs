//! Accuracy and format rate of a model on multiple-choice records, by batched
//! greedy decoding (a rollout with one sample per prompt at temperature 0).
//!
//! Answer extraction, in order (the rule that fired is recorded):
//! 1. `answer_tag`: the stripped content of the single `<answer>…</answer>` block;
//! 2. `bare_letter`: the whole response is one option letter (a trailing `.` or `)`
//!    allowed);
//! 3. `letter_in_text`: the first standalone capital letter A–H in the text;
//! 4. `none`: nothing found (scored wrong).
//!
//! [`AnswerExtractor::actial`] is the Actial release's evaluation rule (its
//! VLMEvalKit `actial_r1`): the `<answer>` content, else the text after the
//! last `</think>` (`after_think`), each read for an option letter as above.

use std::collections::BTreeMap;

use regex::Regex;

use super::data::record_images;
use super::reward::{AccuracyReward, FormatReward, Reward};
use crate::data::qa::QaRecord;
use crate::error::Result;
use crate::model::Qwen25Vl;
use crate::model::image::ImageProcessorConfig;
use crate::model::rollout::{PromptInput, RolloutConfig};
use crate::model::tokenizer::{Content, Message, QwenTokenizer, Role};
use crate::ops::SamplingParams;

/// One encoded prompt with its ground truth.
#[derive(Clone, Debug)]
pub struct EvalItem {
    pub id: String,
    pub kind: String,
    pub prompt: PromptInput,
    pub answer: String,
}

/// The user turn's contents: text pieces around the `<image>` placeholders.
pub fn user_content(prompt: &str) -> Vec<Content> {
    let mut out = Vec::new();
    for (i, piece) in prompt.split("<image>").enumerate() {
        if i > 0 {
            out.push(Content::Image);
        }
        if !piece.is_empty() {
            out.push(Content::Text(piece.to_string()));
        }
    }
    out
}

/// Encodes records as generation prompts (system, user turn, assistant header).
/// `system` overrides each record's own. Records whose images cannot be read or
/// whose prompt exceeds `max_prompt_tokens` are skipped and counted by reason.
pub fn encode_prompts(
    records: &[QaRecord],
    tok: &QwenTokenizer,
    proc: &ImageProcessorConfig,
    system: Option<&str>,
    max_prompt_tokens: usize,
) -> Result<(Vec<EvalItem>, BTreeMap<String, usize>)> {
    let mut items = Vec::new();
    let mut skipped = super::data::Skips::default();
    for r in records {
        let px = match record_images(r, proc) {
            Ok(px) => px,
            Err((reason, case)) => {
                skipped.add(reason, || case);
                continue;
            }
        };
        let counts: Vec<usize> = px
            .iter()
            .flat_map(|p| p.grids.iter().map(|g| g[0] * g[1] * g[2] / (proc.merge_size * proc.merge_size)))
            .collect();
        let mut messages = Vec::new();
        if let Some(s) = system.or(r.system.as_deref()) {
            messages.push(Message::text(Role::System, s));
        }
        messages.push(Message { role: Role::User, content: user_content(&r.prompt) });
        let e = tok.encode_chat(&messages, &counts, true)?;
        if e.ids.len() > max_prompt_tokens {
            skipped.add("prompt longer than the limit", || format!("record {}, {} tokens", r.id, e.ids.len()));
            continue;
        }
        let (pixels, grids) = match px {
            Some(p) => (Some(p.pixel_values), p.grids),
            None => (None, vec![]),
        };
        items.push(EvalItem {
            id: r.id.clone(),
            kind: r.kind.clone(),
            prompt: PromptInput { tokens: e.ids, pixels, grids },
            answer: r.answer.clone(),
        });
    }
    Ok((items, skipped.into_map()))
}

/// Which extraction rule produced the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Extraction {
    AnswerTag,
    AfterThink,
    BareLetter,
    LetterInText,
    None,
}

/// The answer extractor (see the module docs for the rules).
pub struct AnswerExtractor {
    /// Read the text after `</think>` when there is no `<answer>` block.
    after_think: bool,
    tag: AccuracyReward,
    bare: Regex,
    in_text: Regex,
}

impl Default for AnswerExtractor {
    fn default() -> Self {
        AnswerExtractor {
            after_think: false,
            tag: AccuracyReward::default(),
            bare: Regex::new(r"^\s*\(?([A-H])[.)]?\s*$").expect("valid pattern"),
            in_text: Regex::new(r"\b([A-H])\b").expect("valid pattern"),
        }
    }
}

impl AnswerExtractor {
    /// The Actial release's rule (see the module docs).
    pub fn actial() -> Self {
        AnswerExtractor { after_think: true, ..Default::default() }
    }

    /// The option letter in a span that should hold one: the span as a bare
    /// letter, else its first standalone capital A–H.
    fn letter_in<'a>(&self, span: &'a str) -> Option<&'a str> {
        self.bare.captures(span).or_else(|| self.in_text.captures(span)).and_then(|c| c.get(1)).map(|m| m.as_str())
    }

    pub fn extract(&self, response: &str) -> (Option<String>, Extraction) {
        if let Some(a) = self.tag.extract(response) {
            let letter = if self.after_think {
                self.letter_in(a)
            } else {
                self.bare.captures(a).and_then(|c| c.get(1)).map(|m| m.as_str())
            };
            let a = letter.unwrap_or(a).to_string();
            return (Some(a), Extraction::AnswerTag);
        }
        if self.after_think
            && let Some(i) = response.to_ascii_lowercase().rfind("</think>")
        {
            let after = &response[i + "</think>".len()..];
            return match self.letter_in(after) {
                Some(l) => (Some(l.to_string()), Extraction::AfterThink),
                None => (None, Extraction::None),
            };
        }
        if let Some(c) = self.bare.captures(response) {
            return (Some(c[1].to_string()), Extraction::BareLetter);
        }
        if let Some(c) = self.in_text.captures(response) {
            return (Some(c[1].to_string()), Extraction::LetterInText);
        }
        (None, Extraction::None)
    }
}

/// One item's outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ItemResult {
    pub id: String,
    pub kind: String,
    pub response: String,
    pub extracted: Option<String>,
    pub rule: Extraction,
    pub answer: String,
    pub correct: bool,
    pub format_ok: bool,
}

/// Accuracy and format rate overall and per kind.
#[derive(Clone, Debug, Default)]
pub struct EvalReport {
    pub items: Vec<ItemResult>,
}

impl EvalReport {
    pub fn accuracy(&self) -> f64 {
        frac(self.items.iter().filter(|r| r.correct).count(), self.items.len())
    }
    pub fn format_rate(&self) -> f64 {
        frac(self.items.iter().filter(|r| r.format_ok).count(), self.items.len())
    }
    /// The accuracy's 95% interval (Wilson score).
    pub fn accuracy_ci95(&self) -> (f64, f64) {
        wilson95(self.items.iter().filter(|r| r.correct).count(), self.items.len())
    }
    /// kind → (accuracy, format rate, count).
    pub fn per_kind(&self) -> BTreeMap<String, (f64, f64, usize)> {
        let mut m: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
        for r in &self.items {
            let e = m.entry(r.kind.clone()).or_default();
            e.0 += usize::from(r.correct);
            e.1 += usize::from(r.format_ok);
            e.2 += 1;
        }
        m.into_iter().map(|(k, (c, f, n))| (k, (frac(c, n), frac(f, n), n))).collect()
    }
}

/// The 95% Wilson score interval of `k` successes in `n` trials: unlike the
/// normal approximation it stays inside [0, 1] and is not empty at 0 or n.
pub fn wilson95(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n) = (1.959_963_984_540_054_f64, n as f64);
    let p = k as f64 / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

fn frac(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Greedy-decodes every item (`batch` prompts per decoding batch, at most
/// `max_new_tokens` each) and scores it. `on_batch` gets the items done so far.
pub fn evaluate(
    model: &Qwen25Vl,
    tok: &QwenTokenizer,
    items: &[EvalItem],
    max_new_tokens: usize,
    batch: usize,
    on_batch: &mut dyn FnMut(usize),
) -> Result<EvalReport> {
    evaluate_with(model, tok, items, max_new_tokens, batch, &AnswerExtractor::default(), on_batch)
}

/// [`evaluate`] with another answer extractor.
pub fn evaluate_with(
    model: &Qwen25Vl,
    tok: &QwenTokenizer,
    items: &[EvalItem],
    max_new_tokens: usize,
    batch: usize,
    ex: &AnswerExtractor,
    on_batch: &mut dyn FnMut(usize),
) -> Result<EvalReport> {
    let rc = RolloutConfig {
        group: 1,
        max_new_tokens,
        sampling: SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 },
        stop: vec![tok.ids.im_end, tok.ids.endoftext],
        banned: model.vision_token_ids(),
        seed: 0,
        stream: 0,
        shards: 0,
        max_inflight_samples: 0,
    };
    let fmt = FormatReward::default();
    let mut report = EvalReport::default();
    for chunk in items.chunks(batch.max(1)) {
        let prompts: Vec<PromptInput> = chunk.iter().map(|i| i.prompt.clone()).collect();
        let out = model.rollout(&prompts, &rc)?;
        for (item, s) in chunk.iter().zip(out) {
            let toks: Vec<u32> = s.tokens.iter().copied().filter(|t| !rc.stop.contains(t)).collect();
            let response = tok.decode(&toks, false)?;
            let (extracted, rule) = ex.extract(&response);
            let correct = extracted.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(item.answer.trim()));
            report.items.push(ItemResult {
                id: item.id.clone(),
                kind: item.kind.clone(),
                format_ok: fmt.score(&response, &item.answer) > 0.0,
                response,
                extracted,
                rule,
                answer: item.answer.clone(),
                correct,
            });
        }
        on_batch(report.items.len());
    }
    Ok(report)
}
