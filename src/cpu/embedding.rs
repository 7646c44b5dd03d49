//! Row gathers and scatters: embedding lookup and its backward, the image-feature
//! scatter into `<|image_pad|>` positions, and the window permutation of the vision
//! tower (all are "rows of a `[N, D]` matrix picked by an index list").

/// `out[i] = src[idx[i]]`. Indices were range-checked by the caller.
pub fn gather_rows(src: &[f32], d: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        out.extend_from_slice(&src[i * d..(i + 1) * d]);
    }
    out
}

/// `dst[idx[i]] += src[i]` (the backward of [`gather_rows`]); rows whose flag in
/// `skip` is set send nothing.
pub fn scatter_add_rows(dst: &mut [f32], d: usize, idx: &[usize], src: &[f32], skip: Option<&[bool]>) {
    for (i, &r) in idx.iter().enumerate() {
        if skip.is_some_and(|s| s[i]) {
            continue;
        }
        for (a, &b) in dst[r * d..(r + 1) * d].iter_mut().zip(&src[i * d..(i + 1) * d]) {
            *a += b;
        }
    }
}

/// `x[pos[i]] = rows[i]` in place (image features replacing placeholder embeddings).
pub fn overwrite_rows(x: &mut [f32], d: usize, pos: &[usize], rows: &[f32]) {
    for (i, &p) in pos.iter().enumerate() {
        x[p * d..(p + 1) * d].copy_from_slice(&rows[i * d..(i + 1) * d]);
    }
}
