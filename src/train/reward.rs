//! GRPO rewards (PAPER.md, stage 2): format (the whole response matches
//! `^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$`, dot-all, case-insensitive)
//! and accuracy (the stripped `<answer>` content equals the ground truth), mixed
//! 0.5 / 0.5 by default. Rewards are a trait so others can be added.

use regex::Regex;

/// A reward for one response given the ground truth string.
pub trait Reward: Send + Sync {
    fn name(&self) -> &str;
    fn score(&self, response: &str, truth: &str) -> f32;
}

/// 1 when the whole response is `<think>…</think><answer>…</answer>` (the paper's
/// pattern), else 0.
pub struct FormatReward {
    re: Regex,
}

impl Default for FormatReward {
    fn default() -> Self {
        FormatReward {
            re: Regex::new(r"(?si)^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$").expect("valid pattern"),
        }
    }
}

impl Reward for FormatReward {
    fn name(&self) -> &str {
        "format"
    }
    fn score(&self, response: &str, _truth: &str) -> f32 {
        f32::from(self.re.is_match(response))
    }
}

/// 1 when the response holds exactly one `<answer>…</answer>` and its stripped
/// content equals the ground truth exactly. A second answer block scores 0, so
/// hedging with several answers cannot collect the reward.
pub struct AccuracyReward {
    open: Regex,
    block: Regex,
}

impl Default for AccuracyReward {
    fn default() -> Self {
        AccuracyReward {
            open: Regex::new(r"(?i)<answer>").expect("valid pattern"),
            block: Regex::new(r"(?si)<answer>(.*?)</answer>").expect("valid pattern"),
        }
    }
}

impl AccuracyReward {
    /// The stripped content of the single answer block, if there is exactly one.
    pub fn extract<'a>(&self, response: &'a str) -> Option<&'a str> {
        if self.open.find_iter(response).count() != 1 {
            return None;
        }
        self.block.captures(response).and_then(|c| c.get(1)).map(|m| m.as_str().trim())
    }
}

impl Reward for AccuracyReward {
    fn name(&self) -> &str {
        "accuracy"
    }
    fn score(&self, response: &str, truth: &str) -> f32 {
        f32::from(self.extract(response) == Some(truth.trim()))
    }
}

/// `Σ wᵢ · rewardᵢ`; also reports each part so metrics can show format rate and
/// accuracy separately.
pub struct WeightedReward {
    pub parts: Vec<(Box<dyn Reward>, f32)>,
}

impl WeightedReward {
    /// The paper's reward: 0.5 · accuracy + 0.5 · format.
    pub fn actial(accuracy_weight: f32, format_weight: f32) -> WeightedReward {
        WeightedReward {
            parts: vec![
                (Box::new(AccuracyReward::default()), accuracy_weight),
                (Box::new(FormatReward::default()), format_weight),
            ],
        }
    }

    /// (total, each part's unweighted score in order).
    pub fn score(&self, response: &str, truth: &str) -> (f32, Vec<f32>) {
        let each: Vec<f32> = self.parts.iter().map(|(r, _)| r.score(response, truth)).collect();
        (self.parts.iter().zip(&each).map(|((_, w), s)| w * s).sum(), each)
    }
}
