//! Index plans of the strided copy kernel (`strided_copy_u16/u32` in
//! `cuda/small_ops.cu`) behind `permute`, inner-dim `narrow` and `cat` of CUDA
//! tensors. They are plain host functions, compiled in every build, so
//! `tests/tensor.rs` checks them against the CPU layout ops through
//! [`emulate`] (the kernel's loop on the host) without a GPU.

/// One strided copy: output element with multi-index `i` (row-major over `dims`)
/// moves from `src[src_offset + Σ i_d·src_strides[d]]` to
/// `dst[dst_offset + Σ i_d·dst_strides[d]]`. Strides and offsets count elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    pub dims: Vec<usize>,
    pub src_strides: Vec<usize>,
    pub dst_strides: Vec<usize>,
    pub src_offset: usize,
    pub dst_offset: usize,
}

/// Row-major strides of `dims`, in elements.
pub fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for d in (0..dims.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * dims[d + 1];
    }
    s
}

/// Elements `start..start + len` along `dim` of a contiguous `dims` tensor.
pub fn narrow(dims: &[usize], dim: usize, start: usize, len: usize) -> CopyPlan {
    let src_strides = contiguous_strides(dims);
    let mut out = dims.to_vec();
    out[dim] = len;
    CopyPlan {
        dst_strides: contiguous_strides(&out),
        src_offset: start * src_strides[dim],
        src_strides,
        dims: out,
        dst_offset: 0,
    }
}

/// Output dim `i` is input dim `perm[i]` (`perm` already checked).
pub fn permute(dims: &[usize], perm: &[usize]) -> CopyPlan {
    let in_strides = contiguous_strides(dims);
    let out: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    CopyPlan {
        dst_strides: contiguous_strides(&out),
        src_strides: perm.iter().map(|&p| in_strides[p]).collect(),
        dims: out,
        src_offset: 0,
        dst_offset: 0,
    }
}

/// Concatenation along `dim` of parts whose other dims agree: the output dims
/// and one 2-D copy per part, `[outer, part_dim·inner]`, into its slot.
pub fn cat(parts: &[&[usize]], dim: usize) -> (Vec<usize>, Vec<CopyPlan>) {
    let mut out = parts[0].to_vec();
    out[dim] = parts.iter().map(|p| p[dim]).sum();
    let outer: usize = out[..dim].iter().product();
    let inner: usize = out[dim + 1..].iter().product();
    let row = out[dim] * inner;
    let mut offset = 0;
    let plans = parts
        .iter()
        .map(|p| {
            let cols = p[dim] * inner;
            let plan = CopyPlan {
                dims: vec![outer, cols],
                src_strides: vec![cols, 1],
                dst_strides: vec![row, 1],
                src_offset: 0,
                dst_offset: offset,
            };
            offset += cols;
            plan
        })
        .collect();
    (out, plans)
}

/// The kernel's loop on the host: what `strided_copy` writes for `p`.
pub fn emulate<T: Copy>(src: &[T], dst: &mut [T], p: &CopyPlan) {
    let numel: usize = p.dims.iter().product();
    for e in 0..numel {
        let (mut rest, mut s, mut d) = (e, p.src_offset, p.dst_offset);
        for k in (0..p.dims.len()).rev() {
            let i = rest % p.dims[k];
            rest /= p.dims[k];
            s += i * p.src_strides[k];
            d += i * p.dst_strides[k];
        }
        dst[d] = src[s];
    }
}
