//! Parameters and the linear layer (with optional LoRA) every module is built from.

use crate::error::Result;
use crate::ops;
use crate::rng::Philox;
use crate::tensor::{DType, Tensor};

/// A weight and, when trainable, its f32 gradient accumulator.
#[derive(Clone, Debug)]
pub struct Param {
    pub value: Tensor,
    /// `Some` exactly when the parameter is trainable.
    pub grad: Option<Tensor>,
}

impl Param {
    pub fn new(value: Tensor) -> Param {
        Param { value, grad: None }
    }

    pub fn trainable(&self) -> bool {
        self.grad.is_some()
    }

    /// Turns training on (f32 master copy + zeroed grad) or off (drops the grad).
    pub fn set_trainable(&mut self, on: bool) -> Result<()> {
        if on && self.grad.is_none() {
            self.value = self.value.to_dtype(DType::F32)?;
            self.grad = Some(Tensor::zeros(self.value.dims(), DType::F32, self.value.device())?);
        } else if !on {
            self.grad = None;
        }
        Ok(())
    }

    pub fn zero_grad(&mut self) -> Result<()> {
        if let Some(g) = &mut self.grad {
            ops::scale_assign(g, 0.0)?;
        }
        Ok(())
    }
}

/// Low-rank adapter on a frozen linear: `y += scale · (x·Aᵀ)·Bᵀ`, PEFT layout
/// (`lora_A.weight: [r, in]`, `lora_B.weight: [out, r]`, scale = alpha / r).
#[derive(Clone, Debug)]
pub struct Lora {
    pub a: Param,
    pub b: Param,
    pub scale: f32,
}

/// `y = x·Wᵀ + b` (+ LoRA). Weight layout `[out, in]` as in checkpoints.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
    pub lora: Option<Lora>,
}

/// What the backward of a linear needs from its forward.
pub struct LinearCache {
    x: Tensor,
    xa: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight: Param::new(weight), bias: bias.map(Param::new), lora: None }
    }

    pub fn out_features(&self) -> usize {
        self.weight.value.dims()[0]
    }
    pub fn in_features(&self) -> usize {
        self.weight.value.dims()[1]
    }

    /// Attaches a LoRA adapter of rank `r`: A ~ U(−1/√in, 1/√in) (PEFT's
    /// kaiming-uniform with a = √5), B = 0, so the layer starts unchanged. The base
    /// weight and bias are frozen; A and B are trainable.
    pub fn add_lora(&mut self, r: usize, alpha: f32, rng: &mut Philox) -> Result<()> {
        let (dout, din) = (self.out_features(), self.in_features());
        let bound = 1.0 / (din as f32).sqrt();
        let dev = self.weight.value.device();
        let mut a = Param::new(Tensor::from_f32(rng.uniform_vec(r * din, -bound, bound), [r, din], dev)?);
        let mut b = Param::new(Tensor::zeros([dout, r], DType::F32, dev)?);
        a.set_trainable(true)?;
        b.set_trainable(true)?;
        self.weight.set_trainable(false)?;
        if let Some(bias) = &mut self.bias {
            bias.set_trainable(false)?;
        }
        self.lora = Some(Lora { a, b, scale: alpha / r as f32 });
        Ok(())
    }

    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, LinearCache)> {
        let bias = self.bias.as_ref().map(|b| &b.value);
        match &self.lora {
            None => Ok((ops::linear(x, &self.weight.value, bias)?, LinearCache { x: x.clone(), xa: None })),
            Some(l) => {
                let out = ops::lora_linear(x, &self.weight.value, bias, &l.a.value, &l.b.value, l.scale)?;
                Ok((out.y, LinearCache { x: x.clone(), xa: Some(out.xa) }))
            }
        }
    }

    /// Accumulates parameter grads (where trainable) and returns `dx`.
    pub fn backward(&mut self, cache: LinearCache, dy: &Tensor) -> Result<Tensor> {
        match (&mut self.lora, cache.xa) {
            (Some(l), Some(xa)) => {
                let fwd = ops::LoraOut { y: dy.clone(), xa };
                // A frozen adapter (evaluated, not trained) still needs dx: its grads
                // go to scratch tensors that are dropped.
                let scratch = |p: &Param| Tensor::zeros(p.value.dims(), DType::F32, dy.device());
                let (mut sa, mut sb) = (None, None);
                let da = match l.a.grad.as_mut() {
                    Some(g) => g,
                    None => sa.insert(scratch(&l.a)?),
                };
                let db = match l.b.grad.as_mut() {
                    Some(g) => g,
                    None => sb.insert(scratch(&l.b)?),
                };
                ops::lora_linear_backward(
                    &cache.x,
                    &self.weight.value,
                    &l.a.value,
                    &l.b.value,
                    l.scale,
                    &fwd,
                    dy,
                    da,
                    db,
                )
            }
            _ => ops::linear_backward(
                &cache.x,
                &self.weight.value,
                dy,
                self.weight.grad.as_mut(),
                self.bias.as_mut().and_then(|b| b.grad.as_mut()),
            ),
        }
    }

    /// Appends the parameters under `prefix` to `out`, with PEFT/HF names
    /// (`{prefix}.weight`, `.bias`, `.lora_A.weight`, `.lora_B.weight`).
    pub fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        out.push((format!("{prefix}.weight"), &mut self.weight));
        if let Some(b) = &mut self.bias {
            out.push((format!("{prefix}.bias"), b));
        }
        if let Some(l) = &mut self.lora {
            out.push((format!("{prefix}.lora_A.weight"), &mut l.a));
            out.push((format!("{prefix}.lora_B.weight"), &mut l.b));
        }
    }
}
