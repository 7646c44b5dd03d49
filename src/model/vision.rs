//! The Qwen2.5-VL vision tower: patch embedding, 2D rotary, window / full attention
//! blocks, the 2x2 patch merger, with an explicit backward.

use super::config::VisionConfig;
use super::param::{Linear, LinearCache, Param};
use super::positions::{WindowIndex, image_cu_seqlens, inverse_permutation, window_index};
use crate::error::Result;
use crate::ops::{self, AttnOut, AttnSpec};
use crate::tensor::{DType, Device, Tensor};

fn i32_tensor(v: &[usize]) -> Result<Tensor> {
    Tensor::from_i32(v.iter().map(|&x| x as i32).collect(), [v.len()], Device::Cpu)
}

/// Permutes rows in groups of `unit` (the 2x2 patches of one merged token):
/// `x: [N, D]` viewed as `[N/unit, unit·D]`, rows picked by `idx`.
fn permute_groups(x: &Tensor, idx: &Tensor, unit: usize) -> Result<Tensor> {
    let (n, d) = (x.dims()[0], x.dims()[1]);
    ops::index_select(&x.reshape([n / unit, unit * d])?, idx)?.reshape([n, d])
}

/// Backward of [`permute_groups`].
fn permute_groups_backward(dy: &Tensor, idx: &Tensor, unit: usize) -> Result<Tensor> {
    let (n, d) = (dy.dims()[0], dy.dims()[1]);
    let mut dx = Tensor::zeros([n / unit, unit * d], DType::F32, dy.device())?;
    ops::index_select_backward(&mut dx, idx, &dy.reshape([n / unit, unit * d])?, None)?;
    dx.reshape([n, d])
}

/// Splits the last dim of `[N, parts·W]` into `parts` tensors `[N, W]`.
pub(crate) fn split_last(x: &Tensor, parts: usize) -> Result<Vec<Tensor>> {
    let (n, w) = (x.shape().rows(), x.shape().last() / parts);
    let x3 = x.reshape([n, parts, w])?;
    (0..parts).map(|p| x3.narrow(1, p, 1)?.reshape([n, w])).collect()
}

#[derive(Clone)]
pub struct VisionBlock {
    pub norm1: Param,
    pub norm2: Param,
    pub qkv: Linear,
    pub proj: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

pub struct VisionBlockCache {
    x: Tensor,
    rstd1: Tensor,
    qkv: LinearCache,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn: AttnOut,
    proj: LinearCache,
    h: Tensor,
    rstd2: Tensor,
    gate: LinearCache,
    up: LinearCache,
    g: Tensor,
    u: Tensor,
    down: LinearCache,
}

/// Everything a block needs besides its input: rotary tables and segments.
pub struct BlockCtx<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub cu: &'a Tensor,
    pub heads: usize,
    pub eps: f32,
}

impl VisionBlock {
    /// `x += proj(attn(rope(qkv(rms1 x))))`; `x += down(silu(gate(rms2 x))·up(rms2 x))`.
    pub fn forward(&self, x: &Tensor, c: &BlockCtx) -> Result<(Tensor, VisionBlockCache)> {
        let (n, d) = (x.dims()[0], x.dims()[1]);
        let hd = d / c.heads;
        let (n1, rstd1) = ops::rms_norm(x, &self.norm1.value, c.eps)?;
        let (qkv, qkv_c) = self.qkv.forward(&n1)?;
        let parts = split_last(&qkv, 3)?;
        let shape = [n, c.heads, hd];
        let q = ops::rope(&parts[0].reshape(shape)?, c.cos, c.sin)?;
        let k = ops::rope(&parts[1].reshape(shape)?, c.cos, c.sin)?;
        let v = parts[2].reshape(shape)?;
        let spec = AttnSpec { scale: (hd as f32).powf(-0.5), causal: false };
        let attn = ops::attention(&q, &k, &v, c.cu, spec)?;
        let (o, proj_c) = self.proj.forward(&attn.out.reshape([n, d])?)?;
        let h = ops::add(x, &o)?;
        let (n2, rstd2) = ops::rms_norm(&h, &self.norm2.value, c.eps)?;
        let (g, gate_c) = self.gate.forward(&n2)?;
        let (u, up_c) = self.up.forward(&n2)?;
        let (m, down_c) = self.down.forward(&ops::swiglu(&g, &u)?)?;
        let y = ops::add(&h, &m)?;
        let cache = VisionBlockCache {
            x: x.clone(),
            rstd1,
            qkv: qkv_c,
            q,
            k,
            v,
            attn,
            proj: proj_c,
            h,
            rstd2,
            gate: gate_c,
            up: up_c,
            g,
            u,
            down: down_c,
        };
        Ok((y, cache))
    }

