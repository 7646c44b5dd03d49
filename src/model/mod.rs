//! Qwen2.5-VL: config, checkpoints, the vision tower and the decoder, with explicit
//! forward and backward passes over packed (varlen) batches.

pub mod config;
pub mod generate;
pub mod image;
pub mod kv_pool;
pub mod load;
pub mod param;
pub mod positions;
pub mod resample;
pub mod rollout;
pub mod text;
pub mod tiny;
pub mod tokenizer;
pub mod vision;
pub mod weights;

use std::collections::BTreeSet;
use std::path::Path;

pub use config::{Qwen25VlConfig, SpecialTokens, TextConfig, VisionConfig};
pub use param::{Linear, Param};
use text::{DecoderLayer, TextCache, TextModel};
use vision::{Merger, VisionBlock, VisionCache, VisionTower};
pub use weights::Checkpoint;

use crate::cuda::nvtx::{self, Phase};
use crate::error::{Error, Result};
use crate::ops::{self, IGNORE_INDEX};
use crate::rng::Philox;
use crate::tensor::{DType, Device, Tensor};
use crate::{arg_err, shape_err};

/// The parts that can be frozen or trained independently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Patch embedding and vision blocks.
    VisionTower,
    /// The 2x2 patch merger (vision → LM projector).
    Merger,
    /// Embeddings, decoder layers, final norm, LM head.
    Language,
}

impl Part {
    fn of(name: &str) -> Part {
        if name.starts_with("visual.merger.") {
            Part::Merger
        } else if name.starts_with("visual.") {
            Part::VisionTower
        } else {
            Part::Language
        }
    }
}

#[derive(Clone)]
pub struct Qwen25Vl {
    pub config: Qwen25VlConfig,
    pub vision: VisionTower,
    pub text: TextModel,
}

/// Where weights come from while building a model: a checkpoint, or random init.
type Source<'a> = dyn FnMut(&str, &[usize]) -> Result<Tensor> + 'a;

