//! The SFT run configuration: a TOML file (every key optional, unknown keys are
//! errors), overridden by `--set section.key=value` on the command line.
//!
//! ```toml
//! [model]
//! path = "tiny"            # or a Hugging Face Qwen2.5-VL directory
//! [data]
//! train = ["data/synth/mix.jsonl"]
//! [lora]
//! enabled = true
//! rank = 16
//! [optim]
//! lr = 1e-4
//! [run]
//! steps = 300
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::grpo::LossAgg;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A model directory, or `tiny` for the built-in preset.
    pub path: String,
    /// Random-init seed when `path = "tiny"` and no checkpoint is given.
    pub init_seed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Dataset files (ShareGPT json/jsonl, MCQ jsonl or parquet), concatenated.
    pub train: Vec<String>,
    /// When set, build the hybrid cold-start mix on load with this CoT fraction
    /// (files already mixed by `actial-data mix` leave it unset).
    pub cot_fraction: Option<f64>,
    pub cot_unique: usize,
    /// CoT items of the mix end with this instead of the letter-only instruction
    /// (None: the letter items' prompt). The tiny preset sets
    /// `qa::REASONING_INSTRUCTION`, so the prompt tells a small model which answer
    /// style is wanted.
    pub cot_instruction: Option<String>,
    /// Pseudo-CoT length in the mix built on load: `full` (the paper's five
    /// steps) or `short` (two sentences; the tiny preset's embedded default).
    pub cot_style: crate::data::mix::CotStyle,
    /// System prompt for rows without one (None: the chat template's default).
    pub system: Option<String>,
    /// Curriculum: phases run in order before the whole set, each for `steps`
    /// optimizer steps drawing only examples whose record kind is in its `kinds`
    /// (`[[data.curriculum]]` tables, or `--set 'data.curriculum=[{kinds=["a"],
    /// steps=100}]'`). Empty: no curriculum. The tiny preset's embedded default
    /// uses one for the mirror question (docs/TINY_BASE.md).
    pub curriculum: Vec<CurriculumPhase>,
    /// Draw the questions of one photo pair (and its pseudo-CoT) one after
    /// another, so they share a batch: for the mirror question the two
    /// translation answers of a pair are opposite letters for the same photos, and
    /// in one batch their gradients on everything but the perspective word cancel
    /// (docs/TINY_BASE.md). Off: every example drawn on its own (the paper).
    pub batch_by_pair: bool,
}

/// Rendered viewpoint data (`actial::data::synth`): what a run with the tiny
/// model and no data files trains and evaluates on. Runs on data files never
/// read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthSection {
    /// Rendered training pairs and held-out pairs.
    pub pairs: usize,
    pub heldout_pairs: usize,
    /// `--recipe full`'s held-out sets from the rendered held-out pairs: per
    /// question kind, as many items of each correct letter (so no constant
    /// letter beats the others), at most this many per in-domain kind (0: all).
    pub heldout_per_kind: usize,
    /// Option layout of rendered questions: `shuffled` (the paper) or `fixed`
    /// (the tiny preset's documented simplification, `data::qa::OptionOrder`).
    /// Unset: the start model's (the tiny base records the order it learned), else
    /// shuffled.
    pub option_order: Option<crate::data::qa::OptionOrder>,
    /// What rendered photos show: `parts` (multi-part objects) or `cube` (one
    /// frame-filling cube with coloured faces: the tiny preset, whose 4-block
    /// vision tower does not learn small parts' positions; docs/TINY_BASE.md).
    pub scene: crate::data::render::SceneStyle,
    /// Largest orbit change between a rendered pair's photos, degrees (from 20;
    /// the paper's pair filter allows up to 100).
    pub max_yaw_deg: f64,
}

impl Default for SynthSection {
    fn default() -> Self {
        SynthSection {
            pairs: 512,
            heldout_pairs: 50,
            heldout_per_kind: 100,
            option_order: None,
            scene: crate::data::render::SceneStyle::Parts,
            max_yaw_deg: 100.0,
        }
    }
}

