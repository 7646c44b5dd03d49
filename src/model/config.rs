//! Qwen2.5-VL `config.json`, in the three layouts found in the wild:
//! 1. hub files: text fields at the top level, `rope_scaling: {type: mrope, mrope_section}`;
//! 2. transformers >= 4.52: text fields under `text_config`;
//! 3. transformers 5: `rope_parameters: {rope_type, rope_theta, mrope_section}` and `dtype`.
//!
//! Each field is looked up in `text_config` first, then at the top level; a missing
//! or mistyped field is an error naming the file and the key.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    /// Width of the merged tokens handed to the LM (= text hidden size).
    pub out_hidden_size: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    /// Attention window side in pixels (112 → 4x4 merged tokens).
    pub window_size: usize,
    /// Blocks that attend over whole images instead of windows.
    pub fullatt_block_indexes: Vec<usize>,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    /// Elements of one flattened patch: channels · temporal · patch².
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
    /// Patches merged into one LM token (2x2 = 4).
    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }
    /// Window side in merged tokens.
    pub fn window_merged(&self) -> usize {
        self.window_size / self.spatial_merge_size / self.patch_size
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// Head-dim split across the (t, h, w) position axes, summing to head_dim/2.
    pub mrope_section: [usize; 3],
    pub tie_word_embeddings: bool,
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Token ids the model itself depends on; read from config.json (and checked
/// against the tokenizer by the tokenizer module).
#[derive(Clone, Debug, PartialEq)]
pub struct SpecialTokens {
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub eos_token_id: Vec<u32>,
    /// `<|endoftext|>` in Qwen's files; written back so other tools see a valid id.
    pub bos_token_id: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Qwen25VlConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub tokens: SpecialTokens,
}

/// Field lookup with errors that name the file and key.
struct Fields<'a> {
    file: &'a str,
    root: &'a Value,
    text: &'a Value,
}

impl<'a> Fields<'a> {
    fn err(&self, key: &str, msg: &str) -> Error {
        Error::Config { file: self.file.to_string(), msg: format!("{key}: {msg}") }
    }
    /// `text_config.key`, else top-level `key`.
    fn text_value(&self, key: &str) -> Option<&'a Value> {
        self.text.get(key).or_else(|| self.root.get(key)).filter(|v| !v.is_null())
    }
    fn usize_in(&self, obj: &Value, key: &str) -> Result<usize> {
        let v = obj.get(key).ok_or_else(|| self.err(key, "missing"))?;
        v.as_u64().map(|x| x as usize).ok_or_else(|| self.err(key, &format!("expected an integer, found {v}")))
    }
    fn text_usize(&self, key: &str) -> Result<usize> {
        let v = self.text_value(key).ok_or_else(|| self.err(key, "missing"))?;
        v.as_u64().map(|x| x as usize).ok_or_else(|| self.err(key, &format!("expected an integer, found {v}")))
    }
    fn text_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.text_value(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.err(key, &format!("expected a number, found {v}"))),
        }
    }
    fn token(&self, key: &str) -> Result<u32> {
        let v = self.text_value(key).ok_or_else(|| self.err(key, "missing"))?;
        v.as_u64().map(|x| x as u32).ok_or_else(|| self.err(key, &format!("expected a token id, found {v}")))
    }
}