impl Qwen25Vl {
    fn build(config: Qwen25VlConfig, get: &mut Source) -> Result<Qwen25Vl> {
        let (v, t) = (config.vision.clone(), config.text.clone());
        let mut lin = |name: &str, dout: usize, din: usize, bias: bool| -> Result<Linear> {
            let w = get(&format!("{name}.weight"), &[dout, din])?;
            let b = if bias { Some(get(&format!("{name}.bias"), &[dout])?) } else { None };
            Ok(Linear::new(w, b))
        };
        let vd = v.hidden_size;
        let patch_embed = lin("visual.patch_embed.proj", vd, v.patch_dim(), false)?;
        let mut blocks = Vec::new();
        for i in 0..v.depth {
            let p = format!("visual.blocks.{i}");
            blocks.push(VisionBlock {
                norm1: Param::new(Tensor::zeros([0], DType::F32, Device::Cpu)?),
                norm2: Param::new(Tensor::zeros([0], DType::F32, Device::Cpu)?),
                qkv: lin(&format!("{p}.attn.qkv"), 3 * vd, vd, true)?,
                proj: lin(&format!("{p}.attn.proj"), vd, vd, true)?,
                gate: lin(&format!("{p}.mlp.gate_proj"), v.intermediate_size, vd, true)?,
                up: lin(&format!("{p}.mlp.up_proj"), v.intermediate_size, vd, true)?,
                down: lin(&format!("{p}.mlp.down_proj"), vd, v.intermediate_size, true)?,
            });
        }
        let md = vd * v.merge_unit();
        let fc1 = lin("visual.merger.mlp.0", md, md, true)?;
        let fc2 = lin("visual.merger.mlp.2", v.out_hidden_size, md, true)?;
        let (td, hd) = (t.hidden_size, t.head_dim());
        let mut layers = Vec::new();
        for i in 0..t.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(DecoderLayer {
                input_norm: Param::new(Tensor::zeros([0], DType::F32, Device::Cpu)?),
                post_norm: Param::new(Tensor::zeros([0], DType::F32, Device::Cpu)?),
                q: lin(&format!("{p}.self_attn.q_proj"), t.num_attention_heads * hd, td, true)?,
                k: lin(&format!("{p}.self_attn.k_proj"), t.num_key_value_heads * hd, td, true)?,
                v: lin(&format!("{p}.self_attn.v_proj"), t.num_key_value_heads * hd, td, true)?,
                o: lin(&format!("{p}.self_attn.o_proj"), td, t.num_attention_heads * hd, false)?,
                gate: lin(&format!("{p}.mlp.gate_proj"), t.intermediate_size, td, false)?,
                up: lin(&format!("{p}.mlp.up_proj"), t.intermediate_size, td, false)?,
                down: lin(&format!("{p}.mlp.down_proj"), td, t.intermediate_size, false)?,
            });
        }
        // Norm weights (1-D) are fetched after the linears so the closure borrow ends.
        for (i, b) in blocks.iter_mut().enumerate() {
            b.norm1 = Param::new(get(&format!("visual.blocks.{i}.norm1.weight"), &[vd])?);
            b.norm2 = Param::new(get(&format!("visual.blocks.{i}.norm2.weight"), &[vd])?);
        }
        for (i, l) in layers.iter_mut().enumerate() {
            l.input_norm = Param::new(get(&format!("model.layers.{i}.input_layernorm.weight"), &[td])?);
            l.post_norm = Param::new(get(&format!("model.layers.{i}.post_attention_layernorm.weight"), &[td])?);
        }
        let merger = Merger { ln_q: Param::new(get("visual.merger.ln_q.weight", &[vd])?), fc1, fc2 };
        let embed = Param::new(get("model.embed_tokens.weight", &[t.vocab_size, td])?);
        let norm = Param::new(get("model.norm.weight", &[td])?);
        let lm_head =
            if t.tie_word_embeddings { None } else { Some(Param::new(get("lm_head.weight", &[t.vocab_size, td])?)) };
        let recompute_v = vec![false; v.depth];
        let recompute_t = vec![false; t.num_hidden_layers];
        let vision = VisionTower { cfg: v, patch_embed, blocks, merger, recompute: recompute_v };
        let text = TextModel {
            cfg: t,
            embed,
            layers,
            norm,
            lm_head,
            recompute: recompute_t,
            logit_chunk_bytes: text::DEFAULT_LOGIT_CHUNK_BYTES,
        };
        Ok(Qwen25Vl { config, vision, text })
    }

    /// Loads `dir/config.json` and the safetensors weights next to it. Every missing,
    /// mis-shaped or unexpected tensor is reported, all in one error.
    pub fn from_dir(dir: &Path) -> Result<Qwen25Vl> {
        let config = Qwen25VlConfig::from_file(&dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        Self::from_checkpoint(config, &ckpt, &dir.display().to_string())
    }

    pub fn from_checkpoint(config: Qwen25VlConfig, ckpt: &Checkpoint, what: &str) -> Result<Qwen25Vl> {
        let mut problems = Vec::new();
        let mut used = BTreeSet::new();
        let mut get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            used.insert(name.to_string());
            // A missing or misshapen tensor gets an empty stand-in: the model is
            // thrown away with the list of problems, and a config that asks
            // for far more than the file holds allocates nothing.
            if !ckpt.contains(name) {
                problems.push(format!("missing {name} {shape:?}"));
                return Tensor::zeros([0], DType::F32, Device::Cpu);
            }
            let t = ckpt.tensor(name)?;
            // The patch embedding is a Conv3d [out, C, T, P, P] in files: a linear here.
            let numel: usize = shape.iter().product();
            let conv_as_linear = name == "visual.patch_embed.proj.weight" && t.rank() == 5 && t.numel() == numel;
            if t.dims() != shape && !conv_as_linear {
                problems.push(format!("{name} has shape {:?}, expected {shape:?}", t.dims()));
                return Tensor::zeros([0], DType::F32, Device::Cpu);
            }
            t.reshape(shape)
        };
        let model = Self::build(config.clone(), &mut get)?;
        let tied_head = config.text.tie_word_embeddings;
        let unexpected: Vec<String> = ckpt
            .names()
            .filter(|n| !(used.contains(*n) || tied_head && *n == "lm_head.weight"))
            .map(|n| format!("unexpected {n}"))
            .collect();
        problems.extend(unexpected);
        if !problems.is_empty() {
            // A config of 100,000 layers against a 4-layer file lists the first
            // few problems, not 900,000.
            const SHOWN: usize = 24;
            let more = problems.len().saturating_sub(SHOWN);
            let mut shown = problems[..problems.len().min(SHOWN)].join("\n  ");
            if more > 0 {
                shown += &format!("\n  ... and {more} more");
            }
            return Err(Error::Checkpoint {
                file: what.to_string(),
                msg: format!("{} tensor problem(s):\n  {shown}", problems.len()),
            });
        }
        Ok(model)
    }

    /// A randomly initialised model (weights ~ N(0, 0.02²), norms 1, biases 0, as
    /// transformers initialises), deterministic in `seed`.
    pub fn random(config: Qwen25VlConfig, seed: u64) -> Result<Qwen25Vl> {
        let mut rng = Philox::new(seed, 0);
        let mut get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let n = shape.iter().product();
            let data = if name.ends_with("norm.weight")
                || name.ends_with("norm1.weight")
                || name.ends_with("norm2.weight")
                || name.ends_with("layernorm.weight")
                || name.ends_with("ln_q.weight")
            {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                rng.normal_vec(n, 0.02)
            };
            Tensor::from_f32(data, shape, Device::Cpu)
        };
        Self::build(config, &mut get)
    }

    /// Attaches LoRA adapters to every linear whose module name matches one of
    /// `spec.targets` as PEFT matches `target_modules` (the name, or its last
    /// dotted components, equals the target: `q_proj`, `attn.qkv`, `mlp.0`...), in
    /// the towers `spec` selects. Everything else is frozen. Returns the adapted
    /// module names; no match is an error.
    pub fn add_lora(&mut self, spec: &LoraSpec) -> Result<Vec<String>> {
        for part in [Part::VisionTower, Part::Merger, Part::Language] {
            self.set_trainable(part, false)?;
        }
        let mut rng = Philox::new(spec.seed, 0x10ba);
        let mut linears: Vec<(String, &mut Linear)> = Vec::new();
        if spec.vision {
            for (i, b) in self.vision.blocks.iter_mut().enumerate() {
                linears.extend(b.linears(&format!("visual.blocks.{i}")));
            }
            linears.push(("visual.merger.mlp.0".into(), &mut self.vision.merger.fc1));
            linears.push(("visual.merger.mlp.2".into(), &mut self.vision.merger.fc2));
        }
        if spec.language {
            for (i, l) in self.text.layers.iter_mut().enumerate() {
                linears.extend(l.linears(&format!("model.layers.{i}")));
            }
        }
        let matches = |name: &str, target: &str| name == target || name.ends_with(&format!(".{target}"));
        let mut adapted = Vec::new();
        for (name, lin) in linears {
            if spec.targets.iter().any(|t| matches(&name, t)) {
                lin.add_lora(spec.rank, spec.alpha, &mut rng)?;
                adapted.push(name);
            }
        }
        if adapted.is_empty() {
            return Err(arg_err!("add_lora", "no linear layer matches the targets {:?}", spec.targets));
        }
        Ok(adapted)
    }

    /// Loads a PEFT LoRA adapter directory (adapter_config.json +
    /// adapter_model.safetensors, as `SftTrainer::save_adapter` or PEFT writes it)
    /// onto this model: adapters are attached exactly where the file has them.
    pub fn load_peft_adapter(&mut self, dir: &Path) -> Result<usize> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| Error::Io { path: cfg_path.display().to_string(), source: e })?;
        let file = cfg_path.display().to_string();
        let j: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Config { file: file.clone(), msg: e.to_string() })?;
        let r = j["r"].as_u64().ok_or_else(|| Error::Config { file: file.clone(), msg: "no r".into() })? as usize;
        let alpha =
            j["lora_alpha"].as_f64().ok_or_else(|| Error::Config { file: file.clone(), msg: "no lora_alpha".into() })?
                as f32;
        let ckpt = Checkpoint::open(&dir.join("adapter_model.safetensors"))?;
        let mut linears: Vec<(String, &mut Linear)> = Vec::new();
        for (i, b) in self.vision.blocks.iter_mut().enumerate() {
            linears.extend(b.linears(&format!("visual.blocks.{i}")));
        }
        linears.push(("visual.merger.mlp.0".into(), &mut self.vision.merger.fc1));
        linears.push(("visual.merger.mlp.2".into(), &mut self.vision.merger.fc2));
        for (i, l) in self.text.layers.iter_mut().enumerate() {
            linears.extend(l.linears(&format!("model.layers.{i}")));
        }
        let mut rng = Philox::new(0, 0);
        let mut n = 0;
        for (name, lin) in linears {
            let key = |ab: &str| weights::peft_key(&format!("{name}.lora_{ab}.weight"));
            if !ckpt.contains(&key("A")) {
                continue;
            }
            lin.add_lora(r, alpha, &mut rng)?;
            let lora = lin.lora.as_mut().expect("just added");
            for (ab, p) in [("A", &mut lora.a), ("B", &mut lora.b)] {
                let t = ckpt.tensor(&key(ab))?;
                if t.dims() != p.value.dims() {
                    return Err(shape_err!(
                        "load_peft_adapter",
                        "{} has shape {}, expected {:?}",
                        key(ab),
                        t.shape(),
                        p.value.dims()
                    ));
                }
                p.value = t.to_dtype(DType::F32)?;
            }
            n += 1;
        }
        if n == 0 {
            return Err(Error::Checkpoint {
                file: dir.display().to_string(),
                msg: "no LoRA tensors match this model's modules".into(),
            });
        }
        Ok(n)
    }

    /// Folds every LoRA adapter into its base weight, `W ← W + s·B·A`, and removes
    /// the adapters (for export as a plain checkpoint). Returns how many merged.
    pub fn merge_lora(&mut self) -> Result<usize> {
        let mut linears: Vec<&mut Linear> = Vec::new();
        for b in self.vision.blocks.iter_mut() {
            linears.extend(b.linears("").into_iter().map(|(_, l)| l));
        }
        linears.push(&mut self.vision.merger.fc1);
        linears.push(&mut self.vision.merger.fc2);
        for l in self.text.layers.iter_mut() {
            linears.extend(l.linears("").into_iter().map(|(_, l)| l));
        }
        let mut merged = 0;
        for lin in linears {
            if let Some(lora) = lin.lora.take() {
                let delta = ops::matmul(&lora.b.value, &lora.a.value, false, false)?;
                let mut w = lin.weight.value.to_dtype(DType::F32)?.copy()?;
                ops::add_scaled_assign(&mut w, &delta, lora.scale)?;
                lin.weight.value = w;
                merged += 1;
            }
        }
        Ok(merged)
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.text.embed.value.device()
    }

    /// Moves every parameter to `device`. Frozen weights become `frozen_dtype`
    /// (bf16 for CUDA, whose kernels read bf16 weights; f32 for the CPU);
    /// trainable ones keep their f32 master copy and f32 gradient.
    pub fn to_device(&mut self, device: Device, frozen_dtype: DType) -> Result<()> {
        let mut result = Ok(());
        self.visit(&mut |_, p| {
            if result.is_err() {
                return;
            }
            result = (|| {
                let dtype = if p.trainable() { DType::F32 } else { frozen_dtype };
                p.value = p.value.to_dtype(dtype)?.to_device(device)?;
                if let Some(g) = &mut p.grad {
                    *g = g.to_device(device)?;
                }
                Ok(())
            })();
        });
        result
    }

    /// Every parameter with its hub name, in a fixed order (vision, then text).
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut out = Vec::new();
        self.vision.params("visual", &mut out);
        self.text.params("model", &mut out);
        out
    }

    /// Puts the model where it runs: nothing to do on the CPU; on CUDA frozen
    /// weights become bf16 (what the kernels read), trainable ones stay f32.
    pub fn place_on(&mut self, device: Device) -> Result<()> {
        if device == self.device() {
            return Ok(());
        }
        let frozen = if device == Device::Cpu { DType::F32 } else { DType::BF16 };
        self.to_device(device, frozen)
    }

    /// Visits every parameter with its hub name.
    pub fn visit(&mut self, f: &mut dyn FnMut(String, &mut Param)) {
        for (name, p) in self.params_mut() {
            f(name, p);
        }
    }

    /// Freezes or unfreezes one part (trainable parameters get f32 grads).
    pub fn set_trainable(&mut self, part: Part, on: bool) -> Result<()> {
        let mut result = Ok(());
        self.visit(&mut |name, p| {
            if Part::of(&name) == part && result.is_ok() {
                result = p.set_trainable(on);
            }
        });
        result
    }

    pub fn zero_grad(&mut self) -> Result<()> {
        let mut result = Ok(());
        self.visit(&mut |_, p| {
            if result.is_ok() {
                result = p.zero_grad();
            }
        });
        result
    }

    /// Saves the weights as one `model.safetensors` in the hub layout (plus
    /// config.json) in `dir`; `dtype` F32 or BF16.
    pub fn save(&mut self, dir: &Path, dtype: DType) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
        let v = self.config.vision.clone();
        let mut named: Vec<(String, Tensor)> = Vec::new();
        let mut result = Ok(());
        self.visit(&mut |name, p| {
            if name.contains("lora_") || result.is_err() {
                return;
            }
            let t = if name == "visual.patch_embed.proj.weight" {
                p.value.reshape([v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size])
            } else {
                Ok(p.value.clone())
            };
            match t {
                Ok(t) => named.push((name, t)),
                Err(e) => result = Err(e),
            }
        });
        result?;
        let refs: Vec<(String, &Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        weights::save_safetensors(&dir.join("model.safetensors"), &refs, dtype, Some(meta))?;
        let json = serde_json::to_string_pretty(&self.config.to_json()).expect("a JSON value serialises");
        weights::write_atomic(&dir.join("config.json"), json.as_bytes())
    }
}

