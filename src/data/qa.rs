//! Multiple-choice questions and the records datasets are made of.

use std::path::PathBuf;

use crate::rng::Philox;

pub const LETTERS: [char; 8] = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'];

/// The release's instruction after the options.
pub const LETTER_INSTRUCTION: &str = "Select the correct option, please output only the option letter!";

/// The instruction of prompts that want the reasoning first (the tiny preset's
/// CoT items and GRPO prompts; see `DataSection::cot_instruction`).
pub const REASONING_INSTRUCTION: &str = "Think it through first, then give the option letter as the answer.";

/// Replaces the letter-only instruction at the end of `prompt` with
/// `instruction` (appends it when the prompt has none); an empty instruction just
/// drops it. Used where a reasoning answer is wanted: a CoT answer to "please
/// output only the option letter!" contradicts its prompt.
pub fn with_instruction(prompt: &str, instruction: &str) -> String {
    let body = prompt.strip_suffix(LETTER_INSTRUCTION).unwrap_or(prompt).trim_end();
    if instruction.is_empty() { body.to_string() } else { format!("{body} {instruction}") }
}

/// Actial's system prompt (the release's wording, typos included).
pub const ACTIAL_SYSTEM: &str = "You are Actial, a helpful assistant with excellent reasoning ability. A user asks you a \
question, and you should try to solve it. You should first think about the reasoning process in the mind and then \
provides the user with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> \
</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>";

/// How a question's options are laid out.
///
/// `Shuffled` is the paper's (and the release's) layout. `Fixed` keeps one
/// canonical order per question type (the order the options are listed in the
/// code, colours in palette order), so the letter is a function of the answer
/// itself: a documented simplification for the tiny preset only, whose
/// from-scratch base does not acquire the "find the matching option, copy its
/// letter" skill in CPU minutes (docs/TINY_BASE.md). Real models keep `Shuffled`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionOrder {
    #[default]
    Shuffled,
    Fixed,
}

/// A multiple-choice question with its options in display order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct McQuestion {
    /// What family it belongs to (e.g. `camera_translation`, `sat_relative_position`).
    pub kind: String,
    pub question: String,
    pub options: Vec<String>,
    /// Index of the correct option in `options`.
    pub answer: usize,
}

impl McQuestion {
    /// Builds a question with `options` shuffled by `rng`; `correct` indexes the
    /// unshuffled list.
    pub fn shuffled(kind: &str, question: String, options: &[&str], correct: usize, rng: &mut Philox) -> McQuestion {
        let mut order: Vec<usize> = (0..options.len()).collect();
        // Fisher-Yates with the counter-based RNG: reproducible from the seed.
        for i in (1..order.len()).rev() {
            let j = (rng.next_u32() as usize) % (i + 1);
            order.swap(i, j);
        }
        McQuestion {
            kind: kind.to_string(),
            question,
            options: order.iter().map(|&i| options[i].to_string()).collect(),
            answer: order.iter().position(|&i| i == correct).expect("correct is an option"),
        }
    }

    /// `options` shuffled by `rng` or kept as listed, as `order` says.
    pub fn with_order(
        kind: &str,
        question: String,
        options: &[&str],
        correct: usize,
        order: OptionOrder,
        rng: &mut Philox,
    ) -> McQuestion {
        match order {
            OptionOrder::Shuffled => McQuestion::shuffled(kind, question, options, correct, rng),
            OptionOrder::Fixed => McQuestion {
                kind: kind.to_string(),
                question,
                options: options.iter().map(|o| o.to_string()).collect(),
                answer: correct,
            },
        }
    }

    pub fn letter(&self) -> char {
        LETTERS[self.answer]
    }

    /// `question A: opt B: opt ... instruction`, the release's layout.
    pub fn prompt(&self, instruction: &str) -> String {
        let mut s = self.question.clone();
        for (l, o) in LETTERS.iter().zip(&self.options) {
            s.push_str(&format!(" {l}: {o}"));
        }
        if !instruction.is_empty() {
            s.push(' ');
            s.push_str(instruction);
        }
        s
    }
}

/// An image of a record: a file, or bytes embedded in the dataset.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageRef {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// One training or evaluation item in the shape every loader produces and every
/// writer consumes: a user turn with `<image>` placeholders, the expected response,
/// and the ground-truth answer string (what GRPO's accuracy reward compares).
#[derive(Clone, Debug, PartialEq)]
pub struct QaRecord {
    pub id: String,
    pub kind: String,
    pub system: Option<String>,
    /// The user's text; each `<image>` marks where an image goes, in order.
    pub prompt: String,
    pub images: Vec<ImageRef>,
    /// The assistant's target (a letter, or a `<think>…</think><answer>…</answer>` text).
    pub response: String,
    /// The ground truth answer (usually the option letter).
    pub answer: String,
    /// Anything else known about the item (e.g. the pair's yaw and directions),
    /// kept through files as a `meta` object; `Null` when nothing.
    pub meta: serde_json::Value,
}

impl QaRecord {
    /// Number of `<image>` placeholders in the prompt.
    pub fn placeholder_count(&self) -> usize {
        self.prompt.matches("<image>").count()
    }
}
