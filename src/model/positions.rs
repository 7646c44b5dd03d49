//! Index bookkeeping of Qwen2.5-VL: the vision tower's window order and segment
//! offsets, and the text model's 3D (M-RoPE) position ids.

use crate::arg_err;
use crate::error::Result;

/// The window order of one batch of images (in merged-token units) and the
/// segment offsets of window attention (in patch units).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowIndex {
    /// `window_index[i]` = which raster-order merged token sits at position `i`.
    pub window_index: Vec<usize>,
    /// `[0, ...]` cumulative patches per window, consecutive duplicates removed.
    pub cu_window_seqlens: Vec<usize>,
}

/// Windows of `window` x `window` merged tokens tile each frame's merged grid
/// (padded up to a multiple, a full window of padding when it divides evenly:
/// those windows are empty and vanish); windows row-major, tokens row-major inside.
pub fn window_index(grids: &[[usize; 3]], merge: usize, window: usize) -> WindowIndex {
    let unit = merge * merge;
    let mut index = Vec::new();
    let mut cu = vec![0usize];
    let mut base = 0;
    for &[t, h, w] in grids {
        let (lh, lw) = (h / merge, w / merge);
        let (pad_h, pad_w) = (window - lh % window, window - lw % window);
        let (nwh, nww) = ((lh + pad_h) / window, (lw + pad_w) / window);
        for f in 0..t {
            for wr in 0..nwh {
                for wc in 0..nww {
                    let mut count = 0;
                    for r in wr * window..(wr + 1) * window {
                        for c in wc * window..(wc + 1) * window {
                            if r < lh && c < lw {
                                index.push(base + f * lh * lw + r * lw + c);
                                count += 1;
                            }
                        }
                    }
                    let last = *cu.last().expect("starts with 0");
                    cu.push(last + count * unit);
                }
            }
        }
        base += t * lh * lw;
    }
    cu.dedup();
    WindowIndex { window_index: index, cu_window_seqlens: cu }
}

/// Per-image segments of full attention: `[0] + cumsum(h·w per frame)` (patches).
pub fn image_cu_seqlens(grids: &[[usize; 3]]) -> Vec<usize> {
    let mut cu = vec![0usize];
    for &[t, h, w] in grids {
        for _ in 0..t {
            cu.push(cu.last().expect("starts with 0") + h * w);
        }
    }
    cu
}

/// `argsort` of a permutation: `inv[perm[i]] = i`.
pub fn inverse_permutation(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// M-RoPE position ids `[3][len]` (t, h, w) of one sample's tokens, as
/// transformers' `get_rope_index`: text advances all three axes by one; a run of
/// image-pad tokens takes the next grid from `grids` (advancing `next_grid`), its
/// merged token (r, c) of frame f gets (s + f, s + r, s + c), and text after it
/// resumes at s + max(Hm, Wm). Returns an error naming `sample` when a run's length
/// does not match its grid or the grids run out.
pub fn rope_positions(
    tokens: &[u32],
    image_token: u32,
    grids: &[[usize; 3]],
    next_grid: &mut usize,
    merge: usize,
    sample: usize,
) -> Result<[Vec<i32>; 3]> {
    const OP: &str = "rope_positions";
    let mut pos: [Vec<i32>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut cur: i64 = 0;
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] != image_token {
            for axis in &mut pos {
                axis.push(cur as i32);
            }
            cur += 1;
            i += 1;
            continue;
        }
        let run = tokens[i..].iter().take_while(|&&t| t == image_token).count();
        let [t, h, w] = *grids.get(*next_grid).ok_or_else(|| {
            arg_err!(
                OP,
                "sample {sample}: image-token run at position {i} but only {} image grids were given",
                grids.len()
            )
        })?;
        *next_grid += 1;
        let (hm, wm) = (h / merge, w / merge);
        if run != t * hm * wm {
            return Err(arg_err!(
                OP,
                "sample {sample}: {run} image tokens at position {i}, but grid {t}x{h}x{w} needs t·h·w/{} = {}",
                merge * merge,
                t * hm * wm
            ));
        }
        for f in 0..t {
            for r in 0..hm {
                for c in 0..wm {
                    pos[0].push((cur + f as i64) as i32);
                    pos[1].push((cur + r as i64) as i32);
                    pos[2].push((cur + c as i64) as i32);
                }
            }
        }
        cur += hm.max(wm) as i64;
        i += run;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_index_matches_the_spec_example() {
        // QWEN25VL.md: grid (1, 8, 12), window 4 merged tokens.
        let w = window_index(&[[1, 8, 12]], 2, 4);
        assert_eq!(
            w.window_index,
            vec![0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 18, 19, 20, 21, 4, 5, 10, 11, 16, 17, 22, 23]
        );
        assert_eq!(w.cu_window_seqlens, vec![0, 64, 96]);
    }

    #[test]
    fn evenly_divided_grids_lose_their_empty_windows() {
        // 16x8 patches -> 8x4 merged: two windows of 16 tokens, the padding windows vanish.
        let w = window_index(&[[1, 16, 8]], 2, 4);
        assert_eq!(w.cu_window_seqlens, vec![0, 64, 128]);
        assert_eq!(w.window_index, (0..32).collect::<Vec<_>>());
        // Two images: the second continues the offsets.
        let w2 = window_index(&[[1, 4, 4], [1, 16, 8]], 2, 4);
        assert_eq!(w2.cu_window_seqlens, vec![0, 16, 80, 144]);
        assert_eq!(w2.window_index[4], 4);
    }

    #[test]
    fn rope_positions_match_the_spec_example() {
        // QWEN25VL.md: 15 text tokens, image grid (1, 32, 44) (merged 16x22) ->
        // t = 15, h = 15..30, w = 15..36; the next text token gets 37.
        let n_img = 16 * 22;
        let mut toks = vec![1u32; 15];
        toks.extend(std::iter::repeat_n(9, n_img));
        toks.push(1);
        let mut next = 0;
        let p = rope_positions(&toks, 9, &[[1, 32, 44]], &mut next, 2, 0).unwrap();
        assert_eq!(next, 1);
        let img = 15..15 + n_img;
        assert!(p[0][img.clone()].iter().all(|&t| t == 15));
        assert_eq!((*p[1][img.clone()].iter().min().unwrap(), *p[1][img.clone()].iter().max().unwrap()), (15, 30));
        assert_eq!((*p[2][img.clone()].iter().min().unwrap(), *p[2][img].iter().max().unwrap()), (15, 36));
        assert_eq!([p[0][15 + n_img], p[1][15 + n_img], p[2][15 + n_img]], [37, 37, 37]);
        assert_eq!((p[1][15 + 22], p[2][15 + 22]), (16, 15)); // row 1, col 0
    }

    #[test]
    fn rope_positions_reject_mismatched_runs() {
        let toks = [1u32, 9, 9, 9, 1];
        let mut next = 0;
        let e = rope_positions(&toks, 9, &[[1, 4, 4]], &mut next, 2, 3).unwrap_err().to_string();
        assert!(e.contains("sample 3") && e.contains("3 image tokens"), "{e}");
    }
}