/// Which linears get LoRA adapters, and their rank / scale.
#[derive(Clone, Debug)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f32,
    /// PEFT `target_modules` names: q_proj k_proj v_proj o_proj gate_proj up_proj
    /// down_proj (LM and vision MLP), qkv and attn.proj (vision attention).
    pub targets: Vec<String>,
    /// Apply in the language model / the vision tower (incl. merger).
    pub language: bool,
    pub vision: bool,
    pub seed: u64,
}

/// One sample: token ids and optional labels in transformers' convention (same
/// length as the tokens, -100 = not supervised; the model predicts `labels[i + 1]`
/// at position `i`).
#[derive(Clone, Debug)]
pub struct Sample {
    pub tokens: Vec<u32>,
    pub labels: Option<Vec<i32>>,
}

/// How a batch's cross-entropy gradient is scaled.
#[derive(Clone, Debug, PartialEq)]
pub enum LossScale {
    /// 1 / (the batch's supervised tokens): the mean over its tokens.
    TokenMean,
    /// One scale for every supervised token (accumulation across micro-batches).
    Uniform(f32),
    /// One scale per packed row (e.g. a per-sample mean).
    PerRow(Vec<f32>),
}

impl From<Option<f32>> for LossScale {
    fn from(s: Option<f32>) -> Self {
        s.map_or(LossScale::TokenMean, LossScale::Uniform)
    }
}

