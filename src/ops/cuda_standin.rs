//! The CUDA arm of the ops in a build without the kernels (no nvcc when it was
//! built): the same functions as `cuda.rs`, each returning the error that says
//! so. No tensor can be on a CUDA device in such a build (`Device::check_available`
//! refuses first), so these are reached only through that mistake; the compiler
//! keeps the two files' signatures in step, as both builds are checked in CI.

use super::loss::RowScale;
use super::{AdamSlot, AdamW, AttnOut, CrossEntropy, SamplingParams};
use crate::cpu::attention::AttnShape;
use crate::cuda::LoraShape;
use crate::error::{Error, Result};
use crate::tensor::{Device, Tensor};

fn not_built() -> Error {
    Device::Cuda(0).check_available().expect_err("a build without the kernels has no CUDA device")
}

pub fn swiglu(_gate: &Tensor, _up: &Tensor) -> Result<Tensor> {
    Err(not_built())
}

pub fn swiglu_backward(_gate: &Tensor, _up: &Tensor, _dy: &Tensor) -> Result<(Tensor, Tensor)> {
    Err(not_built())
}

pub fn gelu(_x: &Tensor) -> Result<Tensor> {
    Err(not_built())
}

pub fn gelu_backward(_x: &Tensor, _dy: &Tensor) -> Result<Tensor> {
    Err(not_built())
}

pub fn add(_a: &Tensor, _b: &Tensor) -> Result<Tensor> {
    Err(not_built())
}

pub fn add_scaled_assign(_a: &mut Tensor, _b: &Tensor, _alpha: f32) -> Result<()> {
    Err(not_built())
}

pub fn scale_assign(_a: &mut Tensor, _alpha: f32) -> Result<()> {
    Err(not_built())
}

pub fn attention(_q: &Tensor, _k: &Tensor, _v: &Tensor, _cu: &[usize], _s: &AttnShape) -> Result<AttnOut> {
    Err(not_built())
}

pub fn attention_kv(
    _q: &Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _cq: &[usize],
    _ck: &[usize],
    _s: &AttnShape,
) -> Result<AttnOut> {
    Err(not_built())
}

#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    _q: &Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _fwd: &AttnOut,
    _dout: &Tensor,
    _cu: &[usize],
    _s: &AttnShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    Err(not_built())
}

pub fn attention_decode_paged(
    _q: &Tensor,
    _kv: &super::PagedKv<'_>,
    _rows: &super::DecodeRows,
    _scale: f32,
    _composed: impl FnOnce() -> Result<AttnOut>,
) -> Result<AttnOut> {
    Err(not_built())
}

pub fn store_kv(
    _k_pool: &mut Tensor,
    _v_pool: &mut Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _rows: &super::StoreRows<'_>,
) -> Result<()> {
    Err(not_built())
}

pub fn scatter_i32(_table: &mut Tensor, _pairs: &[(usize, i32)]) -> Result<()> {
    Err(not_built())
}

pub fn merge_attention(_a: &AttnOut, _b: &AttnOut) -> Result<AttnOut> {
    Err(not_built())
}

pub fn index_select(_x: &Tensor, _idx: &[i32]) -> Result<Tensor> {
    Err(not_built())
}

pub fn index_select_backward(_dx: &mut Tensor, _idx: &[i32], _dy: &Tensor, _skip: Option<&[bool]>) -> Result<()> {
    Err(not_built())
}

pub fn scatter_rows(_x: &Tensor, _pos: &[i32], _rows: &Tensor) -> Result<Tensor> {
    Err(not_built())
}

pub fn scatter_rows_backward(_dy: &Tensor, _pos: &[i32]) -> Result<(Tensor, Tensor)> {
    Err(not_built())
}

pub fn write_rows(_dst: &mut Tensor, _start: usize, _src: &Tensor, _inner: usize) -> Result<()> {
    Err(not_built())
}

pub fn linear(
    _x: &Tensor,
    _w: &Tensor,
    _b: Option<&Tensor>,
    _rows: usize,
    _din: usize,
    _dout: usize,
) -> Result<Tensor> {
    Err(not_built())
}

#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    _x: &Tensor,
    _w: &Tensor,
    _dy: &Tensor,
    _dw: Option<&mut Tensor>,
    _db: Option<&mut Tensor>,
    _rows: usize,
    _din: usize,
    _dout: usize,
) -> Result<Tensor> {
    Err(not_built())
}

