//! The Qwen2 decoder of Qwen2.5-VL: embeddings (with image features scattered in),
//! GQA causal attention with M-RoPE, SwiGLU MLP, final norm and LM head.

use super::config::TextConfig;
use super::param::{Linear, LinearCache, Param};
use crate::error::Result;
use crate::ops::{self, AttnOut, AttnSpec};
use crate::tensor::{Device, Tensor};

#[derive(Clone)]
pub struct DecoderLayer {
    pub input_norm: Param,
    pub post_norm: Param,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

pub struct LayerCache {
    x: Tensor,
    rstd1: Tensor,
    q_c: LinearCache,
    k_c: LinearCache,
    v_c: LinearCache,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn: AttnOut,
    o_c: LinearCache,
    h: Tensor,
    rstd2: Tensor,
    gate_c: LinearCache,
    up_c: LinearCache,
    g: Tensor,
    u: Tensor,
    down_c: LinearCache,
}

/// Per-call context: M-RoPE tables and per-sample segments.
pub struct LayerCtx<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub cu: &'a Tensor,
    pub cfg: &'a TextConfig,
}

impl LayerCtx<'_> {
    fn spec(&self) -> AttnSpec {
        AttnSpec { scale: (self.cfg.head_dim() as f32).powf(-0.5), causal: true }
    }
}

impl DecoderLayer {
    pub fn forward(&self, x: &Tensor, c: &LayerCtx) -> Result<(Tensor, LayerCache)> {
        let (t, d) = (x.dims()[0], x.dims()[1]);
        let (hq, hkv, hd) = (c.cfg.num_attention_heads, c.cfg.num_key_value_heads, c.cfg.head_dim());
        let (n1, rstd1) = ops::rms_norm(x, &self.input_norm.value, c.cfg.rms_norm_eps)?;
        let (q, q_c) = self.q.forward(&n1)?;
        let (k, k_c) = self.k.forward(&n1)?;
        let (v, v_c) = self.v.forward(&n1)?;
        let q = ops::rope(&q.reshape([t, hq, hd])?, c.cos, c.sin)?;
        let k = ops::rope(&k.reshape([t, hkv, hd])?, c.cos, c.sin)?;
        let v = v.reshape([t, hkv, hd])?;
        let attn = ops::attention(&q, &k, &v, c.cu, c.spec())?;
        let (o, o_c) = self.o.forward(&attn.out.reshape([t, hq * hd])?)?;
        let (h, n2, rstd2) = ops::add_rms_norm(x, &o, &self.post_norm.value, c.cfg.rms_norm_eps)?;
        let (g, gate_c) = self.gate.forward(&n2)?;
        let (u, up_c) = self.up.forward(&n2)?;
        let (m, down_c) = self.down.forward(&ops::swiglu(&g, &u)?)?;
        let y = ops::add(&h, &m)?;
        debug_assert_eq!(y.dims(), [t, d]);
        let cache =
            LayerCache { x: x.clone(), rstd1, q_c, k_c, v_c, q, k, v, attn, o_c, h, rstd2, gate_c, up_c, g, u, down_c };
        Ok((y, cache))
    }

    pub fn backward(&mut self, cache: LayerCache, dy: &Tensor, c: &LayerCtx) -> Result<Tensor> {
        let t = dy.dims()[0];
        let (hq, hkv, hd) = (c.cfg.num_attention_heads, c.cfg.num_key_value_heads, c.cfg.head_dim());
        let ds = self.down.backward(cache.down_c, dy)?;
        let (dg, du) = ops::swiglu_backward(&cache.g, &cache.u, &ds)?;
        let mut dn2 = self.gate.backward(cache.gate_c, &dg)?;
        ops::add_scaled_assign(&mut dn2, &self.up.backward(cache.up_c, &du)?, 1.0)?;
        let mut dh =
            ops::rms_norm_backward(&cache.h, &self.post_norm.value, &cache.rstd2, &dn2, self.post_norm.grad.as_mut())?;
        ops::add_scaled_assign(&mut dh, dy, 1.0)?;
        let da = self.o.backward(cache.o_c, &dh)?;
        let (dq, dk, dv) = ops::attention_backward(
            &cache.q,
            &cache.k,
            &cache.v,
            c.cu,
            c.spec(),
            &cache.attn,
            &da.reshape([t, hq, hd])?,
        )?;
        let dq = ops::rope_backward(&dq, c.cos, c.sin)?.reshape([t, hq * hd])?;
        let dk = ops::rope_backward(&dk, c.cos, c.sin)?.reshape([t, hkv * hd])?;
        let mut dn1 = self.q.backward(cache.q_c, &dq)?;
        ops::add_scaled_assign(&mut dn1, &self.k.backward(cache.k_c, &dk)?, 1.0)?;
        ops::add_scaled_assign(&mut dn1, &self.v.backward(cache.v_c, &dv.reshape([t, hkv * hd])?)?, 1.0)?;
        let mut dx = ops::rms_norm_backward(
            &cache.x,
            &self.input_norm.value,
            &cache.rstd1,
            &dn1,
            self.input_norm.grad.as_mut(),
        )?;
        ops::add_scaled_assign(&mut dx, &dh, 1.0)?;
        Ok(dx)
    }