/// Samples packed back to back (no padding): attention stays inside each sample
/// through `cu_seqlens`, which is exactly what transformers computes on the
/// unpadded positions of a padded batch.
pub struct Batch {
    pub input_ids: Tensor,
    pub cu_seqlens: Tensor,
    /// `[3, T]` M-RoPE position ids.
    pub positions: Tensor,
    /// Next-token targets per packed position (already shifted), -100 = ignore.
    pub targets: Option<Tensor>,
    pub pixel_values: Option<Tensor>,
    pub grids: Vec<[usize; 3]>,
    /// Packed row range of each sample.
    pub sample_ranges: Vec<std::ops::Range<usize>>,
}

impl Batch {
    /// Packs samples; images are consumed in order across samples (as the processor
    /// emits them), and their token runs are checked against `grids`.
    pub fn new(
        samples: &[Sample],
        pixel_values: Option<Tensor>,
        grids: &[[usize; 3]],
        cfg: &Qwen25VlConfig,
    ) -> Result<Batch> {
        const OP: &str = "Batch::new";
        let image = cfg.tokens.image_token_id;
        let mut ids = Vec::new();
        let mut cu = vec![0i32];
        let mut pos: [Vec<i32>; 3] = Default::default();
        let mut targets = Vec::new();
        let mut ranges = Vec::new();
        let mut next_grid = 0;
        let supervised = samples.iter().any(|s| s.labels.is_some());
        for (i, s) in samples.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(arg_err!(OP, "sample {i} is empty"));
            }
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= cfg.text.vocab_size) {
                return Err(arg_err!(
                    OP,
                    "sample {i}: token id {bad} is outside the vocabulary of {}",
                    cfg.text.vocab_size
                ));
            }
            let p =
                positions::rope_positions(&s.tokens, image, grids, &mut next_grid, cfg.vision.spatial_merge_size, i)?;
            for a in 0..3 {
                pos[a].extend(&p[a]);
            }
            let start = ids.len();
            ids.extend(s.tokens.iter().map(|&t| t as i32));
            ranges.push(start..ids.len());
            cu.push(ids.len() as i32);
            if supervised {
                let labels = s.labels.clone().unwrap_or_else(|| vec![IGNORE_INDEX; s.tokens.len()]);
                if labels.len() != s.tokens.len() {
                    return Err(arg_err!(OP, "sample {i}: {} labels for {} tokens", labels.len(), s.tokens.len()));
                }
                targets.extend(&labels[1..]);
                targets.push(IGNORE_INDEX);
            }
        }
        if next_grid != grids.len() {
            return Err(arg_err!(OP, "{} image grids given but the samples hold {next_grid} images", grids.len()));
        }
        let n_patches: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        match &pixel_values {
            Some(pv) if pv.dims() != [n_patches, cfg.vision.patch_dim()] => {
                return Err(shape_err!(
                    OP,
                    "pixel_values {} but the grids need [{n_patches}, {}]",
                    pv.shape(),
                    cfg.vision.patch_dim()
                ));
            }
            None if n_patches > 0 => {
                return Err(arg_err!(OP, "the samples hold images but no pixel_values were given"));
            }
            _ => {}
        }
        let t = ids.len();
        let flat: Vec<i32> = pos.concat();
        Ok(Batch {
            input_ids: Tensor::from_i32(ids, [t], Device::Cpu)?,
            cu_seqlens: Tensor::from_i32(cu.clone(), [cu.len()], Device::Cpu)?,
            positions: Tensor::from_i32(flat, [3, t], Device::Cpu)?,
            targets: if supervised { Some(Tensor::from_i32(targets, [t], Device::Cpu)?) } else { None },
            pixel_values,
            grids: grids.to_vec(),
            sample_ranges: ranges,
        })
    }

    pub fn tokens(&self) -> usize {
        self.input_ids.numel()
    }
}

