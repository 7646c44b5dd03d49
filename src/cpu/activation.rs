//! Elementwise activations: SwiGLU (`silu(gate)·up`), exact erf GELU, residual add.

use rayon::prelude::*;

/// Elements per rayon task for elementwise loops.
const CHUNK: usize = 1 << 14;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `y = silu(g) · u` with `silu(g) = g·σ(g)`.
pub fn swiglu_forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; gate.len()];
    y.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))).for_each(|(yc, (gc, uc))| {
        for ((o, &g), &u) in yc.iter_mut().zip(gc).zip(uc) {
            *o = g * sigmoid(g) * u;
        }
    });
    y
}

/// Returns `(d_gate, d_up)`: `d_up = dy·silu(g)`, `d_gate = dy·u·σ(g)(1 + g(1 − σ(g)))`.
pub fn swiglu_backward(gate: &[f32], up: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dg = vec![0.0f32; gate.len()];
    let mut du = vec![0.0f32; gate.len()];
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)))
        .for_each(|((dgc, duc), ((gc, uc), dyc))| {
            for i in 0..gc.len() {
                let (g, u, d) = (gc[i], uc[i], dyc[i]);
                let s = sigmoid(g);
                duc[i] = d * g * s;
                dgc[i] = d * u * s * (1.0 + g * (1.0 - s));
            }
        });
    (dg, du)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/sqrt(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (not the tanh approximation).
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| {
        for (o, &v) in yc.iter_mut().zip(xc) {
            *o = 0.5 * v * (1.0 + libm::erff(v * FRAC_1_SQRT_2));
        }
    });
    y
}

/// `dx = dy · (Φ(x) + x·φ(x))`.
pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK))).for_each(|(dc, (xc, gc))| {
        for ((o, &v), &g) in dc.iter_mut().zip(xc).zip(gc) {
            let cdf = 0.5 * (1.0 + libm::erff(v * FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * (-0.5 * v * v).exp();
            *o = g * (cdf + v * pdf);
        }
    });
    dx
}

/// `a += alpha · b`.
pub fn axpy(a: &mut [f32], b: &[f32], alpha: f32) {
    a.par_chunks_mut(CHUNK).zip(b.par_chunks(CHUNK)).for_each(|(ac, bc)| {
        for (x, &y) in ac.iter_mut().zip(bc) {
            *x += alpha * y;
        }
    });
}

/// `a · alpha`, in place.
pub fn scale(a: &mut [f32], alpha: f32) {
    a.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|x| *x *= alpha));
}