    /// Inference: normed input -> rotated q, k and v, `[n, heads, head_dim]`.
    fn infer_qkv(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, cfg: &TextConfig) -> Result<(Tensor, Tensor, Tensor)> {
        let n = x.dims()[0];
        let (hq, hkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim());
        let (n1, _) = ops::rms_norm(x, &self.input_norm.value, cfg.rms_norm_eps)?;
        let q = ops::rope(&self.q.forward(&n1)?.0.reshape([n, hq, hd])?, cos, sin)?;
        let k = ops::rope(&self.k.forward(&n1)?.0.reshape([n, hkv, hd])?, cos, sin)?;
        let v = self.v.forward(&n1)?.0.reshape([n, hkv, hd])?;
        Ok((q, k, v))
    }

    /// Inference: `x + o_proj(attn)`, then the MLP residual.
    fn infer_tail(&self, x: &Tensor, attn: &Tensor, cfg: &TextConfig) -> Result<Tensor> {
        let n = x.dims()[0];
        let o = self.o.forward(&attn.reshape([n, cfg.num_attention_heads * cfg.head_dim()])?)?.0;
        let (h, n2, _) = ops::add_rms_norm(x, &o, &self.post_norm.value, cfg.rms_norm_eps)?;
        let m = self.down.forward(&ops::swiglu(&self.gate.forward(&n2)?.0, &self.up.forward(&n2)?.0)?)?.0;
        ops::add(&h, &m)
    }

    /// Inference step over `n` new tokens `x: [n, D]` whose keys/values are appended
    /// to this layer's cache at row `past`; attention sees all `past + n` keys.
    pub fn forward_cached(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cfg: &TextConfig,
        kv: &mut (Tensor, Tensor),
        past: usize,
    ) -> Result<Tensor> {
        let n = x.dims()[0];
        let hd = cfg.head_dim();
        let (q, k, v) = self.infer_qkv(x, cos, sin, cfg)?;
        ops::write_rows(&mut kv.0, past, &k)?;
        ops::write_rows(&mut kv.1, past, &v)?;
        let total = past + n;
        let cu_q = Tensor::from_i32(vec![0, n as i32], [2], Device::Cpu)?;
        let cu_k = Tensor::from_i32(vec![0, total as i32], [2], Device::Cpu)?;
        let spec = AttnSpec { scale: (hd as f32).powf(-0.5), causal: true };
        let attn = ops::attention_kv(&q, &kv.0.narrow(0, 0, total)?, &kv.1.narrow(0, 0, total)?, &cu_q, &cu_k, spec)?;
        self.infer_tail(x, &attn.out, cfg)
    }