/// One phase of `data.curriculum`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurriculumPhase {
    /// Record kinds this phase draws (`camera_rotation`, `sat_nearer`, ...).
    pub kinds: Vec<String>,
    /// Optimizer steps.
    pub steps: usize,
    /// This phase's `train.loss_mean` (absent: the run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_mean: Option<LossMean>,
    /// Only examples answered this way: `letter` (a bare answer) or `reasoning`
    /// (`<think>…</think><answer>…</answer>`, the mix's pseudo-CoTs); absent: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<AnswerStyle>,
    /// This phase's `data.batch_by_pair` (absent: the run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_by_pair: Option<bool>,
}

/// How a training example answers (`data.curriculum` phases' `answers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerStyle {
    Letter,
    Reasoning,
}

impl AnswerStyle {
    /// Whether an example with this `reasoning` flag answers in this style.
    pub fn matches(self, reasoning: bool) -> bool {
        reasoning == (self == AnswerStyle::Reasoning)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub enabled: bool,
    pub rank: usize,
    pub alpha: f32,
    /// PEFT target_modules.
    pub targets: Vec<String>,
    pub language: bool,
    pub vision: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Full fine-tuning: which parts train (ignored with LoRA).
    pub vision_tower: bool,
    pub merger: bool,
    pub language: bool,
    /// How a global batch's loss averages its supervised tokens: `token` (the
    /// paper's LLaMA-Factory SFT: every token weighs the same, so a pseudo-CoT of a
    /// few hundred tokens outweighs many one-letter answers) or `sample` (each
    /// sample's tokens are averaged first, then the samples: every answer counts)
    /// or `sqrt` (in between: a sample of n supervised tokens weighs sqrt(n), so a
    /// 40-token pseudo-CoT counts ~5 one-letter answers, not 1 or 20).
    pub loss_mean: LossMean,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossMean {
    #[default]
    Token,
    Sample,
    Sqrt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub lr: f32,
    pub warmup_steps: usize,
    pub schedule: Schedule,
    /// The schedule's final lr as a fraction of `lr` (cosine / linear).
    pub min_lr_ratio: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Global gradient-norm clip; 0 disables.
    pub max_grad_norm: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Passes over the data (ignored when `steps` is set).
    pub epochs: usize,
    /// Optimizer steps; 0 = derive from `epochs`.
    pub steps: usize,
    /// Samples per optimizer step.
    pub global_batch: usize,
    /// Samples per forward/backward; global_batch must be a multiple.
    pub micro_batch: usize,
    /// Longest sample in tokens; longer samples are skipped and counted (images
    /// cannot be cut in half, and a cut answer would teach the wrong thing).
    pub max_length: usize,
    /// Pixel budget per image.
    pub max_pixels: usize,
    pub seed: u64,
    /// `cpu` or `cuda[:N]`.
    pub device: String,
    pub out_dir: String,
    /// Checkpoint every N steps (0: only at the end).
    pub save_every: usize,
    /// Checkpoints kept (oldest deleted first).
    pub keep_last: usize,
    /// Activation recomputation: decoder layers and vision blocks (by index) that
    /// keep only their input and run their forward again in the backward, trading
    /// compute for memory. `recompute_all` selects every layer and block.
    pub recompute_all: bool,
    pub recompute_text_layers: Vec<usize>,
    pub recompute_vision_blocks: Vec<usize>,
}

/// Stage 2 (GRPO). Optimizer betas, weight decay and clipping come from `[optim]`,
/// LoRA and freeze flags from `[lora]` / `[train]`, devices and output from `[run]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoSection {
    /// Prompt files (any format `actial-data` reads; each record's `answer` is the
    /// ground truth the accuracy reward compares).
    pub data: Vec<String>,
    /// GRPO steps (each `prompts_per_step` prompts x `group` samples).
    pub steps: usize,
    /// Stage 2's own learning rate and warm-up (linear, then constant); unset:
    /// `optim.lr`, `optim.warmup_steps`.
    pub lr: Option<f32>,
    pub warmup_steps: Option<usize>,
    pub prompts_per_step: usize,
    /// Samples per prompt (G).
    pub group: usize,
    /// Prompts per PPO mini-batch (one optimizer update each).
    pub mini_batch_prompts: usize,
    pub ppo_epochs: usize,
    /// Sequences per forward/backward in the update (unset: `run.micro_batch`).
    pub micro_batch: Option<usize>,
    pub max_new_tokens: usize,
    /// Longer prompts (text + image tokens) are skipped and counted.
    pub max_prompt_tokens: usize,
    /// Images are downscaled to at most this many pixels (960x540).
    pub max_image_pixels: usize,
    /// Most rollout samples decoding at once (whole groups; 0: all of a step).
    /// The paged KV cache is sized for these; a new prompt is admitted when a
    /// group finishes (continuous batching). Results do not depend on it.
    pub max_inflight_samples: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub beta: f32,
    pub eps_low: f32,
    pub eps_high: f32,
    /// Dual-clip PPO (the Actial release's verl, `clip_ratio_c`): for a
    /// negative advantage a token's loss is capped at `clip_ratio_c·|A|`; 0 = off.
    pub clip_ratio_c: f32,
    /// The k3 estimate is clamped to at most this (the release's `low_var_kl`
    /// clamps to [-10, 10]; k3 is never negative); 0 = off.
    pub kl_clamp: f32,
    pub loss_agg: LossAgg,
    pub accuracy_weight: f32,
    pub format_weight: f32,
    /// System prompt of every GRPO prompt (None: the records' own).
    pub system: Option<String>,
    /// GRPO prompts (and the out-of-domain evaluation of `--recipe full`) end with
    /// this instead of the letter-only instruction (None: the records' prompts).
    pub instruction: Option<String>,
    /// Skip a mini-batch's optimizer update when every advantage in it is 0 (all
    /// its groups flat): its only gradient is then the KL term near the reference,
    /// which Adam would blow up to full-size steps. TRL applies the update; with
    /// the paper's 256-prompt mini-batches an all-flat one is rare.
    pub skip_flat_updates: bool,
    /// Checkpoint every N steps (0: only at the end; unset: `run.save_every`).
    pub save_every: Option<usize>,
}

impl Default for GrpoSection {
    /// PAPER.md, stage 2.
    fn default() -> Self {
        GrpoSection {
            data: vec![],
            steps: 150,
            lr: None,
            warmup_steps: None,
            prompts_per_step: 1024,
            group: 16,
            mini_batch_prompts: 256,
            ppo_epochs: 1,
            micro_batch: None,
            max_new_tokens: 4096,
            max_prompt_tokens: 16_000,
            max_image_pixels: 960 * 540,
            max_inflight_samples: 256,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            beta: 0.01,
            eps_low: 0.2,
            eps_high: 0.2,
            clip_ratio_c: 3.0,
            kl_clamp: 10.0,
            loss_agg: LossAgg::TokenMean,
            accuracy_weight: 0.5,
            format_weight: 0.5,
            system: Some(crate::data::qa::ACTIAL_SYSTEM.to_string()),
            instruction: None,
            skip_flat_updates: true,
            save_every: None,
        }
    }
}

/// One run's configuration: stage 1 (SFT: `[data]`, `[optim]`, `[run]`) and
/// stage 2 (`[grpo]`), sharing `[model]`, `[lora]` and `[train]`; `[synth]`
/// for rendered data, `[pretrain]` for the tiny base. Its `Default` is the
/// paper's preset (`assets/presets/paper.toml`, which lists every key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub synth: SynthSection,
    #[serde(default)]
    pub lora: LoraSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub run: RunSection,
    #[serde(default)]
    pub grpo: GrpoSection,
    #[serde(default)]
    pub pretrain: PretrainSection,
}