    pub fn backward(&mut self, cache: VisionBlockCache, dy: &Tensor, c: &BlockCtx) -> Result<Tensor> {
        let (n, d) = (dy.dims()[0], dy.dims()[1]);
        let hd = d / c.heads;
        // MLP branch.
        let ds = self.down.backward(cache.down, dy)?;
        let (dg, du) = ops::swiglu_backward(&cache.g, &cache.u, &ds)?;
        let mut dn2 = self.gate.backward(cache.gate, &dg)?;
        ops::add_scaled_assign(&mut dn2, &self.up.backward(cache.up, &du)?, 1.0)?;
        let mut dh = ops::rms_norm_backward(&cache.h, &self.norm2.value, &cache.rstd2, &dn2, self.norm2.grad.as_mut())?;
        ops::add_scaled_assign(&mut dh, dy, 1.0)?;
        // Attention branch.
        let da = self.proj.backward(cache.proj, &dh)?;
        let spec = AttnSpec { scale: (hd as f32).powf(-0.5), causal: false };
        let (dq, dk, dv) = ops::attention_backward(
            &cache.q,
            &cache.k,
            &cache.v,
            c.cu,
            spec,
            &cache.attn,
            &da.reshape([n, c.heads, hd])?,
        )?;
        let dq = ops::rope_backward(&dq, c.cos, c.sin)?.reshape([n, 1, d])?;
        let dk = ops::rope_backward(&dk, c.cos, c.sin)?.reshape([n, 1, d])?;
        let dqkv = Tensor::cat(&[&dq, &dk, &dv.reshape([n, 1, d])?], 1)?.reshape([n, 3 * d])?;
        let dn1 = self.qkv.backward(cache.qkv, &dqkv)?;
        let mut dx = ops::rms_norm_backward(&cache.x, &self.norm1.value, &cache.rstd1, &dn1, self.norm1.grad.as_mut())?;
        ops::add_scaled_assign(&mut dx, &dh, 1.0)?;
        Ok(dx)
    }

    /// The block's linears with their module names (PEFT matches targets on these).
    pub fn linears(&mut self, prefix: &str) -> Vec<(String, &mut Linear)> {
        vec![
            (format!("{prefix}.attn.qkv"), &mut self.qkv),
            (format!("{prefix}.attn.proj"), &mut self.proj),
            (format!("{prefix}.mlp.gate_proj"), &mut self.gate),
            (format!("{prefix}.mlp.up_proj"), &mut self.up),
            (format!("{prefix}.mlp.down_proj"), &mut self.down),
        ]
    }

    pub fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        out.push((format!("{prefix}.norm1.weight"), &mut self.norm1));
        out.push((format!("{prefix}.norm2.weight"), &mut self.norm2));
        self.qkv.params(&format!("{prefix}.attn.qkv"), out);
        self.proj.params(&format!("{prefix}.attn.proj"), out);
        self.gate.params(&format!("{prefix}.mlp.gate_proj"), out);
        self.up.params(&format!("{prefix}.mlp.up_proj"), out);
        self.down.params(&format!("{prefix}.mlp.down_proj"), out);
    }
}

/// RMSNorm per patch, then `[N/4, 4·D]` → Linear → GELU → Linear.
#[derive(Clone)]
pub struct Merger {
    pub ln_q: Param,
    pub fc1: Linear,
    pub fc2: Linear,
}

#[derive(Clone)]
pub struct VisionTower {
    pub cfg: VisionConfig,
    pub patch_embed: Linear,
    pub blocks: Vec<VisionBlock>,
    pub merger: Merger,
    /// Blocks whose activations are recomputed in the backward instead of kept.
    pub recompute: Vec<bool>,
}

pub struct VisionCache {
    grids: Vec<[usize; 3]>,
    embed: LinearCache,
    blocks: Vec<super::text::Saved<VisionBlockCache>>,
    merger_in: Tensor,
    ln_rstd: Tensor,
    fc1: LinearCache,
    h1: Tensor,
    fc2: LinearCache,
}

/// Per-call index tensors shared by forward and backward.
struct Layout {
    widx: Tensor,
    unwidx: Tensor,
    cos: Tensor,
    sin: Tensor,
    cu_full: Tensor,
    cu_window: Tensor,
}

impl VisionTower {
    fn layout(&self, grids: &[[usize; 3]]) -> Result<Layout> {
        let c = &self.cfg;
        let unit = c.merge_unit();
        let WindowIndex { window_index: wi, cu_window_seqlens } =
            window_index(grids, c.spatial_merge_size, c.window_merged());
        let widx = i32_tensor(&wi)?;
        let unwidx = i32_tensor(&inverse_permutation(&wi))?;
        let pos = ops::vision_patch_positions(grids, c.spatial_merge_size)?;
        let (cos, sin) = ops::vision_rope_table(&pos, c.head_dim(), c.rope_theta, Device::Cpu)?;
        // Built on the host, then moved next to the weights.
        let dev = self.patch_embed.weight.value.device();
        let cos = permute_groups(&cos, &widx, unit)?.to_device(dev)?;
        let sin = permute_groups(&sin, &widx, unit)?.to_device(dev)?;
        Ok(Layout {
            widx,
            unwidx,
            cos,
            sin,
            cu_full: i32_tensor(&image_cu_seqlens(grids))?,
            cu_window: i32_tensor(&cu_window_seqlens)?,
        })
    }

