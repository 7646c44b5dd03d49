//! Image preprocessing as Qwen2-VL's image processor does it: decode, smart_resize
//! to multiples of patch·merge within a pixel budget, bicubic resize, rescale to
//! [0, 1], normalise with the CLIP mean/std, repeat the still frame over the
//! temporal patch, and patchify into `[N, C·T·P·P]` rows in processor order.

use std::path::Path;

use image::RgbImage;

pub use super::resample::ResizeBackend;

use super::config::VisionConfig;
use crate::error::{Error, Result};
use crate::tensor::{Device, Tensor};

// OpenAI CLIP's constants exactly as transformers publishes them.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessorConfig {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub min_pixels: usize,
    /// The pixel budget per image (the released processors: 12845056; the paper's
    /// GRPO stage caps images at 960x540).
    pub max_pixels: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Whose bicubic resize to reproduce (transformers 5 runs the torchvision
    /// one when torchvision is installed, the PIL one otherwise).
    pub resize: ResizeBackend,
}

impl ImageProcessorConfig {
    /// Defaults of the released Qwen2.5-VL processors, sized for `v`.
    pub fn for_vision(v: &VisionConfig) -> ImageProcessorConfig {
        ImageProcessorConfig {
            patch_size: v.patch_size,
            temporal_patch_size: v.temporal_patch_size,
            merge_size: v.spatial_merge_size,
            min_pixels: 56 * 56,
            max_pixels: 12_845_056,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            resize: ResizeBackend::Torchvision,
        }
    }

    /// Reads `dir/preprocessor_config.json` when present (min/max pixels, mean,
    /// std), on top of [`Self::for_vision`].
    pub fn from_dir(dir: &Path, v: &VisionConfig) -> Result<ImageProcessorConfig> {
        let mut c = Self::for_vision(v);
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Ok(c);
        }
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io { path: file.clone(), source: e })?;
        let j: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config { file: file.clone(), msg: format!("not valid JSON: {e}") })?;
        let num = |k: &str| j.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
        let size = j.get("size");
        let size_num = |k: &str| size.and_then(|s| s.get(k)).and_then(|x| x.as_u64()).map(|x| x as usize);
        if let Some(x) = num("min_pixels").or_else(|| size_num("shortest_edge")) {
            c.min_pixels = x;
        }
        if let Some(x) = num("max_pixels").or_else(|| size_num("longest_edge")) {
            c.max_pixels = x;
        }
        let triple = |k: &str| -> Result<Option<[f32; 3]>> {
            match j.get(k) {
                None => Ok(None),
                Some(v) => serde_json::from_value::<[f32; 3]>(v.clone())
                    .map(Some)
                    .map_err(|_| Error::Config { file: file.clone(), msg: format!("{k}: expected three numbers") }),
            }
        };
        if let Some(m) = triple("image_mean")? {
            c.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            c.std = s;
        }
        Ok(c)
    }

    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }
}

/// Target (height, width): multiples of `factor` nearest the input (Python's
/// round-half-to-even), scaled down to fit `max_pixels` or up to reach
/// `min_pixels`, keeping the aspect ratio. Rejects sides under `factor` and aspect
/// ratios over 200.
pub fn smart_resize(h: usize, w: usize, factor: usize, min_pixels: usize, max_pixels: usize) -> Result<(usize, usize)> {
    let op = "smart_resize";
    if h < factor || w < factor {
        return Err(crate::arg_err!(op, "image of {w}x{h} is smaller than {factor} pixels on a side"));
    }
    if h.max(w) as f64 / h.min(w) as f64 > 200.0 {
        return Err(crate::arg_err!(op, "image of {w}x{h} has an aspect ratio over 200"));
    }
    let (hf, wf, f) = (h as f64, w as f64, factor as f64);
    let mut hb = (hf / f).round_ties_even() as usize * factor;
    let mut wb = (wf / f).round_ties_even() as usize * factor;
    if hb * wb > max_pixels {
        let beta = (hf * wf / max_pixels as f64).sqrt();
        hb = factor.max((hf / beta / f).floor() as usize * factor);
        wb = factor.max((wf / beta / f).floor() as usize * factor);
    } else if hb * wb < min_pixels {
        let beta = (min_pixels as f64 / (hf * wf)).sqrt();
        hb = (hf * beta / f).ceil() as usize * factor;
        wb = (wf * beta / f).ceil() as usize * factor;
    }
    Ok((hb, wb))
}

/// Most pixels an input image may declare: 64 Mi, an 8192 x 8192 photo (the
/// paper's images are at most 960 x 540 after its resize; MVImgNet's frames
/// 1920 x 1080). A file declaring more is refused from its header, before any
/// decoding: a 48 KB 1-bit PNG can declare 20000 x 20000 pixels.
pub const MAX_IMAGE_PIXELS: u64 = 64 << 20;

/// Refuses dimensions past [`MAX_IMAGE_PIXELS`] (or of zero), naming `what`.
pub fn check_image_dimensions(w: u32, h: u32, what: &str) -> std::result::Result<(), String> {
    let px = w as u64 * h as u64;
    if px == 0 || px > MAX_IMAGE_PIXELS {
        return Err(format!(
            "{what}: the image declares {w} x {h} pixels; images of 1 to {MAX_IMAGE_PIXELS} pixels are read (refused before decoding)"
        ));
    }
    Ok(())
}