impl Default for SftConfig {
    /// The paper's recipe (`assets/presets/paper.toml`).
    fn default() -> Self {
        SftConfig::preset("paper").expect("the committed paper preset is valid")
    }
}

/// `--recipe pretrain` only: what the tiny base learns from random init
/// (`actial::data::pretrain`). The other recipes refuse these keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainSection {
    /// The mix's counts, as [`crate::data::pretrain::PretrainMix`] documents them.
    pub photos: u64,
    pub pairs: u64,
    pub text_items: u64,
    pub perspective_items: u64,
    pub perspective_photos: u64,
    pub reasoning_every: u64,
    /// Evaluate a held-out sample every N steps (0: only at the end).
    pub eval_every: usize,
    /// Start from this tiny model directory (an earlier stage's model/ or a
    /// checkpoint) instead of random init.
    pub init: Option<String>,
}

impl PretrainSection {
    /// The pretraining set's counts.
    pub fn mix(&self) -> crate::data::pretrain::PretrainMix {
        crate::data::pretrain::PretrainMix {
            photos: self.photos,
            pairs: self.pairs,
            text_items: self.text_items,
            perspective_items: self.perspective_items,
            perspective_photos: self.perspective_photos,
            reasoning_every: self.reasoning_every,
        }
    }
}