pub struct ModelCache {
    vision: Option<VisionCache>,
    image_pos: Option<Tensor>,
    text: TextCache,
    cos: Tensor,
    sin: Tensor,
}

/// Result of a training forward + backward.
pub struct StepOutput {
    pub loss: f32,
    pub loss_sum: f64,
    pub tokens: usize,
}

impl Qwen25Vl {
    /// Input embeddings `[T, D]` of a packed batch: token embeddings with the vision
    /// tower's merged features written over the image-pad positions. Also returns
    /// the vision cache and those positions for the backward.
    pub fn embed(&self, batch: &Batch) -> Result<(Tensor, Option<(VisionCache, Tensor)>)> {
        let cfg = &self.config;
        let x = ops::index_select(&self.text.embed.value, &batch.input_ids)?;
        let Some(pv) = &batch.pixel_values else {
            return Ok((x, None));
        };
        let (feats, vc) = {
            let _r = nvtx::range(Phase::Vision);
            self.vision.forward(&pv.to_device(self.device())?, &batch.grids)?
        };
        let ids = batch.input_ids.to_vec_i32()?;
        let pos: Vec<i32> =
            (0..ids.len() as i32).filter(|&i| ids[i as usize] as u32 == cfg.tokens.image_token_id).collect();
        if pos.len() != feats.dims()[0] {
            return Err(arg_err!(
                "forward",
                "{} image tokens in the text but the images give {} features",
                pos.len(),
                feats.dims()[0]
            ));
        }
        let pos = Tensor::from_i32(pos.clone(), [pos.len()], Device::Cpu)?;
        let x = ops::scatter_rows(&x, &pos, &feats)?;
        Ok((x, Some((vc, pos))))
    }

