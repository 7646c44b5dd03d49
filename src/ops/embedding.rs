//! Row gathers and scatters: embedding lookup, image features into
//! `<|image_pad|>` positions, and row permutations (the vision window order).

use super::cuda;
use super::{common_device, cpu_f32, expect_dims, expect_rank, host_i32, host_indices};
use crate::cpu::embedding as k;
use crate::error::Result;
use crate::shape_err;
use crate::tensor::{Device, Tensor};

/// `out[i] = x[idx[i]]` for `x: [N, D]`, `idx: [M]` (i32) → `[M, D]`. This is the
/// embedding lookup (x = table, idx = token ids) and any row permutation.
pub fn index_select(x: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let _profile = super::profile::scope("embedding", "index_select");
    const OP: &str = "index_select";
    expect_rank(OP, "x", x, 2)?;
    let (n, d) = (x.dims()[0], x.dims()[1]);
    let rows = host_indices(OP, "idx", idx, n)?;
    match common_device(OP, &[x])? {
        Device::Cpu => cpu_f32(k::gather_rows(&x.f32_cow(OP, "x")?, d, &rows), [rows.len(), d]),
        Device::Cuda(_) => cuda::index_select(x, &host_i32(idx, OP, "idx")?),
    }
}

/// Backward of [`index_select`]: `dx[idx[i]] += dy[i]` into the f32 `dx: [N, D]`.
/// Rows `i` where `idx[i] == skip_id` send nothing: with `skip_id` = the image-pad
/// token, the placeholder embedding rows get no gradient (their positions were
/// overwritten by image features).
pub fn index_select_backward(dx: &mut Tensor, idx: &Tensor, dy: &Tensor, skip_id: Option<i32>) -> Result<()> {
    let _profile = super::profile::scope("embedding", "index_select_backward");
    const OP: &str = "index_select_backward";
    expect_rank(OP, "dx", dx, 2)?;
    let (n, d) = (dx.dims()[0], dx.dims()[1]);
    let rows = host_indices(OP, "idx", idx, n)?;
    expect_dims(OP, "dy", dy, &[rows.len(), d])?;
    let skip: Option<Vec<bool>> =
        skip_id.map(|s| host_i32(idx, OP, "idx").map(|v| v.iter().map(|&i| i == s).collect())).transpose()?;
    match common_device(OP, &[dx, dy])? {
        Device::Cpu => {
            let g = dy.f32_cow(OP, "dy")?.into_owned();
            k::scatter_add_rows(dx.f32_slice_mut(OP, "dx")?, d, &rows, &g, skip.as_deref());
            Ok(())
        }
        Device::Cuda(_) => cuda::index_select_backward(dx, &host_i32(idx, OP, "idx")?, dy, skip.as_deref()),
    }
}

/// Returns `x` with rows `pos[i]` replaced by `rows[i]`: image features written over
/// the `<|image_pad|>` embeddings, in order. `x: [T, D]`, `pos: [N]`, `rows: [N, D]`.
pub fn scatter_rows(x: &Tensor, pos: &Tensor, rows: &Tensor) -> Result<Tensor> {
    let _profile = super::profile::scope("embedding", "scatter_rows");
    const OP: &str = "scatter_rows";
    expect_rank(OP, "x", x, 2)?;
    let (t, d) = (x.dims()[0], x.dims()[1]);
    let p = host_indices(OP, "pos", pos, t)?;
    if rows.dims() != [p.len(), d] {
        return Err(shape_err!(
            OP,
            "{} positions but rows have shape {} (expected [{}, {d}])",
            p.len(),
            rows.shape(),
            p.len()
        ));
    }
    match common_device(OP, &[x, rows])? {
        Device::Cpu => {
            let mut out = x.f32_cow(OP, "x")?.into_owned();
            k::overwrite_rows(&mut out, d, &p, &rows.f32_cow(OP, "rows")?);
            cpu_f32(out, [t, d])
        }
        Device::Cuda(_) => cuda::scatter_rows(x, &host_i32(pos, OP, "pos")?, rows),
    }
}

/// Backward of [`scatter_rows`]: `(dx, drows)` where `drows[i] = dy[pos[i]]` and
/// `dx` is `dy` with those rows zeroed (the overwritten inputs had no effect).
pub fn scatter_rows_backward(dy: &Tensor, pos: &Tensor) -> Result<(Tensor, Tensor)> {
    let _profile = super::profile::scope("embedding", "scatter_rows_backward");
    const OP: &str = "scatter_rows_backward";
    expect_rank(OP, "dy", dy, 2)?;
    let (t, d) = (dy.dims()[0], dy.dims()[1]);
    let p = host_indices(OP, "pos", pos, t)?;
    match common_device(OP, &[dy])? {
        Device::Cpu => {
            let g = dy.f32_cow(OP, "dy")?;
            let drows = k::gather_rows(&g, d, &p);
            let mut dx = g.into_owned();
            k::overwrite_rows(&mut dx, d, &p, &vec![0.0; p.len() * d]);
            Ok((cpu_f32(dx, [t, d])?, cpu_f32(drows, [p.len(), d])?))
        }
        Device::Cuda(_) => cuda::scatter_rows_backward(dy, &host_i32(pos, OP, "pos")?),
    }
}

/// Writes `src: [n, ...]` into rows `start..start + n` of the f32 `dst` in place
/// (a KV cache append). Shapes past dim 0 must match.
pub fn write_rows(dst: &mut Tensor, start: usize, src: &Tensor) -> Result<()> {
    let _profile = super::profile::scope("embedding", "write_rows");
    const OP: &str = "write_rows";
    let (n, rows) = (src.dims().first().copied().unwrap_or(0), dst.dims().first().copied().unwrap_or(0));
    if src.rank() == 0 || dst.rank() != src.rank() || dst.dims()[1..] != src.dims()[1..] || start + n > rows {
        return Err(shape_err!(OP, "cannot write {} at row {start} of {}", src.shape(), dst.shape()));
    }
    let inner: usize = src.dims()[1..].iter().product();
    match common_device(OP, &[dst, src])? {
        Device::Cpu => {
            let s = src.f32_cow(OP, "src")?.into_owned();
            dst.f32_slice_mut(OP, "dst")?[start * inner..(start + n) * inner].copy_from_slice(&s);
            Ok(())
        }
        Device::Cuda(_) => cuda::write_rows(dst, start, src, inner),
    }
}