impl Default for PretrainSection {
    fn default() -> Self {
        PretrainSection {
            photos: 8000,
            pairs: 0,
            text_items: 150_000,
            perspective_items: 0,
            perspective_photos: 0,
            reasoning_every: 0,
            eval_every: 2000,
            init: None,
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection { path: "tiny".into(), init_seed: 0 }
    }
}
impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            train: vec![],
            cot_fraction: None,
            cot_unique: 1000,
            cot_instruction: None,
            cot_style: crate::data::mix::CotStyle::Full,
            system: None,
            curriculum: vec![],
            batch_by_pair: false,
        }
    }
}
impl Default for LoraSection {
    fn default() -> Self {
        LoraSection {
            enabled: false,
            rank: 16,
            alpha: 32.0,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                .map(String::from)
                .to_vec(),
            language: true,
            vision: false,
        }
    }
}
impl Default for TrainSection {
    fn default() -> Self {
        TrainSection { vision_tower: false, merger: true, language: true, loss_mean: LossMean::Token }
    }
}
impl Default for OptimSection {
    /// The paper's SFT stage (LLaMA-Factory): lr 5e-6, 50 warm-up steps; cosine
    /// (LLaMA-Factory's default scheduler; the paper does not say).
    fn default() -> Self {
        OptimSection {
            lr: 5e-6,
            warmup_steps: 50,
            schedule: Schedule::Cosine,
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: 1.0,
        }
    }
}
impl Default for RunSection {
    /// The paper's SFT stage: 2 epochs, global batch 128.
    fn default() -> Self {
        RunSection {
            epochs: 2,
            steps: 0,
            global_batch: 128,
            micro_batch: 4,
            max_length: 4096,
            max_pixels: 12_845_056,
            seed: 42,
            device: "cpu".into(),
            out_dir: "runs/sft".into(),
            save_every: 0,
            keep_last: 2,
            recompute_all: false,
            recompute_text_layers: vec![],
            recompute_vision_blocks: vec![],
        }
    }
}

/// Keys that moved, and where to: a config written for an earlier version gets
/// the new name rather than "unknown field".
const MOVED: [(&str, &str); 6] = [
    ("data.synth_pairs", "synth.pairs"),
    ("data.synth_heldout_pairs", "synth.heldout_pairs"),
    ("data.option_order", "synth.option_order"),
    ("data.synth_scene", "synth.scene"),
    ("data.synth_max_yaw_deg", "synth.max_yaw_deg"),
    ("run.log_every", "gone: every step is logged (metrics.jsonl, tb/)"),
];

/// The committed presets, by name (`--preset NAME`).
pub const PRESETS: [(&str, &str); 6] = [
    ("paper", include_str!("../../assets/presets/paper.toml")),
    ("qwen2.5-vl-7b", include_str!("../../assets/presets/qwen2.5-vl-7b.toml")),
    ("qwen2.5-vl-3b", include_str!("../../assets/presets/qwen2.5-vl-3b.toml")),
    ("tiny", include_str!("../../assets/presets/tiny.toml")),
    ("embedded", include_str!("../../assets/presets/embedded.toml")),
    ("pretrain", include_str!("../../assets/presets/pretrain.toml")),
];