impl Qwen25VlConfig {
    /// Reads and parses `path` (a config.json).
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: file.clone(), source: e })?;
        Self::from_json_str(&text, &file)
    }

    /// Parses config.json text; `file` names it in errors.
    pub fn from_json_str(json: &str, file: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(json)
            .map_err(|e| Error::Config { file: file.to_string(), msg: format!("not valid JSON: {e}") })?;
        if let Some(mt) = root.get("model_type").and_then(Value::as_str)
            && !matches!(mt, "qwen2_5_vl" | "qwen2_5_vl_text")
        {
            return Err(Error::Config { file: file.to_string(), msg: format!("model_type {mt:?} is not qwen2_5_vl") });
        }
        let text = root.get("text_config").unwrap_or(&root);
        let f = Fields { file, root: &root, text };

        // Rotary: rope_parameters (transformers 5) or rope_scaling (older), plus rope_theta.
        let rope = f.text_value("rope_parameters").or_else(|| f.text_value("rope_scaling"));
        let mut rope_theta = f.text_f32("rope_theta")?;
        let mut mrope_section = None;
        if let Some(r) = rope {
            let kind = r.get("rope_type").or_else(|| r.get("type")).and_then(Value::as_str).unwrap_or("default");
            if !matches!(kind, "mrope" | "default") {
                return Err(f.err("rope_scaling", &format!("unsupported rope type {kind:?} (expected mrope)")));
            }
            if let Some(t) = r.get("rope_theta").and_then(Value::as_f64) {
                rope_theta = Some(t as f32);
            }
            if let Some(s) = r.get("mrope_section") {
                let v: Vec<usize> = serde_json::from_value(s.clone())
                    .map_err(|_| f.err("mrope_section", &format!("expected three integers, found {s}")))?;
                mrope_section = Some(v);
            }
        }
        let mrope_section =
            mrope_section.ok_or_else(|| f.err("mrope_section", "missing (no rope_scaling / rope_parameters)"))?;
        let mrope_section: [usize; 3] = mrope_section
            .as_slice()
            .try_into()
            .map_err(|_| f.err("mrope_section", &format!("expected three integers, found {mrope_section:?}")))?;

        let tie = f.text_value("tie_word_embeddings").map(|v| v.as_bool().unwrap_or(false)).unwrap_or(false);
        let text_cfg = TextConfig {
            vocab_size: f.text_usize("vocab_size")?,
            hidden_size: f.text_usize("hidden_size")?,
            intermediate_size: f.text_usize("intermediate_size")?,
            num_hidden_layers: f.text_usize("num_hidden_layers")?,
            num_attention_heads: f.text_usize("num_attention_heads")?,
            num_key_value_heads: f.text_usize("num_key_value_heads")?,
            rms_norm_eps: f.text_f32("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(1_000_000.0),
            mrope_section,
            tie_word_embeddings: tie,
        };

        let v = root.get("vision_config").ok_or_else(|| f.err("vision_config", "missing"))?;
        let vf = |key: &str, default: Option<usize>| -> Result<usize> {
            match (v.get(key), default) {
                (None, Some(d)) => Ok(d),
                _ => {
                    f.usize_in(v, key).map_err(|_| f.err(&format!("vision_config.{key}"), "missing or not an integer"))
                }
            }
        };
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(f.err("vision_config.hidden_act", &format!("{act:?} is not supported (Qwen2.5-VL uses silu)")));
        }
        let fullatt: Vec<usize> = match v.get("fullatt_block_indexes") {
            Some(x) => serde_json::from_value(x.clone())
                .map_err(|_| f.err("vision_config.fullatt_block_indexes", "expected a list of integers"))?,
            None => vec![7, 15, 23, 31],
        };
        let in_channels = match v.get("in_channels") {
            Some(_) => vf("in_channels", None)?,
            None => vf("in_chans", Some(3))?,
        };
        // transformers 5 stores the vision rotary base as rope_parameters.rope_theta.
        let vision_theta = v
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .map(|t| t as f32)
            .unwrap_or(10_000.0);
        let vision = VisionConfig {
            depth: vf("depth", None)?,
            hidden_size: vf("hidden_size", None)?,
            num_heads: vf("num_heads", None)?,
            intermediate_size: vf("intermediate_size", None)?,
            out_hidden_size: vf("out_hidden_size", None)?,
            in_channels,
            patch_size: vf("patch_size", Some(14))?,
            temporal_patch_size: vf("temporal_patch_size", Some(2))?,
            spatial_merge_size: vf("spatial_merge_size", Some(2))?,
            window_size: vf("window_size", Some(112))?,
            fullatt_block_indexes: fullatt,
            rope_theta: vision_theta,
            rms_norm_eps: 1e-6,
        };

        let eos = match f.text_value("eos_token_id") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect(),
            Some(x) => vec![x.as_u64().ok_or_else(|| f.err("eos_token_id", "expected a token id"))? as u32],
            None => vec![],
        };
        let tokens = SpecialTokens {
            image_token_id: f.token("image_token_id")?,
            video_token_id: f.token("video_token_id")?,
            vision_start_token_id: f.token("vision_start_token_id")?,
            vision_end_token_id: f.token("vision_end_token_id")?,
            eos_token_id: eos,
            bos_token_id: f.text_value("bos_token_id").and_then(Value::as_u64).map(|x| x as u32),
        };
        let cfg = Qwen25VlConfig { vision, text: text_cfg, tokens };
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Consistency checks the shapes rely on.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |msg: String| Err(Error::Config { file: file.to_string(), msg });
        let (v, t) = (&self.vision, &self.text);
        // Every size within bounds before anything divides by it or allocates
        // by it. The bounds are far above any released Qwen2.5-VL (72B: text
        // 8192 wide, 80 layers, MLP 29568; vision 1280, 32 blocks).
        let sizes: [(&str, usize, usize); 15] = [
            ("vocab_size", t.vocab_size, 1 << 24),
            ("hidden_size", t.hidden_size, 1 << 16),
            ("intermediate_size", t.intermediate_size, 1 << 20),
            ("num_hidden_layers", t.num_hidden_layers, 1024),
            ("num_attention_heads", t.num_attention_heads, 1024),
            ("num_key_value_heads", t.num_key_value_heads, 1024),
            ("vision_config.depth", v.depth, 1024),
            ("vision_config.hidden_size", v.hidden_size, 1 << 16),
            ("vision_config.intermediate_size", v.intermediate_size, 1 << 20),
            ("vision_config.num_heads", v.num_heads, 1024),
            ("vision_config.in_chans", v.in_channels, 16),
            ("vision_config.patch_size", v.patch_size, 1024),
            ("vision_config.temporal_patch_size", v.temporal_patch_size, 16),
            ("vision_config.spatial_merge_size", v.spatial_merge_size, 64),
            ("vision_config.window_size", v.window_size, 1 << 16),
        ];
        for (name, value, max) in sizes {
            if value == 0 || value > max {
                return err(format!("{name} is {value}; it must be between 1 and {max}"));
            }
        }
        if v.num_heads == 0 || v.hidden_size % v.num_heads != 0 || v.head_dim() % 4 != 0 {
            return err(format!(
                "vision hidden_size {} must split into {} heads of a multiple of 4",
                v.hidden_size, v.num_heads
            ));
        }
        if t.num_attention_heads == 0 || t.hidden_size % t.num_attention_heads != 0 {
            return err(format!("hidden_size {} is not divisible by {} heads", t.hidden_size, t.num_attention_heads));
        }
        if t.num_key_value_heads == 0 || t.num_attention_heads % t.num_key_value_heads != 0 {
            return err(format!(
                "{} attention heads are not a multiple of {} kv heads",
                t.num_attention_heads, t.num_key_value_heads
            ));
        }
        if t.mrope_section.iter().sum::<usize>() * 2 != t.head_dim() {
            return err(format!("mrope_section {:?} must sum to head_dim/2 = {}", t.mrope_section, t.head_dim() / 2));
        }
        if v.out_hidden_size != t.hidden_size {
            return err(format!("vision out_hidden_size {} != text hidden_size {}", v.out_hidden_size, t.hidden_size));
        }
        if let Some(&b) = v.fullatt_block_indexes.iter().find(|&&b| b >= v.depth) {
            return err(format!("fullatt_block_indexes names block {b} but depth is {}", v.depth));
        }
        if v.window_merged() == 0 {
            return err(format!("window_size {} is smaller than one merged token", v.window_size));
        }
        Ok(())
    }

    /// Writes a config.json in the hub layout (layout 1), readable by transformers.
    pub fn to_json(&self) -> Value {
        let (v, t, k) = (&self.vision, &self.text, &self.tokens);
        serde_json::json!({
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": "qwen2_5_vl",
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_theta,
            "rope_scaling": {"type": "mrope", "mrope_section": t.mrope_section},
            "tie_word_embeddings": t.tie_word_embeddings,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "image_token_id": k.image_token_id,
            "video_token_id": k.video_token_id,
            "vision_start_token_id": k.vision_start_token_id,
            "vision_end_token_id": k.vision_end_token_id,
            "bos_token_id": k.bos_token_id,
            "pad_token_id": k.bos_token_id,
            "eos_token_id": if k.eos_token_id.len() == 1 { serde_json::json!(k.eos_token_id[0]) } else { serde_json::json!(k.eos_token_id) },
            "torch_dtype": "float32",
            "vision_config": {
                "depth": v.depth,
                "hidden_size": v.hidden_size,
                "num_heads": v.num_heads,
                "intermediate_size": v.intermediate_size,
                "out_hidden_size": v.out_hidden_size,
                "in_chans": v.in_channels,
                "patch_size": v.patch_size,
                "temporal_patch_size": v.temporal_patch_size,
                "spatial_merge_size": v.spatial_merge_size,
                "window_size": v.window_size,
                "fullatt_block_indexes": v.fullatt_block_indexes,
                "hidden_act": "silu",
                "tokens_per_second": 2,
            },
        })
    }
}
