//! Image decoding and preprocessing against transformers' two image processors
//! for Qwen2-VL (torchvision and PIL; tools/make_image_fixtures.py), 8-bit
//! level for 8-bit level, and patchify / smart_resize by hand.

use std::path::{Path, PathBuf};

use actial::model::Checkpoint;
use actial::model::image::{
    CLIP_MEAN, CLIP_STD, ImageProcessorConfig, ResizeBackend, load_image, patchify, preprocess, smart_resize,
};
use actial::model::resample::resize;

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
        resize: ResizeBackend::Torchvision,
    }
}

/// Bytes of `a` and `b` (same size) that differ, with the largest difference.
fn differing(a: &image::RgbImage, b: &image::RgbImage) -> (usize, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .filter(|(x, y)| x != y)
        .fold((0, 0), |(n, m), (x, y)| (n + 1, m.max(x.abs_diff(*y))))
}

#[test]
fn jpegs_decode_as_pil_decodes_them() {
    for name in ["b", "photo", "exif6"] {
        let got = load_image(&dir().join(format!("{name}.jpg"))).unwrap();
        let want = image::open(dir().join(format!("decoded/{name}.png"))).unwrap().to_rgb8();
        assert_eq!(got.dimensions(), want.dimensions(), "{name}: EXIF orientation applied");
        assert_eq!(differing(&got, &want), (0, 0), "{name}.jpg");
    }
}

#[test]
fn resizing_matches_each_processor_level_for_level() {
    let mut cases = 0;
    for backend in [ResizeBackend::Torchvision, ResizeBackend::Pil] {
        let sub = dir().join("resized").join(match backend {
            ResizeBackend::Torchvision => "torchvision",
            ResizeBackend::Pil => "pil",
        });
        for e in std::fs::read_dir(&sub).unwrap().flatten() {
            let file = e.file_name().into_string().unwrap();
            let (stem, budget) = file.trim_end_matches(".png").rsplit_once('_').unwrap();
            let input = ["png", "jpg"].iter().map(|x| dir().join(format!("{stem}.{x}"))).find(|p| p.is_file()).unwrap();
            let img = load_image(&input).unwrap();
            let want = image::open(e.path()).unwrap().to_rgb8();
            let (h, w) =
                smart_resize(img.height() as usize, img.width() as usize, 28, 3136, budget.parse().unwrap()).unwrap();
            assert_eq!((w as u32, h as u32), want.dimensions(), "{backend:?} {file}");
            let got =
                if (w as u32, h as u32) == img.dimensions() { img } else { resize(&img, w as u32, h as u32, backend) };
            assert_eq!(differing(&got, &want), (0, 0), "{backend:?} {file}: bytes differing, largest difference");
            cases += 1;
        }
    }
    assert_eq!(cases, 24);
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
fn pixel_values_match_both_processors() {
    let fx = Checkpoint::open(&dir().join("expected.safetensors")).unwrap();
    let imgs = [load_image(&dir().join("a.png")).unwrap(), load_image(&dir().join("b.jpg")).unwrap()];
    let grids = fx.tensor("image_grid_thw").unwrap().to_vec_i32().unwrap();
    for (backend, key) in
        [(ResizeBackend::Torchvision, "pixel_values_torchvision"), (ResizeBackend::Pil, "pixel_values_pil")]
    {
        let out = preprocess(&imgs, &ImageProcessorConfig { resize: backend, ..qwen() }).unwrap();
        assert_eq!(
            out.grids,
            vec![
                [grids[0] as usize, grids[1] as usize, grids[2] as usize],
                [grids[3] as usize, grids[4] as usize, grids[5] as usize]
            ]
        );
        let want = fx.tensor(key).unwrap().to_vec_f32().unwrap();
        let got = out.pixel_values.to_vec_f32().unwrap();
        assert_eq!(got.len(), want.len());
        // The same 8-bit pixels, rescaled and normalised in f32: equal to float
        // rounding (one 8-bit level is 0.015 after normalisation).
        let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max < 2e-6, "{key}: max difference {max}");
    }
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