impl SftConfig {
    /// A committed preset (`assets/presets/NAME.toml`, built into the binary):
    /// its keys on top of its `base` preset's, or on the built-in defaults
    /// (which are `paper.toml`'s values).
    pub fn preset(name: &str) -> Result<SftConfig> {
        let file = format!("assets/presets/{name}.toml");
        let err = |msg: String| Error::Config { file: file.clone(), msg };
        let text = Self::preset_text(name)?;
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| err(e.to_string()))?;
        let base = match table.remove("base") {
            None => SftConfig::builtin(),
            Some(toml::Value::String(b)) if b != name => Self::preset(&b)?,
            Some(other) => return Err(err(format!("base must name another preset, not {other}"))),
        };
        let rest = toml::to_string(&table).map_err(|e| err(e.to_string()))?;
        Self::from_toml(&rest, &base, &[], &file)
    }

    /// A committed preset's file text.
    pub fn preset_text(name: &str) -> Result<&'static str> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| Error::Config {
            file: format!("assets/presets/{name}.toml"),
            msg: format!("no preset {name:?}: one of {}", PRESETS.map(|(n, _)| n).join(", ")),
        })
    }

    /// Every section's own defaults: what a preset without a `base` starts
    /// from (the paper's preset sets every key itself).
    fn builtin() -> SftConfig {
        SftConfig {
            model: Default::default(),
            data: Default::default(),
            synth: Default::default(),
            lora: Default::default(),
            train: Default::default(),
            optim: Default::default(),
            run: Default::default(),
            grpo: Default::default(),
            pretrain: Default::default(),
        }
    }

    /// The tiny preset on a CPU (`assets/presets/tiny.toml`).
    pub fn tiny_defaults() -> SftConfig {
        Self::preset("tiny").expect("the committed tiny preset is valid")
    }

    /// The embedded default (`actial-train` with no arguments:
    /// `assets/presets/embedded.toml`).
    pub fn embedded_defaults() -> SftConfig {
        Self::preset("embedded").expect("the committed embedded preset is valid")
    }

    /// `actial-train --recipe pretrain`'s defaults (`assets/presets/pretrain.toml`).
    pub fn pretrain_defaults() -> SftConfig {
        Self::preset("pretrain").expect("the committed pretrain preset is valid")
    }

    /// Parses TOML text on top of `base` (keys not given keep `base`'s values),
    /// then applies `overrides` (`section.key=value`, value in TOML syntax or a
    /// bare string). Unknown sections or keys are errors naming them.
    pub fn from_toml(text: &str, base: &SftConfig, overrides: &[String], file: &str) -> Result<SftConfig> {
        let err = |msg: String| Error::Config { file: file.to_string(), msg };
        let mut doc: toml::Table = toml::Table::try_from(base).map_err(|e| err(e.to_string()))?;
        let given: toml::Table = text.parse().map_err(|e: toml::de::Error| err(e.to_string()))?;
        let set_keys = overrides.iter().filter_map(|o| o.split_once('=')).map(|(k, _)| k.trim().to_string());
        let file_keys = given.iter().flat_map(|(section, t)| {
            t.as_table().into_iter().flat_map(move |t| t.keys().map(move |k| format!("{section}.{k}")))
        });
        for key in file_keys.chain(set_keys) {
            if let Some((_, now)) = MOVED.iter().find(|(old, _)| *old == key) {
                return Err(err(format!("{key} is now {now}")));
            }
        }
        merge(&mut doc, given, "").map_err(err)?;
        for o in overrides {
            let (key, value) =
                o.split_once('=').ok_or_else(|| err(format!("override {o:?} is not section.key=value")))?;
            let (section, field) =
                key.trim().split_once('.').ok_or_else(|| err(format!("override key {key:?} is not section.key")))?;
            let v: toml::Value = format!("v = {}", value.trim())
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.trim().to_string()));
            let mut patch = toml::Table::new();
            let mut inner = toml::Table::new();
            inner.insert(field.to_string(), v);
            patch.insert(section.to_string(), toml::Value::Table(inner));
            merge(&mut doc, patch, "").map_err(err)?;
        }
        let cfg: SftConfig = toml::Value::Table(doc).try_into().map_err(|e: toml::de::Error| err(e.to_string()))?;
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path, base: &SftConfig, overrides: &[String]) -> Result<SftConfig> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        Self::from_toml(&text, base, overrides, &path.display().to_string())
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let y = self.synth.max_yaw_deg;
        if !(20.0..=180.0).contains(&y) {
            return Err(format!("synth.max_yaw_deg must be within 20..=180 degrees, got {y}"));
        }
        let r = &self.run;
        if r.micro_batch == 0 || r.global_batch == 0 || !r.global_batch.is_multiple_of(r.micro_batch) {
            return Err(format!(
                "run.global_batch ({}) must be a positive multiple of run.micro_batch ({})",
                r.global_batch, r.micro_batch
            ));
        }
        if r.steps == 0 && r.epochs == 0 {
            return Err("set run.steps or run.epochs".into());
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return Err(format!("optim.lr must be positive, got {}", self.optim.lr));
        }
        if let Some(f) = self.data.cot_fraction
            && !(0.0..1.0).contains(&f)
        {
            return Err(format!("data.cot_fraction must be in [0, 1), got {f}"));
        }
        if self.lora.enabled && self.lora.rank == 0 {
            return Err("lora.rank must be positive".into());
        }
        let g = &self.grpo;
        if g.group < 2 {
            return Err(format!("grpo.group must be at least 2 (advantages compare samples), got {}", g.group));
        }
        if g.prompts_per_step == 0
            || g.mini_batch_prompts == 0
            || !g.prompts_per_step.is_multiple_of(g.mini_batch_prompts)
        {
            return Err(format!(
                "grpo.prompts_per_step ({}) must be a positive multiple of grpo.mini_batch_prompts ({})",
                g.prompts_per_step, g.mini_batch_prompts
            ));
        }
        if self.grpo_micro_batch() == 0 || g.ppo_epochs == 0 || g.max_new_tokens == 0 {
            return Err("grpo.micro_batch, grpo.ppo_epochs and grpo.max_new_tokens must be positive".into());
        }
        let positive = |x: f32| x > 0.0 && x.is_finite();
        if !positive(self.grpo_lr()) || !positive(g.temperature) || g.beta < 0.0 {
            return Err(format!(
                "grpo.lr and grpo.temperature must be positive and grpo.beta non-negative (lr {}, temperature {}, beta {})",
                self.grpo_lr(),
                g.temperature,
                g.beta
            ));
        }
        self.check_ranges()
    }

    /// Every numeric key within the range where training means something,
    /// checked before any data is read or memory allocated; all offenders in
    /// one message.
    fn check_ranges(&self) -> std::result::Result<(), String> {
        let mut bad: Vec<String> = Vec::new();
        let mut within = |key: &str, x: f64, lo: f64, hi: f64, lo_open: bool, hi_open: bool| {
            let above = if lo_open { x > lo } else { x >= lo };
            let below = if hi_open { x < hi } else { x <= hi };
            if !(above && below && x.is_finite()) {
                let (l, r) = (if lo_open { "(" } else { "[" }, if hi_open { ")" } else { "]" });
                let got = if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) { format!("{x:e}") } else { format!("{x}") };
                bad.push(format!("{key} must be in {l}{lo}, {hi}{r}, got {got}"));
            }
        };
        let (o, r, g, l) = (&self.optim, &self.run, &self.grpo, &self.lora);
        // Learning rates past 1 are no AdamW run anyone means (3e38 turns every
        // weight into NaN in one step).
        within("optim.lr", o.lr as f64, 0.0, 1.0, true, false);
        within("grpo.lr", self.grpo_lr() as f64, 0.0, 1.0, true, false);
        // beta = 1 freezes a moment at zero: the update divides 0 by 0.
        within("optim.beta1", o.beta1 as f64, 0.0, 1.0, false, true);
        within("optim.beta2", o.beta2 as f64, 0.0, 1.0, false, true);
        within("optim.eps", o.eps as f64, 0.0, 1.0, true, false);
        within("optim.weight_decay", o.weight_decay as f64, 0.0, 1.0, false, false);
        within("optim.min_lr_ratio", o.min_lr_ratio as f64, 0.0, 1.0, false, false);
        within("optim.max_grad_norm (0 = no clipping)", o.max_grad_norm, 0.0, 1e9, false, false);
        within("grpo.top_p", g.top_p as f64, 0.0, 1.0, true, false);
        within("grpo.temperature", g.temperature as f64, 0.0, 100.0, true, false);
        within("grpo.eps_low", g.eps_low as f64, 0.0, 1.0, false, true);
        within("grpo.eps_high", g.eps_high as f64, 0.0, 100.0, false, false);
        within("grpo.beta", g.beta as f64, 0.0, 1e3, false, false);
        if g.clip_ratio_c != 0.0 {
            within("grpo.clip_ratio_c (0 = off)", g.clip_ratio_c as f64, 1.0, 1e3, true, false);
        }
        within("grpo.kl_clamp (0 = off)", g.kl_clamp as f64, 0.0, 1e6, false, false);
        within("grpo.accuracy_weight", g.accuracy_weight as f64, 0.0, 1e3, false, false);
        within("grpo.format_weight", g.format_weight as f64, 0.0, 1e3, false, false);
        within("lora.alpha", l.alpha as f64, 0.0, 1e6, true, false);
        // Sizes: far above the paper's (global batch 128 SFT, 1024 prompts x 16
        // GRPO samples; 16,000-token prompts; 4096-token responses), far below
        // what an allocation of them would abort on.
        let sizes: [(&str, usize, usize); 12] = [
            ("run.global_batch", r.global_batch, 1 << 20),
            ("run.micro_batch", r.micro_batch, 1 << 16),
            ("run.max_length", r.max_length, 1 << 20),
            ("run.max_pixels", r.max_pixels, 1 << 28),
            ("grpo.group", g.group, 1 << 12),
            ("grpo.prompts_per_step", g.prompts_per_step, 1 << 16),
            ("grpo.micro_batch", self.grpo_micro_batch(), 1 << 16),
            ("grpo.max_new_tokens", g.max_new_tokens, 1 << 17),
            ("grpo.max_prompt_tokens", g.max_prompt_tokens, 1 << 20),
            ("grpo.max_image_pixels", g.max_image_pixels, 1 << 28),
            ("grpo.max_inflight_samples", g.max_inflight_samples, 1 << 20),
            ("lora.rank", if l.enabled { l.rank } else { 1 }, 1 << 14),
        ];
        for (key, x, max) in sizes {
            if x == 0 || x > max {
                bad.push(format!("{key} must be between 1 and {max}, got {x}"));
            }
        }
        if bad.is_empty() { Ok(()) } else { Err(bad.join("; ")) }
    }

    /// GRPO learning rate at step `step` (0-based): linear warm-up, then constant
    /// (verl's default).
    pub fn grpo_lr_at(&self, step: usize) -> f32 {
        let (lr, warmup) = (self.grpo_lr(), self.grpo_warmup_steps());
        if step < warmup { lr * (step + 1) as f32 / warmup as f32 } else { lr }
    }

    /// Stage 2's peak learning rate: `grpo.lr`, else `optim.lr`.
    pub fn grpo_lr(&self) -> f32 {
        self.grpo.lr.unwrap_or(self.optim.lr)
    }

    /// Stage 2's warm-up steps: `grpo.warmup_steps`, else `optim.warmup_steps`.
    pub fn grpo_warmup_steps(&self) -> usize {
        self.grpo.warmup_steps.unwrap_or(self.optim.warmup_steps)
    }

    /// Sequences per forward/backward in a GRPO update: `grpo.micro_batch`,
    /// else `run.micro_batch`.
    pub fn grpo_micro_batch(&self) -> usize {
        self.grpo.micro_batch.unwrap_or(self.run.micro_batch)
    }

    /// GRPO checkpoint interval: `grpo.save_every`, else `run.save_every`.
    pub fn grpo_save_every(&self) -> usize {
        self.grpo.save_every.unwrap_or(self.run.save_every)
    }

    /// Learning rate at optimizer step `step` (0-based) of `total`: linear warm-up
    /// to `lr`, then the schedule down to `lr·min_lr_ratio`.
    pub fn lr_at(&self, step: usize, total: usize) -> f32 {
        let o = &self.optim;
        if step < o.warmup_steps {
            return o.lr * (step + 1) as f32 / o.warmup_steps as f32;
        }
        let span = total.saturating_sub(o.warmup_steps).max(1) as f32;
        let p = ((step - o.warmup_steps) as f32 / span).min(1.0);
        let floor = o.lr * o.min_lr_ratio;
        match o.schedule {
            Schedule::Constant => o.lr,
            Schedule::Linear => floor + (o.lr - floor) * (1.0 - p),
            Schedule::Cosine => floor + (o.lr - floor) * 0.5 * (1.0 + (std::f32::consts::PI * p).cos()),
        }
    }
}

/// Deep-merges `patch` into `base`; keys absent from `base` are unknown.
fn merge(base: &mut toml::Table, patch: toml::Table, path: &str) -> std::result::Result<(), String> {
    for (k, v) in patch {
        let full = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(p)) => merge(b, p, &full)?,
            (Some(slot), v) => *slot = v,
            (None, v) if path.is_empty() => return Err(format!("unknown section [{full}] = {v}")),
            // Optional keys (None) are absent from the serialised base: accept keys
            // the struct knows by trying them at deserialisation.
            (None, v) => {
                base.insert(k, v);
            }
        }
    }
    Ok(())
}