/// Reads the header, checks the dimensions, then decodes to RGB: JPEGs as
/// libjpeg-turbo decodes them (what PIL, hence transformers, reads: the
/// accurate integer IDCT and "fancy" chroma upsampling, through mozjpeg, built
/// on the same libjpeg-turbo code), PNGs and the rest with the `image` crate,
/// its allocation capped at what the dimensions need. The EXIF orientation is
/// applied, as transformers' `load_image` does (`ImageOps.exif_transpose`).
fn decode_checked(bytes: &[u8], what: &str) -> Result<RgbImage> {
    let op = "decode_image";
    let bad = |e: &dyn std::fmt::Display| crate::arg_err!(op, "{what}: cannot decode image: {e}");
    use image::ImageDecoder as _;
    // The decoder reads the header first: its dimensions are checked before
    // a pixel is decoded.
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(&e))?;
    let format = reader.format();
    let mut decoder = reader.into_decoder().map_err(|e| bad(&e))?;
    let (w, h) = decoder.dimensions();
    check_image_dimensions(w, h, what).map_err(|m| crate::arg_err!(op, "{m}"))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = match format {
        Some(image::ImageFormat::Jpeg) => match decode_jpeg_libjpeg(bytes) {
            Some(rgb) => image::DynamicImage::ImageRgb8(rgb),
            // CMYK / YCCK JPEGs, which libjpeg does not turn into RGB.
            None => image::DynamicImage::from_decoder(decoder).map_err(|e| bad(&e))?,
        },
        _ => {
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(w);
            limits.max_image_height = Some(h);
            // 16-bit RGBA is the widest a PNG decodes to, plus the RGB copy.
            limits.max_alloc = Some(w as u64 * h as u64 * 11);
            decoder.set_limits(limits).map_err(|e| bad(&e))?;
            image::DynamicImage::from_decoder(decoder).map_err(|e| bad(&e))?
        }
    };
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}

/// libjpeg's decode to RGB (accurate integer IDCT, fancy upsampling), or None
/// when libjpeg cannot produce RGB (CMYK) or fails (the caller's decoder then
/// reports the error). Its error handler unwinds; that is caught here.
fn decode_jpeg_libjpeg(bytes: &[u8]) -> Option<RgbImage> {
    std::panic::catch_unwind(|| {
        let mut d = mozjpeg::Decompress::new_mem(bytes).ok()?;
        d.dct_method(mozjpeg::DctMethod::IntegerSlow);
        d.do_fancy_upsampling(true);
        let mut started = d.rgb().ok()?;
        let (w, h) = (started.width() as u32, started.height() as u32);
        let data = started.read_scanlines::<u8>().ok()?;
        started.finish().ok()?;
        RgbImage::from_raw(w, h, data)
    })
    .ok()
    .flatten()
}

/// Decodes a PNG or JPEG file to RGB; the error names the file. Images past
/// [`MAX_IMAGE_PIXELS`] are refused from their header.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    decode_checked(&bytes, &path.display().to_string())
}

/// Decodes PNG or JPEG bytes (e.g. base64-embedded dataset images); `what` names
/// the source in errors. Images past [`MAX_IMAGE_PIXELS`] are refused from
/// their header.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<RgbImage> {
    decode_checked(bytes, what)
}

/// Pixel rows and grids for a list of images (one sample's, or a batch's in order).
#[derive(Clone, Debug)]
pub struct ProcessedImages {
    pub pixel_values: Tensor,
    pub grids: Vec<[usize; 3]>,
}

/// Resizes, normalises and patchifies `images` in order.
pub fn preprocess(images: &[RgbImage], c: &ImageProcessorConfig) -> Result<ProcessedImages> {
    let mut rows = Vec::new();
    let mut grids = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let (h, w) = smart_resize(img.height() as usize, img.width() as usize, c.factor(), c.min_pixels, c.max_pixels)
            .map_err(|e| crate::arg_err!("preprocess", "image {i}: {e}"))?;
        let resized = if (h, w) == (img.height() as usize, img.width() as usize) {
            img.clone()
        } else {
            super::resample::resize(img, w as u32, h as u32, c.resize)
        };
        let mut chw = vec![0.0f32; 3 * h * w];
        for (x, y, px) in resized.enumerate_pixels() {
            for ch in 0..3 {
                let v = px.0[ch] as f32 / 255.0;
                chw[ch * h * w + y as usize * w + x as usize] = (v - c.mean[ch]) / c.std[ch];
            }
        }
        let (r, grid) = patchify(&chw, h, w, c);
        rows.extend(r);
        grids.push(grid);
    }
    let d = 3 * c.temporal_patch_size * c.patch_size * c.patch_size;
    let n = rows.len() / d;
    Ok(ProcessedImages { pixel_values: Tensor::from_f32(rows, [n, d], Device::Cpu)?, grids })
}

/// `[3, h, w]` (one still frame, repeated over the temporal patch) to rows of
/// `[C·T·P·P]` ordered by (merge block row, merge block col, row in block, col in
/// block); inside a row: channel, frame, patch row, patch col.
pub fn patchify(chw: &[f32], h: usize, w: usize, c: &ImageProcessorConfig) -> (Vec<f32>, [usize; 3]) {
    let (p, m, tp) = (c.patch_size, c.merge_size, c.temporal_patch_size);
    let (gh, gw) = (h / p, w / p);
    let mut out = Vec::with_capacity(gh * gw * 3 * tp * p * p);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for mh in 0..m {
                for mw in 0..m {
                    let (py, px) = ((bh * m + mh) * p, (bw * m + mw) * p);
                    for ch in 0..3 {
                        for _frame in 0..tp {
                            for i in 0..p {
                                let row = ch * h * w + (py + i) * w + px;
                                out.extend_from_slice(&chw[row..row + p]);
                            }
                        }
                    }
                }
            }
        }
    }
    (out, [1, gh, gw])
}
