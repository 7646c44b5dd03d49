//! Bicubic resizing exactly as the two image processors transformers runs for
//! Qwen2-VL do it on 8-bit images, so pixel values match level for level:
//!
//! - `Pil` (`Qwen2VLImageProcessorPil`): Pillow's `Image.resize(BICUBIC)`,
//!   `libImaging/Resample.c`: a = -0.5 cubic, support scaled by the downscale
//!   factor (antialiasing), weights normalised per output pixel and rounded to
//!   22-bit fixed point, two passes with 8-bit rounding in between.
//! - `Torchvision` (the fast processor, transformers 5's default when
//!   torchvision is installed): `torchvision.transforms.v2.functional.resize`
//!   on a uint8 tensor, i.e. PyTorch's uint8 antialiased bicubic
//!   (`UpSampleKernelAVXAntialias.h`): the same weights, rounded to int16 with a
//!   precision chosen from the largest weight of each pass.
//!
//! Both are separable: one set of taps per output column (row), applied to
//! every row (column).

use image::RgbImage;

/// Which processor's resize to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ResizeBackend {
    Torchvision,
    Pil,
}

/// Taps of one output pixel: the first input index and fixed-point weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// Pillow's bicubic kernel (a = -0.5), as written in Resample.c.
fn pil_cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// PyTorch's antialiasing cubic kernel (a = -0.5), as written in UpSampleKernel.cpp.
fn torch_cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Normalised floating weights for each output pixel (both libraries compute
/// them the same way, in double precision): the kernel is stretched by the
/// downscale factor so every input pixel contributes.
fn float_taps(in_size: usize, out_size: usize, kernel: fn(f64) -> f64) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let inv = 1.0 / filter_scale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut w: Vec<f64> = (lo..hi).map(|x| kernel((x as f64 - center + 0.5) * inv)).collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|x| *x /= total);
            }
            (lo, w)
        })
        .collect()
}

/// Rounds half away from zero, as `(int)(±0.5 + v)` does in both libraries.
fn round_fixed(v: f64) -> i32 {
    if v < 0.0 { (v - 0.5) as i32 } else { (v + 0.5) as i32 }
}

/// The taps of one pass and their fixed-point precision (bits).
fn taps(in_size: usize, out_size: usize, backend: ResizeBackend) -> (Vec<Taps>, u32) {
    match backend {
        ResizeBackend::Pil => {
            const PRECISION_BITS: u32 = 32 - 8 - 2;
            let t = float_taps(in_size, out_size, pil_cubic)
                .into_iter()
                .map(|(start, w)| Taps {
                    start,
                    weights: w.iter().map(|&x| round_fixed(x * (1u32 << PRECISION_BITS) as f64)).collect(),
                })
                .collect();
            (t, PRECISION_BITS)
        }
        ResizeBackend::Torchvision => {
            let f = float_taps(in_size, out_size, torch_cubic);
            // The most bits that keep the largest weight below 2^15 (int16).
            let w_max = f.iter().flat_map(|(_, w)| w.iter().copied()).fold(0.0f64, f64::max);
            let mut bits = 0;
            while bits < 22 && round_fixed(w_max * (1u64 << (bits + 1)) as f64) < (1 << 15) {
                bits += 1;
            }
            let t = f
                .into_iter()
                .map(|(start, w)| Taps {
                    start,
                    weights: w.iter().map(|&x| round_fixed(x * (1u32 << bits) as f64) as i16 as i32).collect(),
                })
                .collect();
            (t, bits)
        }
    }
}

/// One output value: the rounded fixed-point sum, clamped to 8 bits.
fn apply(taps: &Taps, bits: u32, sample: impl Fn(usize) -> u8) -> u8 {
    let mut acc: i64 = 1 << (bits - 1);
    for (k, &w) in taps.weights.iter().enumerate() {
        acc += sample(taps.start + k) as i64 * w as i64;
    }
    (acc >> bits).clamp(0, 255) as u8
}

/// Resizes to `w` x `h` as `backend` does: two passes with 8-bit rounding in
/// between, horizontal first, except that Pillow runs the vertical pass first
/// when it shrinks while the horizontal one enlarges (the shrinking pass first:
/// measured against Pillow 13, tests/preprocess.rs); a pass whose size does not
/// change is skipped.
pub fn resize(img: &RgbImage, w: u32, h: u32, backend: ResizeBackend) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let vertical_first = backend == ResizeBackend::Pil && w > iw && h < ih;
    if vertical_first {
        horizontal(&vertical(img, h, backend), w, backend)
    } else {
        vertical(&horizontal(img, w, backend), h, backend)
    }
}

fn horizontal(img: &RgbImage, w: u32, backend: ResizeBackend) -> RgbImage {
    let (iw, ih) = img.dimensions();
    if w == iw {
        return img.clone();
    }
    let (t, bits) = taps(iw as usize, w as usize, backend);
    RgbImage::from_fn(w, ih, |x, y| {
        let tx = &t[x as usize];
        image::Rgb(std::array::from_fn(|c| apply(tx, bits, |i| img.get_pixel(i as u32, y).0[c])))
    })
}

fn vertical(img: &RgbImage, h: u32, backend: ResizeBackend) -> RgbImage {
    let (iw, ih) = img.dimensions();
    if h == ih {
        return img.clone();
    }
    let (t, bits) = taps(ih as usize, h as usize, backend);
    RgbImage::from_fn(iw, h, |x, y| {
        let ty = &t[y as usize];
        image::Rgb(std::array::from_fn(|c| apply(ty, bits, |i| img.get_pixel(x, i as u32).0[c])))
    })
}