#[allow(clippy::too_many_arguments)]
pub fn matmul(
    _a: &Tensor,
    _b: &Tensor,
    _trans_a: bool,
    _trans_b: bool,
    _batch: usize,
    _m: usize,
    _n: usize,
    _k: usize,
    _out_dims: Vec<usize>,
) -> Result<Tensor> {
    Err(not_built())
}

#[allow(clippy::too_many_arguments)]
pub fn lora_linear(
    _x: &Tensor,
    _w: &Tensor,
    _bias: Option<&Tensor>,
    _a: &Tensor,
    _b: &Tensor,
    _s: LoraShape,
    _out_dims: Vec<usize>,
) -> Result<super::LoraOut> {
    Err(not_built())
}

#[allow(clippy::too_many_arguments)]
pub fn lora_linear_backward(
    _x: &Tensor,
    _w: &Tensor,
    _a: &Tensor,
    _b: &Tensor,
    _s: LoraShape,
    _xa: &Tensor,
    _dy: &Tensor,
    _da: &mut Tensor,
    _db: &mut Tensor,
) -> Result<Tensor> {
    Err(not_built())
}

pub fn rms_norm(_x: &Tensor, _w: &Tensor, _eps: f32) -> Result<(Tensor, Tensor)> {
    Err(not_built())
}

pub fn add_rms_norm(_x: &Tensor, _residual: &Tensor, _w: &Tensor, _eps: f32) -> Result<(Tensor, Tensor, Tensor)> {
    Err(not_built())
}

pub fn rms_norm_backward(
    _x: &Tensor,
    _w: &Tensor,
    _rstd: &Tensor,
    _dy: &Tensor,
    _dw: Option<&mut Tensor>,
) -> Result<Tensor> {
    Err(not_built())
}

pub fn rope(_x: &Tensor, _cos: &Tensor, _sin: &Tensor, _backward: bool) -> Result<Tensor> {
    Err(not_built())
}

pub fn cross_entropy(_logits: &Tensor, _labels: &[i32], _v: usize) -> Result<CrossEntropy> {
    Err(not_built())
}

pub fn cross_entropy_backward(_logits: &Tensor, _labels: &[i32], _v: usize, _scale: RowScale<'_>) -> Result<Tensor> {
    Err(not_built())
}

pub fn linear_cross_entropy(
    _h: &Tensor,
    _w: &Tensor,
    _labels: &[i32],
    _scale: super::GradScale<'_>,
    _dw: Option<&mut Tensor>,
    _chunk_rows: usize,
) -> Result<super::LinearCrossEntropy> {
    Err(not_built())
}

pub fn linear_token_logprobs(
    _h: &Tensor,
    _w: &Tensor,
    _ids: &[i32],
    _temperature: f32,
    _chunk_rows: usize,
    _with_entropy: bool,
) -> Result<super::LinearTokenLogprobs> {
    Err(not_built())
}

#[allow(clippy::too_many_arguments)]
pub fn linear_token_logprobs_backward(
    _h: &Tensor,
    _w: &Tensor,
    _ids: &[i32],
    _lse: &Tensor,
    _dlogp: &Tensor,
    _temperature: f32,
    _dw: Option<&mut Tensor>,
    _chunk_rows: usize,
) -> Result<Tensor> {
    Err(not_built())
}

pub fn token_logprobs(_logits: &Tensor, _ids: &[i32], _v: usize, _s: f32) -> Result<(Tensor, Tensor)> {
    Err(not_built())
}

pub fn token_logprobs_backward(
    _logits: &Tensor,
    _ids: &[i32],
    _lse: &Tensor,
    _dlogp: &Tensor,
    _v: usize,
    _s: f32,
) -> Result<Tensor> {
    Err(not_built())
}

pub fn sample_streams(
    _logits: &Tensor,
    _n: usize,
    _p: &SamplingParams,
    _seed: u64,
    _streams: &[u64],
    _banned: &[u32],
) -> Result<(Vec<u32>, Vec<f32>)> {
    Err(not_built())
}

pub fn adamw_step(_slots: &mut [AdamSlot<'_>], _h: &AdamW, _step: u64, _grad_scale: f32) -> Result<bool> {
    Err(not_built())
}

pub fn grad_norm(_grads: &[&Tensor]) -> Result<f64> {
    Err(not_built())
}

pub fn policy_loss(
    _logp: &Tensor,
    _entropy: Option<&Tensor>,
    _tokens: &super::PolicyTokens,
    _p: &crate::cpu::loss::PolicyLossParams,
) -> Result<(Tensor, crate::cpu::loss::PolicyLossSums)> {
    Err(not_built())
}
