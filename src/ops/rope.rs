//! Rotary embeddings: the tables for the vision tower's 2D rotary and the text
//! model's M-RoPE, and the rotation itself (rotate_half pairing, `d` with `d + D/2`).

use super::cuda;
use super::{common_device, cpu_f32, expect_dims, expect_rank};
use crate::cpu::rope as k;
use crate::error::Result;
use crate::tensor::{Device, Tensor};
use crate::{arg_err, shape_err};

/// Checks `x: [T, H, D]` against `cos, sin: [T, D]`; returns (H, D).
fn rope_dims(op: &'static str, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<(usize, usize)> {
    expect_rank(op, "x", x, 3)?;
    let (t, h, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    if d % 2 != 0 {
        return Err(shape_err!(op, "head dim {d} of x {} must be even", x.shape()));
    }
    expect_dims(op, "cos", cos, &[t, d])?;
    expect_dims(op, "sin", sin, &[t, d])?;
    Ok((h, d))
}

/// `x' = x·cos + rotate_half(x)·sin` for `x: [T, H, D]`, tables `[T, D]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let _profile = super::profile::scope("rope", "rope");
    const OP: &str = "rope";
    let (h, d) = rope_dims(OP, x, cos, sin)?;
    match common_device(OP, &[x, cos, sin])? {
        Device::Cpu => {
            let y = k::rope_forward(&x.f32_cow(OP, "x")?, &cos.f32_cow(OP, "cos")?, &sin.f32_cow(OP, "sin")?, h, d);
            cpu_f32(y, x.dims())
        }
        Device::Cuda(_) => cuda::rope(x, cos, sin, false),
    }
}

/// Backward of [`rope`]: the transposed rotation applied to `dy`.
pub fn rope_backward(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let _profile = super::profile::scope("rope", "rope_backward");
    const OP: &str = "rope_backward";
    let (h, d) = rope_dims(OP, dy, cos, sin)?;
    match common_device(OP, &[dy, cos, sin])? {
        Device::Cpu => {
            let dx = k::rope_backward(&dy.f32_cow(OP, "dy")?, &cos.f32_cow(OP, "cos")?, &sin.f32_cow(OP, "sin")?, h, d);
            cpu_f32(dx, dy.dims())
        }
        Device::Cuda(_) => cuda::rope(dy, cos, sin, true),
    }
}

/// (row, col) of every patch in the processor's order, for images of
/// `grid_thw = [t, h, w]` patches. The processor emits patches in `merge x merge`
/// blocks (so the merger sees each block's patches consecutively): blocks row-major,
/// patches row-major inside a block; frames repeat the same coordinates.
pub fn vision_patch_positions(grids: &[[usize; 3]], merge: usize) -> Result<Vec<[usize; 2]>> {
    let _profile = super::profile::scope("rope", "vision_patch_positions");
    let mut pos = Vec::new();
    for (i, &[t, h, w]) in grids.iter().enumerate() {
        if h % merge != 0 || w % merge != 0 {
            return Err(arg_err!(
                "vision_patch_positions",
                "image {i}: grid {h}x{w} is not a multiple of merge size {merge}"
            ));
        }
        for _ in 0..t {
            for br in 0..h / merge {
                for bc in 0..w / merge {
                    for r in 0..merge {
                        for c in 0..merge {
                            pos.push([br * merge + r, bc * merge + c]);
                        }
                    }
                }
            }
        }
    }
    Ok(pos)
}

/// Vision 2D rotary tables `[N, head_dim]` for patch positions (row, col): with
/// `half = head_dim/2` and `inv_freq[k] = theta^(−2k/half)` (`k < half/2`), column `j`
/// rotates by `row·inv_freq[j']` for `j' = j mod half < half/2` and by
/// `col·inv_freq[j' − half/2]` otherwise. Qwen2.5-VL: head_dim 80, theta 10000.
pub fn vision_rope_table(pos: &[[usize; 2]], head_dim: usize, theta: f32, device: Device) -> Result<(Tensor, Tensor)> {
    let _profile = super::profile::scope("rope", "vision_rope_table");
    let half = head_dim / 2;
    if !head_dim.is_multiple_of(4) {
        return Err(arg_err!("vision_rope_table", "head dim {head_dim} must be a multiple of 4"));
    }
    let f = k::inv_freq(half, theta);
    let freqs: Vec<f32> = f.iter().chain(&f).copied().collect();
    let p: Vec<[f32; 2]> = pos.iter().map(|&[r, c]| [r as f32, c as f32]).collect();
    let (cos, sin) = k::tables(&p, head_dim, &freqs, |j| usize::from(j >= half / 2));
    let shape = [pos.len(), head_dim];
    Ok((cpu_f32(cos, shape)?.to_device(device)?, cpu_f32(sin, shape)?.to_device(device)?))
}

/// M-RoPE tables `[T, head_dim]` from `positions: [3, T]` (i32; t, h, w axes).
/// `inv_freq[k] = theta^(−2k/head_dim)`, `k < head_dim/2`; the first half of the
/// dims is cut into `sections` (e.g. [16, 24, 24]) read from the t, h and w
/// positions in turn, and the second half repeats the pattern.
/// Qwen2.5-VL: head_dim 128, theta 1e6, sections [16, 24, 24].
pub fn mrope_table(positions: &Tensor, head_dim: usize, theta: f32, sections: [usize; 3]) -> Result<(Tensor, Tensor)> {
    let _profile = super::profile::scope("rope", "mrope_table");
    const OP: &str = "mrope_table";
    expect_rank(OP, "positions", positions, 2)?;
    if positions.dims()[0] != 3 {
        return Err(shape_err!(OP, "positions has shape {}, expected [3, T]", positions.shape()));
    }
    if sections.iter().sum::<usize>() * 2 != head_dim {
        return Err(arg_err!(OP, "sections {sections:?} must sum to head_dim/2 = {}", head_dim / 2));
    }
    let t = positions.dims()[1];
    let ids = positions.to_vec_i32()?;
    let p: Vec<[f32; 3]> = (0..t).map(|i| [ids[i] as f32, ids[t + i] as f32, ids[2 * t + i] as f32]).collect();
    let freqs = k::inv_freq(head_dim, theta);
    let axis_of = |f: usize| {
        if f < sections[0] {
            0
        } else if f < sections[0] + sections[1] {
            1
        } else {
            2
        }
    };
    let (cos, sin) = k::tables(&p, head_dim, &freqs, axis_of);
    let dev = positions.device();
    Ok((cpu_f32(cos, [t, head_dim])?.to_device(dev)?, cpu_f32(sin, [t, head_dim])?.to_device(dev)?))
}