    /// `pixel_values: [N, C·T·P·P]` in processor order, `grids` per image in patches.
    /// Returns merged tokens `[N/4, out_hidden]` in raster order per image.
    pub fn forward(&self, pixel_values: &Tensor, grids: &[[usize; 3]]) -> Result<(Tensor, VisionCache)> {
        let c = &self.cfg;
        let n: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        if pixel_values.dims() != [n, c.patch_dim()] {
            return Err(crate::shape_err!(
                "vision forward",
                "pixel_values {} do not match the grids {grids:?}: expected [{n}, {}]",
                pixel_values.shape(),
                c.patch_dim()
            ));
        }
        let lay = self.layout(grids)?;
        let (x, embed) = self.patch_embed.forward(pixel_values)?;
        let mut x = permute_groups(&x, &lay.widx, c.merge_unit())?;
        let mut caches = Vec::with_capacity(self.blocks.len());
        for (i, b) in self.blocks.iter().enumerate() {
            let cu = if c.fullatt_block_indexes.contains(&i) { &lay.cu_full } else { &lay.cu_window };
            let ctx = BlockCtx { cos: &lay.cos, sin: &lay.sin, cu, heads: c.num_heads, eps: c.rms_norm_eps };
            let (y, cache) = b.forward(&x, &ctx)?;
            let keep_input = self.recompute.get(i).copied().unwrap_or(false);
            caches.push(if keep_input {
                super::text::Saved::Input(x.clone())
            } else {
                super::text::Saved::Cache(cache)
            });
            x = y;
        }
        let m = &self.merger;
        let (ln, ln_rstd) = ops::rms_norm(&x, &m.ln_q.value, c.rms_norm_eps)?;
        let (h1, fc1) = m.fc1.forward(&ln.reshape([n / c.merge_unit(), c.merge_unit() * c.hidden_size])?)?;
        let (out, fc2) = m.fc2.forward(&ops::gelu(&h1)?)?;
        let out = ops::index_select(&out, &lay.unwidx)?;
        let cache = VisionCache { grids: grids.to_vec(), embed, blocks: caches, merger_in: x, ln_rstd, fc1, h1, fc2 };
        Ok((out, cache))
    }

    /// True when some vision or merger parameter is trainable (else no backward runs).
    pub fn needs_backward(&mut self) -> bool {
        let mut all = Vec::new();
        self.params("visual", &mut all);
        all.iter().any(|(_, p)| p.trainable())
    }

    fn tower_trainable(&mut self) -> bool {
        let mut tower = Vec::new();
        self.patch_embed.params("", &mut tower);
        for b in &mut self.blocks {
            b.params("", &mut tower);
        }
        tower.iter().any(|(_, p)| p.trainable())
    }

    /// Backward from `d_out: [N/4, out_hidden]`: accumulates grads of trainable
    /// parameters; stops below the merger when the tower itself is frozen.
    pub fn backward(&mut self, cache: VisionCache, d_out: &Tensor) -> Result<()> {
        let c = self.cfg.clone();
        let lay = self.layout(&cache.grids)?;
        let n = cache.merger_in.dims()[0];
        let mut d = Tensor::zeros(d_out.dims(), DType::F32, d_out.device())?;
        ops::index_select_backward(&mut d, &lay.unwidx, d_out, None)?;
        let m = &mut self.merger;
        let dh1 = m.fc2.backward(cache.fc2, &d)?;
        let dm = m.fc1.backward(cache.fc1, &ops::gelu_backward(&cache.h1, &dh1)?)?;
        let dln = dm.reshape([n, c.hidden_size])?;
        let mut dx =
            ops::rms_norm_backward(&cache.merger_in, &m.ln_q.value, &cache.ln_rstd, &dln, m.ln_q.grad.as_mut())?;
        if !self.tower_trainable() {
            return Ok(());
        }
        for (i, (b, bc)) in self.blocks.iter_mut().zip(cache.blocks).enumerate().rev() {
            let cu = if c.fullatt_block_indexes.contains(&i) { &lay.cu_full } else { &lay.cu_window };
            let ctx = BlockCtx { cos: &lay.cos, sin: &lay.sin, cu, heads: c.num_heads, eps: c.rms_norm_eps };
            let bc = match bc {
                super::text::Saved::Cache(c) => c,
                super::text::Saved::Input(x) => b.forward(&x, &ctx)?.1,
            };
            dx = b.backward(bc, &dx, &ctx)?;
        }
        let dx = permute_groups_backward(&dx, &lay.widx, c.merge_unit())?;
        self.patch_embed.backward(cache.embed, &dx)?;
        Ok(())
    }

    /// Appends the parameters to `out` with hub names under `prefix` (normally "visual").
    pub fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        self.patch_embed.params(&format!("{prefix}.patch_embed.proj"), out);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.params(&format!("{prefix}.blocks.{i}"), out);
        }
        out.push((format!("{prefix}.merger.ln_q.weight"), &mut self.merger.ln_q));
        self.merger.fc1.params(&format!("{prefix}.merger.mlp.0"), out);
        self.merger.fc2.params(&format!("{prefix}.merger.mlp.2"), out);
    }
}
