//! Image preprocessing against transformers' PIL image processor
//! (tools/make_image_fixtures.py), and patchify / smart_resize by hand.

use std::path::{Path, PathBuf};

use actial::model::Checkpoint;
use actial::model::image::{CLIP_MEAN, CLIP_STD, ImageProcessorConfig, load_image, patchify, preprocess, smart_resize};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

fn qwen() -> ImageProcessorConfig {
    ImageProcessorConfig {
        patch_size: 14,
        temporal_patch_size: 2,
        merge_size: 2,
        min_pixels: 56 * 56,
        max_pixels: 12_845_056,
        mean: CLIP_MEAN,
        std: CLIP_STD,
    }
}

#[test]
fn smart_resize_matches_transformers() {
    let fx = Checkpoint::open(&dir().join("expected.safetensors")).unwrap();
    let inputs = fx.tensor("smart_resize_in").unwrap().to_vec_i32().unwrap();
    for (key, budget) in [("smart_resize_default", 12_845_056), ("smart_resize_960x540", 960 * 540)] {
        let want = fx.tensor(key).unwrap().to_vec_i32().unwrap();
        for (i, hw) in inputs.chunks(2).enumerate() {
            let got = smart_resize(hw[0] as usize, hw[1] as usize, 28, 3136, budget).unwrap();
            assert_eq!([got.0 as i32, got.1 as i32], [want[2 * i], want[2 * i + 1]], "{key} {hw:?}");
        }
    }
    assert!(smart_resize(20, 100, 28, 3136, 12_845_056).unwrap_err().to_string().contains("smaller than 28"));
    assert!(smart_resize(28, 6000, 28, 3136, 12_845_056).unwrap_err().to_string().contains("aspect ratio"));
}

#[test]
fn pixel_values_match_the_pil_processor() {
    let fx = Checkpoint::open(&dir().join("expected.safetensors")).unwrap();
    let imgs = [load_image(&dir().join("a.png")).unwrap(), load_image(&dir().join("b.jpg")).unwrap()];
    let out = preprocess(&imgs, &qwen()).unwrap();
    let grids = fx.tensor("image_grid_thw").unwrap().to_vec_i32().unwrap();
    assert_eq!(
        out.grids,
        vec![
            [grids[0] as usize, grids[1] as usize, grids[2] as usize],
            [grids[3] as usize, grids[4] as usize, grids[5] as usize]
        ]
    );
    let want = fx.tensor("pixel_values").unwrap().to_vec_f32().unwrap();
    let got = out.pixel_values.to_vec_f32().unwrap();
    assert_eq!(got.len(), want.len());
    // Resampling differs slightly between PIL's bicubic and the image crate's
    // Catmull-Rom (same kernel, different fixed-point rounding): compare in units of
    // 8-bit levels after normalisation (1 level = 1/255/std ≈ 0.015).
    let level = 1.0 / 255.0 / 0.26;
    let diffs: Vec<f32> = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / level).collect();
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    let max = diffs.iter().fold(0.0f32, |m, &d| m.max(d));
    eprintln!("preprocess vs PIL: mean {mean:.3} levels, max {max:.2} levels");
    assert!(mean < 0.5 && max < 8.0, "mean {mean} levels, max {max} levels");
}

#[test]
fn patchify_order_by_hand() {
    // A 4x4 image, patch 2, merge 2, temporal 2: one merge block of 2x2 patches.
    let c = ImageProcessorConfig { patch_size: 2, merge_size: 2, ..qwen() };
    let (h, w) = (4, 4);
    let chw: Vec<f32> = (0..3 * h * w).map(|i| i as f32).collect();
    let (rows, grid) = patchify(&chw, h, w, &c);
    assert_eq!(grid, [1, 2, 2]);
    let d = 3 * 2 * 2 * 2;
    assert_eq!(rows.len(), 4 * d);
    // Patch (row 0, col 1) is the second row: channel 0 frame 0 = pixels (0,2),(0,3),(1,2),(1,3).
    assert_eq!(&rows[d..d + 4], &[2.0, 3.0, 6.0, 7.0]);
    // Frame 1 repeats frame 0; channel 1 follows.
    assert_eq!(&rows[d + 4..d + 8], &[2.0, 3.0, 6.0, 7.0]);
    assert_eq!(&rows[d + 8..d + 12], &[18.0, 19.0, 22.0, 23.0]);
    // Patch (1, 0) is the third row.
    assert_eq!(&rows[2 * d..2 * d + 4], &[8.0, 9.0, 12.0, 13.0]);
}

#[test]
fn undecodable_and_tiny_images_name_the_problem() {
    let bad = std::env::temp_dir().join(format!("actial-bad-{}.png", std::process::id()));
    std::fs::write(&bad, b"not a png").unwrap();
    let e = load_image(&bad).unwrap_err().to_string();
    assert!(e.contains(&bad.display().to_string()) && e.contains("cannot decode"), "{e}");
    std::fs::remove_file(&bad).unwrap();
    let tiny = image::RgbImage::new(10, 40);
    let e = preprocess(&[tiny], &qwen()).unwrap_err().to_string();
    assert!(e.contains("image 0") && e.contains("smaller than 28"), "{e}");
}

/// A PNG of a few dozen bytes that declares 20000 x 20000 pixels (1 bit each):
/// signature, IHDR, an empty IDAT, IEND, with their CRCs.
fn png_bomb() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut chunk = |kind: &[u8], body: &[u8]| {
        out.extend((body.len() as u32).to_be_bytes());
        let mut typed = kind.to_vec();
        typed.extend(body);
        out.extend(&typed);
        out.extend(crc32(&typed).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(20_000u32.to_be_bytes());
    ihdr.extend(20_000u32.to_be_bytes());
    ihdr.extend([1, 0, 0, 0, 0]); // 1-bit greyscale, deflate, no filter, no interlace
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[]);
    chunk(b"IEND", &[]);
    out
}

/// A decompression bomb is refused from its header, before any decoding (it
/// used to be decoded in full: 1.5 GB and 10 s for `actial-data inspect`),
/// by file and by bytes, naming the source and the size.
#[test]
fn an_image_declaring_too_many_pixels_is_refused_before_decoding() {
    let bomb = png_bomb();
    assert!(bomb.len() < 100);
    let dir = std::env::temp_dir().join(format!("actial-bomb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bomb.png");
    std::fs::write(&path, &bomb).unwrap();
    let e = actial::model::image::load_image(&path).unwrap_err().to_string();
    assert!(e.contains("bomb.png") && e.contains("20000 x 20000") && e.contains("refused before decoding"), "{e}");
    let e = actial::model::image::decode_image(&bomb, "row 7").unwrap_err().to_string();
    assert!(e.contains("row 7") && e.contains("20000 x 20000"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