    /// M-RoPE cos/sin tables for `[3, T]` positions.
    pub fn rope_tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = &self.config.text;
        let (cos, sin) = ops::mrope_table(positions, t.head_dim(), t.rope_theta, t.mrope_section)?;
        Ok((cos.to_device(self.device())?, sin.to_device(self.device())?))
    }

    /// Logits `[T, V]` for a packed batch, and what the backward needs.
    pub fn forward(&self, batch: &Batch) -> Result<(Tensor, ModelCache)> {
        let (normed, cache) = self.forward_hidden(batch)?;
        let _r = nvtx::range(Phase::LmForward);
        let logits = ops::linear(&normed, &self.text.head().value, None)?;
        Ok((logits, cache))
    }

    /// The normed hidden states `[T, D]` the LM head reads, and what the
    /// backward needs: training applies the head in a fused loss, chunk by chunk.
    pub fn forward_hidden(&self, batch: &Batch) -> Result<(Tensor, ModelCache)> {
        let (x, vision) = self.embed(batch)?;
        let (cos, sin) = self.rope_tables(&batch.positions)?;
        let (normed, text) = {
            let _r = nvtx::range(Phase::LmForward);
            self.text.forward_hidden(&x, &cos, &sin, &batch.cu_seqlens)?
        };
        let (vision_cache, image_pos) = match vision {
            Some((vc, pos)) => (Some(vc), Some(pos)),
            None => (None, None),
        };
        Ok((normed, ModelCache { vision: vision_cache, image_pos, text, cos, sin }))
    }

    /// Backward from `dlogits`; accumulates into every trainable parameter's grad.
    pub fn backward(&mut self, batch: &Batch, cache: ModelCache, dlogits: &Tensor) -> Result<()> {
        let _r = nvtx::range(Phase::Backward);
        let dx = self.text.backward(cache.text, dlogits, &cache.cos, &cache.sin, &batch.cu_seqlens)?;
        self.backward_inputs(batch, cache.vision, cache.image_pos.as_ref(), &dx)
    }

    /// Backward from the gradient of the LM head's input (the normed hidden
    /// states), when a fused loss has done the head's backward.
    pub fn backward_hidden(&mut self, batch: &Batch, cache: ModelCache, dnormed: &Tensor) -> Result<()> {
        let _r = nvtx::range(Phase::Backward);
        let dx = self.text.backward_hidden(cache.text, dnormed, &cache.cos, &cache.sin, &batch.cu_seqlens)?;
        self.backward_inputs(batch, cache.vision, cache.image_pos.as_ref(), &dx)
    }

    /// From the input embeddings' gradient `dx: [T, D]`: the vision tower's
    /// backward through the image positions, then the embedding table's.
    fn backward_inputs(
        &mut self,
        batch: &Batch,
        vision: Option<VisionCache>,
        image_pos: Option<&Tensor>,
        dx: &Tensor,
    ) -> Result<()> {
        let dx = match (image_pos, vision) {
            (Some(pos), Some(vc)) => {
                let (dx, dfeats) = ops::scatter_rows_backward(dx, pos)?;
                if self.vision.needs_backward() {
                    self.vision.backward(vc, &dfeats)?;
                }
                dx
            }
            _ => dx.clone(),
        };
        if let Some(g) = self.text.embed.grad.as_mut() {
            let skip = Some(self.config.tokens.image_token_id as i32);
            ops::index_select_backward(g, &batch.input_ids, &dx, skip)?;
        }
        Ok(())
    }

    /// Forward, mean cross-entropy over the batch's targets, backward. `grad_scale`
    /// overrides the 1/tokens normalisation (for accumulation across micro-batches).
    pub fn forward_backward(&mut self, batch: &Batch, grad_scale: Option<f32>) -> Result<StepOutput> {
        self.forward_backward_scaled(batch, LossScale::from(grad_scale))
    }

    /// Forward, cross-entropy, backward with the gradient scaled per `scale`
    /// (one scale for every target, or one per packed row). The LM head and
    /// the loss are fused ([`ops::linear_cross_entropy`]): logits exist only
    /// `TextModel::logit_chunk_rows` rows at a time, never as `[T, V]`.
    pub fn forward_backward_scaled(&mut self, batch: &Batch, scale: LossScale) -> Result<StepOutput> {
        let targets = batch.targets.as_ref().ok_or_else(|| arg_err!("forward_backward", "the batch has no labels"))?;
        let (normed, cache) = self.forward_hidden(batch)?;
        let loss_range = nvtx::range(Phase::Loss);
        let tokens = targets.to_vec_i32()?.iter().filter(|&&l| l != ops::IGNORE_INDEX).count();
        let grad_scale = match &scale {
            LossScale::TokenMean => ops::GradScale::Uniform(if tokens > 0 { 1.0 / tokens as f32 } else { 0.0 }),
            LossScale::Uniform(s) => ops::GradScale::Uniform(*s),
            LossScale::PerRow(rows) => ops::GradScale::PerRow(rows),
        };
        let chunk = self.text.logit_chunk_rows();
        let head = self.text.head_mut();
        let w = head.value.clone();
        let ce = ops::linear_cross_entropy(&normed, &w, targets, grad_scale, head.grad.as_mut(), chunk)?;
        let loss = if ce.tokens > 0 { (ce.loss_sum / ce.tokens as f64) as f32 } else { 0.0 };
        if !loss.is_finite() {
            return Err(arg_err!("forward_backward", "loss is {loss} (non-finite)"));
        }
        drop(loss_range);
        self.backward_hidden(batch, cache, &ce.dh)?;
        Ok(StepOutput { loss, loss_sum: ce.loss_sum, tokens: ce.tokens })
    }
}