    /// One decoding step for `S` samples that share prompt prefixes (cascade
    /// decoding from a paged KV cache): each sample's new key and value go to
    /// its store row of this layer's pools (`kv`), then query `i` attends to
    /// its group's prefix and its own suffix through the block tables
    /// (`ops::attention_decode_paged`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_paged(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cfg: &TextConfig,
        kv: &mut (Tensor, Tensor),
        tables: (&ops::BlockTable, &ops::BlockTable),
        block_size: usize,
        rows: &ops::DecodeRows,
    ) -> Result<Tensor> {
        let (q, k, v) = self.infer_qkv(x, cos, sin, cfg)?;
        ops::store_kv(&mut kv.0, &mut kv.1, &k, &v, &rows.store_rows())?;
        let paged = ops::PagedKv { k_pool: &kv.0, v_pool: &kv.1, block_size, prefix: tables.0, suffix: tables.1 };
        let attn = ops::attention_decode_paged(&q, &paged, rows, (cfg.head_dim() as f32).powf(-0.5))?;
        self.infer_tail(x, &attn.out, cfg)
    }

    /// The layer's linears with their module names (PEFT matches targets on these).
    pub fn linears(&mut self, prefix: &str) -> Vec<(String, &mut Linear)> {
        vec![
            (format!("{prefix}.self_attn.q_proj"), &mut self.q),
            (format!("{prefix}.self_attn.k_proj"), &mut self.k),
            (format!("{prefix}.self_attn.v_proj"), &mut self.v),
            (format!("{prefix}.self_attn.o_proj"), &mut self.o),
            (format!("{prefix}.mlp.gate_proj"), &mut self.gate),
            (format!("{prefix}.mlp.up_proj"), &mut self.up),
            (format!("{prefix}.mlp.down_proj"), &mut self.down),
        ]
    }

    pub fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        out.push((format!("{prefix}.input_layernorm.weight"), &mut self.input_norm));
        out.push((format!("{prefix}.post_attention_layernorm.weight"), &mut self.post_norm));
        self.q.params(&format!("{prefix}.self_attn.q_proj"), out);
        self.k.params(&format!("{prefix}.self_attn.k_proj"), out);
        self.v.params(&format!("{prefix}.self_attn.v_proj"), out);
        self.o.params(&format!("{prefix}.self_attn.o_proj"), out);
        self.gate.params(&format!("{prefix}.mlp.gate_proj"), out);
        self.up.params(&format!("{prefix}.mlp.up_proj"), out);
        self.down.params(&format!("{prefix}.mlp.down_proj"), out);
    }
}

#[derive(Clone)]
pub struct TextModel {
    pub cfg: TextConfig,
    pub embed: Param,
    pub layers: Vec<DecoderLayer>,
    pub norm: Param,
    /// `None` when tied: the head is `embed`.
    pub lm_head: Option<Param>,
    /// Layers whose activations are recomputed in the backward instead of kept.
    pub recompute: Vec<bool>,
    /// Bytes of f32 logits a fused loss computes at once
    /// ([`TextModel::logit_chunk_rows`]); training never holds `[T, V]`.
    pub logit_chunk_bytes: usize,
}

/// Default of [`TextModel::logit_chunk_bytes`]: 64 MiB (220 rows of
/// Qwen2.5's 151,936-token vocabulary; a whole tiny-model batch).
pub const DEFAULT_LOGIT_CHUNK_BYTES: usize = 64 << 20;

/// Keys (after rotary) and values of every layer for one sequence, preallocated to
/// `capacity` tokens: `[capacity, kv_heads, head_dim]` each.
pub struct KvCache {
    pub layers: Vec<(Tensor, Tensor)>,
    pub len: usize,
    pub capacity: usize,
}

impl KvCache {
    /// f32 on the CPU (its compute type), bf16 on CUDA (what attention reads).
    pub fn new(cfg: &TextConfig, capacity: usize, device: crate::tensor::Device) -> Result<KvCache> {
        let shape = [capacity, cfg.num_key_value_heads, cfg.head_dim()];
        let dtype = kv_dtype(device);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Ok((Tensor::zeros(shape, dtype, device)?, Tensor::zeros(shape, dtype, device)?)))
            .collect::<Result<_>>()?;
        Ok(KvCache { layers, len: 0, capacity })
    }

    /// Bytes held by the cache (K and V of every layer).
    pub fn size_in_bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| k.size_in_bytes() + v.size_in_bytes()).sum()
    }
}

/// What a layer keeps for its backward: everything, or only its input (activation
/// recomputation: the backward runs the layer's forward again first).
pub enum Saved<C> {
    Cache(C),
    Input(Tensor),
}

pub struct TextCache {
    pub(crate) layers: Vec<Saved<LayerCache>>,
    hidden: Tensor,
    rstd: Tensor,
    normed: Tensor,
}

