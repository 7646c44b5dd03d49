//! Decoding with a KV cache: the prompt (text and images) is prefilled once, then
//! one token per step attends to the cached keys and values. Greedy, or sampled as
//! a checkpoint's `generation_config.json` asks (transformers' order: repetition
//! penalty, then temperature, top-k, top-p).

use std::path::Path;

use super::text::KvCache;
use super::{Batch, Qwen25Vl, Sample};
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::{Device, Tensor};

pub struct Generation {
    /// New tokens, without the stop token.
    pub tokens: Vec<u32>,
    /// Whether decoding ended on a stop token (else on the token limit).
    pub stopped: bool,
    /// Logits of every prompt position `[prompt_len, V]`, when asked for.
    pub prompt_logits: Option<Tensor>,
}

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decoding {
    /// 0: greedy (argmax); else logits are divided by it and sampled.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches top_p (1: all).
    pub top_p: f32,
    /// Above 1, every token already in the sequence (prompt included) gets less
    /// likely: its logit is divided by it when positive, multiplied when negative.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Decoding {
    pub const GREEDY: Decoding = Decoding { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 };

    /// `generation_config.json` in `dir`, if there is one: `do_sample` false (or
    /// absent) is greedy with its repetition penalty; true samples with its
    /// temperature / top_k / top_p (transformers' defaults 1.0 / 50 / 1.0).
    pub fn from_generation_config(dir: &Path) -> Result<Option<Decoding>> {
        let path = dir.join("generation_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        let bad = |msg: String| Error::Config { file: path.display().to_string(), msg };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let num = |k: &str, default: f64| -> Result<f64> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(x) => x.as_f64().ok_or_else(|| bad(format!("{k} is not a number: {x}"))),
            }
        };
        let repetition_penalty = num("repetition_penalty", 1.0)? as f32;
        if repetition_penalty <= 0.0 {
            return Err(bad(format!("repetition_penalty must be positive, not {repetition_penalty}")));
        }
        if !v.get("do_sample").and_then(serde_json::Value::as_bool).unwrap_or(false) {
            return Ok(Some(Decoding { repetition_penalty, ..Decoding::GREEDY }));
        }
        let (temperature, top_k, top_p) = (num("temperature", 1.0)?, num("top_k", 50.0)?, num("top_p", 1.0)?);
        if temperature < 0.0 || !(0.0..=1.0).contains(&top_p) || top_k < 0.0 {
            return Err(bad(format!("temperature {temperature}, top_k {top_k}, top_p {top_p} out of range")));
        }
        Ok(Some(Decoding {
            temperature: temperature as f32,
            top_k: top_k as usize,
            top_p: top_p as f32,
            repetition_penalty,
            seed: 0,
        }))
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// One line for logs: what decodes.
    pub fn describe(&self) -> String {
        let pen = if self.repetition_penalty != 1.0 {
            format!(", repetition_penalty {}", self.repetition_penalty)
        } else {
            String::new()
        };
        if self.is_greedy() {
            format!("greedy{pen}")
        } else {
            format!(
                "sampled: temperature {}, top_k {}, top_p {}{pen}, seed {}",
                self.temperature, self.top_k, self.top_p, self.seed
            )
        }
    }

    /// The next token from one row of logits, given the tokens so far.
    pub fn pick(&self, logits: &[f32], history: &[u32], rng: &mut crate::rng::Philox) -> u32 {
        let mut row = logits.to_vec();
        if self.repetition_penalty != 1.0 {
            let mut seen = vec![false; row.len()];
            for &t in history {
                if let Some(s) = seen.get_mut(t as usize)
                    && !*s
                {
                    *s = true;
                    let x = &mut row[t as usize];
                    *x = if *x < 0.0 { *x * self.repetition_penalty } else { *x / self.repetition_penalty };
                }
            }
        }
        if self.is_greedy() {
            return argmax(&row);
        }
        // Temperature, then the top-k and top-p filters, then one draw.
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        if self.top_k > 0 {
            order.truncate(self.top_k);
        }
        let max = row[order[0]] / self.temperature;
        let weights: Vec<f64> = order.iter().map(|&i| ((row[i] / self.temperature - max) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut keep = weights.len();
        if self.top_p < 1.0 {
            let mut cum = 0.0;
            for (n, w) in weights.iter().enumerate() {
                cum += w / total;
                if cum >= self.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
        }
        let kept: f64 = weights[..keep].iter().sum();
        let mut u = rng.uniform() as f64 * kept;
        for (n, w) in weights[..keep].iter().enumerate() {
            if u < *w {
                return order[n] as u32;
            }
            u -= w;
        }
        order[keep - 1] as u32
    }
}

fn argmax(row: &[f32]) -> u32 {
    // First index of the maximum, as torch.argmax.
    row.iter().enumerate().fold(0, |b, (i, &x)| if x > row[b] { i } else { b }) as u32
}

impl Qwen25Vl {
    /// Greedy decoding of one prompt. `stop` holds the end-of-turn ids.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        pixel_values: Option<Tensor>,
        grids: &[[usize; 3]],
        max_new_tokens: usize,
        stop: &[u32],
        keep_prompt_logits: bool,
    ) -> Result<Generation> {
        self.generate(prompt, pixel_values, grids, max_new_tokens, stop, keep_prompt_logits, &Decoding::GREEDY)
    }

    /// Decoding of one prompt as `decoding` says. `stop` holds the end-of-turn ids.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        prompt: &[u32],
        pixel_values: Option<Tensor>,
        grids: &[[usize; 3]],
        max_new_tokens: usize,
        stop: &[u32],
        keep_prompt_logits: bool,
        decoding: &Decoding,
    ) -> Result<Generation> {
        let batch = Batch::new(&[Sample { tokens: prompt.to_vec(), labels: None }], pixel_values, grids, &self.config)?;
        let (x, _) = self.embed(&batch)?;
        let (cos, sin) = self.rope_tables(&batch.positions)?;
        let mut cache = KvCache::new(&self.config.text, prompt.len() + max_new_tokens, self.device())?;
        let logits = self.text.forward_cached(&x, &cos, &sin, &mut cache)?;
        let v = self.config.text.vocab_size;
        let mut rng = crate::rng::Philox::new(decoding.seed, 0);
        // transformers' repetition penalty sees the whole sequence, prompt included.
        let mut history = prompt.to_vec();
        // Generated text continues one past the largest prompt position (on all axes).
        let first_pos = batch.positions.to_vec_i32()?.into_iter().max().unwrap_or(-1) + 1;
        let last = logits.narrow(0, prompt.len() - 1, 1)?.to_vec_f32()?;
        let mut token = decoding.pick(&last[..v], &history, &mut rng);
        let prompt_logits = keep_prompt_logits.then_some(logits);
        let mut tokens = Vec::new();
        for step in 0..max_new_tokens {
            if stop.contains(&token) {
                return Ok(Generation { tokens, stopped: true, prompt_logits });
            }
            tokens.push(token);
            history.push(token);
            if tokens.len() == max_new_tokens {
                break;
            }
            let ids = Tensor::from_i32(vec![token as i32], [1], Device::Cpu)?;
            let x = ops::index_select(&self.text.embed.value, &ids)?;
            let pos = Tensor::from_i32(vec![first_pos + step as i32; 3], [3, 1], Device::Cpu)?;
            let (cos, sin) = self.rope_tables(&pos)?;
            let row = self.text.forward_cached(&x, &cos, &sin, &mut cache)?.to_vec_f32()?;
            token = decoding.pick(&row[..v], &history, &mut rng);
        }
        Ok(Generation { tokens, stopped: false, prompt_logits })
    }
}
