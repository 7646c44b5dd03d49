//! Greedy decoding with a KV cache: the prompt (text and images) is prefilled once,
//! then one token per step attends to the cached keys and values.

use super::text::KvCache;
use super::{Batch, Qwen25Vl, Sample};
use crate::error::Result;
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
        let batch = Batch::new(&[Sample { tokens: prompt.to_vec(), labels: None }], pixel_values, grids, &self.config)?;
        let (x, _) = self.embed(&batch)?;
        let (cos, sin) = self.rope_tables(&batch.positions)?;
        let mut cache = KvCache::new(&self.config.text, prompt.len() + max_new_tokens, self.device())?;
        let logits = self.text.forward_cached(&x, &cos, &sin, &mut cache)?;
        let v = self.config.text.vocab_size;
        // Generated text continues one past the largest prompt position (on all axes).
        let first_pos = batch.positions.to_vec_i32()?.into_iter().max().unwrap_or(-1) + 1;
        let last = logits.narrow(0, prompt.len() - 1, 1)?.to_vec_f32()?;
        let mut token = argmax(&last[..v]);
        let prompt_logits = keep_prompt_logits.then_some(logits);
        let mut tokens = Vec::new();
        for step in 0..max_new_tokens {
            if stop.contains(&token) {
                return Ok(Generation { tokens, stopped: true, prompt_logits });
            }
            tokens.push(token);
            if tokens.len() == max_new_tokens {
                break;
            }
            let ids = Tensor::from_i32(vec![token as i32], [1], Device::Cpu)?;
            let x = ops::index_select(&self.text.embed.value, &ids)?;
            let pos = Tensor::from_i32(vec![first_pos + step as i32; 3], [3, 1], Device::Cpu)?;
            let (cos, sin) = self.rope_tables(&pos)?;
            token = argmax(&self.text.forward_cached(&x, &cos, &sin, &mut cache)?.to_vec_f32()?);
        }
        Ok(Generation { tokens, stopped: false, prompt_logits })
    }
}
