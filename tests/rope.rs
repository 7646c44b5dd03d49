//! Rotary embeddings on small cases built by hand.

mod common;
use actial::ops;
use actial::{Device, Tensor};
use common::*;

#[test]
fn rotate_half_pairs_d_with_d_plus_half() {
    // Angles (π/2, 0) on the two frequency slots: slot 0 rotates by 90°, slot 1 not.
    // y = x·cos + [−x2, −x3, x0, x1]·sin = [−3, 2, 1, 4].
    let x = Tensor::from_f32(vec![1.0, 2.0, 3.0, 4.0], [1, 1, 4], Device::Cpu).unwrap();
    let cos = Tensor::from_f32(vec![0.0, 1.0, 0.0, 1.0], [1, 4], Device::Cpu).unwrap();
    let sin = Tensor::from_f32(vec![1.0, 0.0, 1.0, 0.0], [1, 4], Device::Cpu).unwrap();
    assert_eq!(vec_of(&ops::rope(&x, &cos, &sin).unwrap()), vec![-3.0, 2.0, 1.0, 4.0]);
    // The backward is the inverse rotation here (orthogonal): it undoes the forward.
    let y = ops::rope(&x, &cos, &sin).unwrap();
    assert_eq!(vec_of(&ops::rope_backward(&y, &cos, &sin).unwrap()), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn vision_patches_come_in_merge_blocks() {
    let pos = ops::vision_patch_positions(&[[1, 4, 4]], 2).unwrap();
    #[rustfmt::skip]
    let expected = [
        [0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3],
        [2, 0], [2, 1], [3, 0], [3, 1], [2, 2], [2, 3], [3, 2], [3, 3],
    ];
    assert_eq!(pos, expected);
    // Two frames repeat the coordinates; a second image restarts at (0, 0).
    let pos = ops::vision_patch_positions(&[[2, 2, 2], [1, 2, 4]], 2).unwrap();
    assert_eq!(pos.len(), 8 + 8);
    assert_eq!(&pos[4..8], &pos[0..4]);
    assert_eq!(&pos[8..12], &[[0, 0], [0, 1], [1, 0], [1, 1]]);
    assert!(ops::vision_patch_positions(&[[1, 3, 4]], 2).is_err());
}

#[test]
fn vision_table_rows_then_cols() {
    // head dim 8 → rotary dim 4 → inv_freq = [1, 10000^(−1/2)] = [1, 0.01].
    // Patch (row 2, col 3): angles [2, 0.02, 3, 0.03] repeated twice.
    let (cos, sin) = ops::vision_rope_table(&[[2, 3]], 8, 10000.0, Device::Cpu).unwrap();
    let angles = [2.0f32, 0.02, 3.0, 0.03, 2.0, 0.02, 3.0, 0.03];
    for (j, a) in angles.iter().enumerate() {
        assert!((vec_of(&cos)[j] - a.cos()).abs() < 1e-6, "cos col {j}");
        assert!((vec_of(&sin)[j] - a.sin()).abs() < 1e-6, "sin col {j}");
    }
}

#[test]
fn qwen_vision_table_layout() {
    // The real tower: head dim 80, rotary dim 40, inv_freq[k] = 10000^(−2k/40), k < 20;
    // columns 0..20 read the row, 20..40 the column, 40..80 repeat.
    let (cos, _) = ops::vision_rope_table(&[[5, 9]], 80, 10000.0, Device::Cpu).unwrap();
    let c = vec_of(&cos);
    for (j, &cj) in c.iter().enumerate() {
        let f = j % 40;
        let (p, k) = if f < 20 { (5.0f32, f) } else { (9.0, f - 20) };
        let want = (p * 10000f32.powf(-((2 * k) as f32) / 40.0)).cos();
        assert!((cj - want).abs() < 1e-5, "col {j}: {cj} vs {want}");
    }
}

#[test]
fn mrope_sections_pick_axes() {
    // Qwen2.5-VL text: head dim 128, sections [16, 24, 24]: dims 0–15 and 64–79 read t,
    // 16–39 and 80–103 read h, 40–63 and 104–127 read w; frequency index = dim mod 64.
    let positions = Tensor::from_i32(vec![5, 7, 11], [3, 1], Device::Cpu).unwrap();
    let (cos, sin) = ops::mrope_table(&positions, 128, 1e6, [16, 24, 24]).unwrap();
    let (c, s) = (vec_of(&cos), vec_of(&sin));
    for j in 0..128 {
        let f = j % 64;
        let p = match f {
            0..=15 => 5.0f32,
            16..=39 => 7.0,
            _ => 11.0,
        };
        let a = p * 1e6f32.powf(-((2 * f) as f32) / 128.0);
        assert!((c[j] - a.cos()).abs() < 1e-5 && (s[j] - a.sin()).abs() < 1e-5, "dim {j}");
    }
}

#[test]
fn mrope_with_equal_axes_is_plain_rope() {
    // Text-only input has t = h = w: M-RoPE must reduce to ordinary 1D RoPE.
    let t = 9;
    let p: Vec<i32> = (0..3).flat_map(|_| 0..t as i32).collect();
    let positions = Tensor::from_i32(p, [3, t], Device::Cpu).unwrap();
    let (cos, _) = ops::mrope_table(&positions, 16, 1e4, [2, 3, 3]).unwrap();
    let c = vec_of(&cos);
    for i in 0..t {
        for j in 0..16 {
            let want = (i as f32 * 1e4f32.powf(-((2 * (j % 8)) as f32) / 16.0)).cos();
            assert!((c[i * 16 + j] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn mrope_rejects_bad_sections() {
    let positions = Tensor::from_i32(vec![0; 6], [3, 2], Device::Cpu).unwrap();
    let e = ops::mrope_table(&positions, 128, 1e6, [16, 24, 16]).err().unwrap().to_string();
    assert!(e.contains("mrope_table") && e.contains("sections"), "{e}");
}
