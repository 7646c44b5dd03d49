//! LoRA linear: `y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ` with `W: [out, in]` and `b` frozen,
//! `A: [r, in]`, `B: [out, r]` trained, `s = alpha / r`.

use super::matmul::{linear_forward, matmul};

/// Returns `(y, xa)` where `xa = x·Aᵀ: [rows, r]` is saved for the backward.
pub fn lora_forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    a: &[f32],
    bm: &[f32],
    s: f32,
    rows: usize,
    din: usize,
    dout: usize,
    r: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut y = linear_forward(x, w, b, rows, din, dout);
    let xa = linear_forward(x, a, None, rows, din, r);
    matmul(1, rows, dout, r, &xa, 0, false, bm, 0, true, &mut y, true, s);
    (y, xa)
}

/// Returns `dx = dy·W + s·(dy·B)·A`; accumulates `dA += s·(dy·B)ᵀ·x` and
/// `dB += s·dyᵀ·xa`.
pub fn lora_backward(
    x: &[f32],
    w: &[f32],
    a: &[f32],
    bm: &[f32],
    xa: &[f32],
    dy: &[f32],
    s: f32,
    rows: usize,
    din: usize,
    dout: usize,
    r: usize,
    da: &mut [f32],
    db: &mut [f32],
) -> Vec<f32> {
    let mut dyb = vec![0.0f32; rows * r];
    matmul(1, rows, r, dout, dy, 0, false, bm, 0, false, &mut dyb, false, 1.0);
    let mut dx = vec![0.0f32; rows * din];
    matmul(1, rows, din, dout, dy, 0, false, w, 0, false, &mut dx, false, 1.0);
    matmul(1, rows, din, r, &dyb, 0, false, a, 0, false, &mut dx, true, s);
    matmul(1, r, din, rows, &dyb, 0, true, x, 0, false, da, true, s);
    matmul(1, dout, r, rows, dy, 0, true, xa, 0, false, db, true, s);
    dx
}
