//! The tokenizer (HF `tokenizer.json` through the tokenizers crate) and the Qwen
//! chat template, with image placeholders expanded to their token counts and an
//! assistant-only label mask for SFT.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::ops::IGNORE_INDEX;

/// Ids of the tokens the chat template and the model rely on, read from the
/// tokenizer by name.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatTokens {
    pub endoftext: u32,
    pub im_start: u32,
    pub im_end: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub image_pad: u32,
    pub video_pad: u32,
}

pub const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

/// The special tokens of Qwen2.5 in their id order (the tiny tokenizer keeps it).
pub const QWEN_SPECIAL_TOKENS: [&str; 14] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
];

#[derive(Clone)]
pub struct QwenTokenizer {
    pub tokenizer: Tokenizer,
    pub ids: ChatTokens,
    file: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// A piece of a message: text, or one image (expanded to its pad tokens).
#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    Text(String),
    Image,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Content>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Message {
        Message { role, content: vec![Content::Text(text.into())] }
    }
}

/// A tokenised conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Same length as `ids`: the id where an assistant turn's content or its
    /// closing `<|im_end|>` is, -100 elsewhere (transformers' label convention).
    pub labels: Vec<i32>,
}

impl QwenTokenizer {
    /// Loads `tokenizer.json`; every chat token must exist in it.
    pub fn from_file(path: &Path) -> Result<QwenTokenizer> {
        let file = path.display().to_string();
        if !path.is_file() {
            return Err(Error::Config { file, msg: "tokenizer.json not found".into() });
        }
        // The tokenizers crate panics on some malformed files (found by
        // tests/fuzz_loaders.rs): a panic is an error naming the file too.
        let loaded = std::panic::catch_unwind(|| Tokenizer::from_file(path)).map_err(|p| {
            let why = crate::error::panic_message(p.as_ref());
            Error::Config {
                file: file.clone(),
                msg: format!("cannot load tokenizer: the tokenizers library failed: {why}"),
            }
        })?;
        let tokenizer =
            loaded.map_err(|e| Error::Config { file: file.clone(), msg: format!("cannot load tokenizer: {e}") })?;
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| Error::Config { file: file.clone(), msg: format!("the tokenizer has no {t} token") })
        };
        let ids = ChatTokens {
            endoftext: id("<|endoftext|>")?,
            im_start: id("<|im_start|>")?,
            im_end: id("<|im_end|>")?,
            vision_start: id("<|vision_start|>")?,
            vision_end: id("<|vision_end|>")?,
            image_pad: id("<|image_pad|>")?,
            video_pad: id("<|video_pad|>")?,
        };
        Ok(QwenTokenizer { tokenizer, ids, file })
    }

    /// Errors unless the config's special ids are the tokenizer's and every
    /// token id has an embedding row.
    pub fn check_config(&self, c: &super::config::Qwen25VlConfig) -> Result<()> {
        let t = &c.tokens;
        let pairs = [
            ("image_token_id", t.image_token_id, self.ids.image_pad),
            ("video_token_id", t.video_token_id, self.ids.video_pad),
            ("vision_start_token_id", t.vision_start_token_id, self.ids.vision_start),
            ("vision_end_token_id", t.vision_end_token_id, self.ids.vision_end),
        ];
        for (key, cfg, tok) in pairs {
            if cfg != tok {
                return Err(Error::Config {
                    file: self.file.clone(),
                    msg: format!("config {key} = {cfg} but the tokenizer says {tok}"),
                });
            }
        }
        let max_id = self.tokenizer.get_vocab(true).into_values().max().unwrap_or(0);
        if max_id as usize >= c.text.vocab_size {
            return Err(Error::Config {
                file: self.file.clone(),
                msg: format!(
                    "the tokenizer has ids up to {max_id} but the model's vocab_size is {} (no embedding row for them)",
                    c.text.vocab_size
                ),
            });
        }
        Ok(())
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Plain text to ids (special tokens written in the text are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| crate::arg_err!("encode", "{e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special).map_err(|e| crate::arg_err!("decode", "{e}"))
    }

    /// The Qwen2-VL chat template: a default system turn when the first message is
    /// not a system one, `<|im_start|>{role}\n{content}<|im_end|>\n` per message, each
    /// image as `<|vision_start|>` + `image_tokens[i]` pads + `<|vision_end|>`, and
    /// `<|im_start|>assistant\n` when `generation_prompt`.
    ///
    /// Token for token what transformers gives: the text between two special
    /// tokens is tokenized as one string, so a role header's newline joins the
    /// content's leading newlines (`"user\n" + "\nHi"` -> `user`, `\n\n`, `Hi`).
    /// Labels follow the characters: a token is supervised when it covers any
    /// character of an assistant turn's content (and the turn's `<|im_end|>`).
    pub fn encode_chat(
        &self,
        messages: &[Message],
        image_tokens: &[usize],
        generation_prompt: bool,
    ) -> Result<Encoded> {
        let t = &self.ids;
        let n_images: usize = messages.iter().flat_map(|m| &m.content).filter(|c| matches!(c, Content::Image)).count();
        if n_images != image_tokens.len() {
            return Err(crate::arg_err!(
                "encode_chat",
                "the messages hold {n_images} images but {} token counts were given",
                image_tokens.len()
            ));
        }
        let mut out = Encoded { ids: Vec::new(), labels: Vec::new() };
        // The text since the last special token, and its supervised byte ranges.
        let mut span = TextSpan::default();
        let mut image = 0;
        let with_default = messages.first().is_none_or(|m| m.role != Role::System);
        let system = [Message::text(Role::System, DEFAULT_SYSTEM)];
        let all = if with_default { system.iter().chain(messages) } else { [].iter().chain(messages) };
        for m in all {
            let sup = m.role == Role::Assistant;
            self.flush(&mut span, &mut out)?;
            out.push(&[t.im_start], false);
            span.push(m.role.as_str(), false);
            span.push("\n", false);
            for c in &m.content {
                match c {
                    Content::Text(s) => span.push(s, sup),
                    Content::Image => {
                        self.flush(&mut span, &mut out)?;
                        let mut run = vec![t.vision_start];
                        run.extend(std::iter::repeat_n(t.image_pad, image_tokens[image]));
                        run.push(t.vision_end);
                        out.push(&run, false);
                        image += 1;
                    }
                }
            }
            self.flush(&mut span, &mut out)?;
            out.push(&[t.im_end], sup);
            span.push("\n", false);
        }
        self.flush(&mut span, &mut out)?;
        if generation_prompt {
            out.push(&[t.im_start], false);
            span.push("assistant\n", false);
            self.flush(&mut span, &mut out)?;
        }
        Ok(out)
    }

    /// Tokenizes the pending text as one string; labels by character ranges.
    fn flush(&self, span: &mut TextSpan, out: &mut Encoded) -> Result<()> {
        if span.text.is_empty() {
            return Ok(());
        }
        let enc = self.tokenizer.encode(span.text.as_str(), false).map_err(|e| crate::arg_err!("encode", "{e}"))?;
        for (&id, &(a, b)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            // Empty-offset tokens (none in byte-level BPE) count as unsupervised.
            let sup = span.supervised.iter().any(|r| a < r.end && r.start < b);
            out.push(&[id], sup);
        }
        *span = TextSpan::default();
        Ok(())
    }
}

/// Text between two special tokens, with the byte ranges an assistant wrote.
#[derive(Default)]
struct TextSpan {
    text: String,
    supervised: Vec<std::ops::Range<usize>>,
}

impl TextSpan {
    fn push(&mut self, s: &str, supervised: bool) {
        if supervised && !s.is_empty() {
            self.supervised.push(self.text.len()..self.text.len() + s.len());
        }
        self.text.push_str(s);
    }
}

impl Encoded {
    fn push(&mut self, ids: &[u32], supervised: bool) {
        self.ids.extend_from_slice(ids);
        self.labels.extend(ids.iter().map(|&x| if supervised { x as i32 } else { IGNORE_INDEX }));
    }
}

/// Qwen2's pre-tokenizer split pattern (contractions, letters, single digits,
/// punctuation runs, newlines, spaces).
pub const QWEN_SPLIT_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Trains a byte-level BPE tokenizer laid out like Qwen2's (NFC, the Qwen split
/// regex, byte-level), with Qwen's special tokens first (ids 0..14), on `lines`.
/// Deterministic for the same input.
pub fn train_qwen_style_bpe(lines: &[&str], vocab_size: usize) -> Result<Tokenizer> {
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::normalizers::unicode::NFC;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{AddedToken, SplitDelimiterBehavior};
    let err = |e: tokenizers::Error| crate::arg_err!("train_qwen_style_bpe", "{e}");
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_normalizer(Some(NFC)).map_err(err)?;
    let split = Split::new(SplitPattern::Regex(QWEN_SPLIT_PATTERN.into()), SplitDelimiterBehavior::Isolated, false)
        .map_err(err)?;
    tok.with_pre_tokenizer(Some(Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()])));
    tok.with_decoder(Some(ByteLevel::new(false, false, false)));
    let specials: Vec<AddedToken> = QWEN_SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)).collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tok.train(&mut trainer, lines.iter()).map_err(err)?;
    Ok(tok)
}