impl TextModel {
    /// Decoder stack over packed embeddings `x: [T, D]`; returns logits `[T, V]`.
    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, cu: &Tensor) -> Result<(Tensor, TextCache)> {
        let (normed, cache) = self.forward_hidden(x, cos, sin, cu)?;
        let logits = ops::linear(&normed, &self.head().value, None)?;
        Ok((logits, cache))
    }

    /// Decoder stack and final norm: the normed hidden states `[T, D]` the LM
    /// head reads (a fused loss applies the head itself, chunk by chunk).
    pub fn forward_hidden(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, cu: &Tensor) -> Result<(Tensor, TextCache)> {
        let ctx = LayerCtx { cos, sin, cu, cfg: &self.cfg };
        let mut h = x.clone();
        let mut caches = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let (y, c) = l.forward(&h, &ctx)?;
            caches.push(if self.recompute.get(i).copied().unwrap_or(false) {
                Saved::Input(h.clone())
            } else {
                Saved::Cache(c)
            });
            h = y;
        }
        let (normed, rstd) = ops::rms_norm(&h, &self.norm.value, self.cfg.rms_norm_eps)?;
        Ok((normed.clone(), TextCache { layers: caches, hidden: h, rstd, normed }))
    }

    /// The LM head's weight `[V, D]` (the embedding when tied).
    pub fn head(&self) -> &Param {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The LM head, mutable (its gradient).
    pub fn head_mut(&mut self) -> &mut Param {
        self.lm_head.as_mut().unwrap_or(&mut self.embed)
    }

    /// Rows of logits per chunk of a fused loss: `logit_chunk_bytes` of f32 logits.
    pub fn logit_chunk_rows(&self) -> usize {
        (self.logit_chunk_bytes / (4 * self.cfg.vocab_size.max(1))).max(1)
    }

    /// Inference over `n` new embeddings with a KV cache; returns logits `[n, V]`.
    pub fn forward_cached(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let n = x.dims()[0];
        if cache.len + n > cache.capacity {
            return Err(crate::arg_err!(
                "forward_cached",
                "KV cache full: {} + {n} tokens > capacity {}",
                cache.len,
                cache.capacity
            ));
        }
        let mut h = x.clone();
        for (l, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            h = l.forward_cached(&h, cos, sin, &self.cfg, kv, cache.len)?;
        }
        cache.len += n;
        let (normed, _) = ops::rms_norm(&h, &self.norm.value, self.cfg.rms_norm_eps)?;
        ops::linear(&normed, &self.lm_head.as_ref().unwrap_or(&self.embed).value, None)
    }

    /// Backward from `dlogits: [T, V]` to the input embeddings' gradient `[T, D]`.
    pub fn backward(
        &mut self,
        cache: TextCache,
        dlogits: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cu: &Tensor,
    ) -> Result<Tensor> {
        let head = self.head_mut();
        let head_w = head.value.clone();
        let dnormed = ops::linear_backward(&cache.normed, &head_w, dlogits, head.grad.as_mut(), None)?;
        self.backward_hidden(cache, &dnormed, cos, sin, cu)
    }

    /// Backward from the normed hidden states' gradient `dnormed: [T, D]` (the
    /// LM head's backward already done, e.g. by a fused loss).
    pub fn backward_hidden(
        &mut self,
        cache: TextCache,
        dnormed: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cu: &Tensor,
    ) -> Result<Tensor> {
        let mut dh =
            ops::rms_norm_backward(&cache.hidden, &self.norm.value, &cache.rstd, dnormed, self.norm.grad.as_mut())?;
        let cfg = self.cfg.clone();
        let ctx = LayerCtx { cos, sin, cu, cfg: &cfg };
        for (l, saved) in self.layers.iter_mut().zip(cache.layers).rev() {
            let c = match saved {
                Saved::Cache(c) => c,
                Saved::Input(x) => l.forward(&x, &ctx)?.1,
            };
            dh = l.backward(c, &dh, &ctx)?;
        }
        Ok(dh)
    }

    pub fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        out.push((format!("{prefix}.embed_tokens.weight"), &mut self.embed));
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.params(&format!("{prefix}.layers.{i}"), out);
        }
        out.push((format!("{prefix}.norm.weight"), &mut self.norm));
        if let Some(h) = &mut self.lm_head {
            out.push(("lm_head.weight".to_string(), h));
        }
    }
}

/// The element type of KV caches on `device`.
pub fn kv_dtype(device: crate::tensor::Device) -> crate::tensor::DType {
    match device {
        crate::tensor::Device::Cpu => crate::tensor::DType::F32,
        crate::tensor::Device::Cuda(_) => crate::tensor::DType::BF16,
    }
}
