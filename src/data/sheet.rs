//! Contact sheets: dataset items as PNG rows (their images, then the question,
//! options and answer) so a person can check labels by eye.

use image::{Rgb, RgbImage};

use super::qa::{ImageRef, QaRecord};
use crate::error::Result;

/// Text line height in pixels (13 px DejaVu Sans, ~7 px per character).
const LINE: u32 = 16;
const THUMB: u32 = 112;
const TEXT_COLS: usize = 80;

/// Greedy word wrap to `cols` characters.
fn wrap(text: &str, cols: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line");
        if !last.is_empty() && last.len() + 1 + word.len() > cols {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

fn load(r: &ImageRef) -> Result<RgbImage> {
    match r {
        ImageRef::Path(p) => crate::model::image::load_image(p),
        ImageRef::Bytes(b) => crate::model::image::decode_image(b, "embedded image"),
    }
}

/// One row per record: up to `max_images` thumbnails, then the wrapped prompt
/// (placeholders removed) and `answer: X`.
pub fn contact_sheet(records: &[QaRecord], max_images: usize) -> Result<RgbImage> {
    let text_w = TEXT_COLS as u32 * 7 + 16;
    let width = max_images as u32 * (THUMB + 4) + text_w;
    let rows: Vec<(Vec<RgbImage>, Vec<String>)> = records
        .iter()
        .map(|r| {
            let thumbs = r
                .images
                .iter()
                .take(max_images)
                .map(|i| {
                    load(i).map(|im| image::imageops::resize(&im, THUMB, THUMB, image::imageops::FilterType::Triangle))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut lines = vec![format!("{} [{}]", r.id, r.kind)];
            lines.extend(wrap(&r.prompt.replace("<image>", ""), TEXT_COLS));
            lines.push(format!("answer: {}", r.answer));
            Ok((thumbs, lines))
        })
        .collect::<Result<_>>()?;
    let heights: Vec<u32> = rows.iter().map(|(_, l)| THUMB.max(l.len() as u32 * LINE) + 8).collect();
    let mut sheet = RgbImage::from_pixel(width, heights.iter().sum::<u32>().max(1), Rgb([255, 255, 255]));
    let mut y = 0;
    for ((thumbs, lines), h) in rows.iter().zip(&heights) {
        for (i, t) in thumbs.iter().enumerate() {
            image::imageops::replace(&mut sheet, t, (i as u32 * (THUMB + 4)) as i64, (y + 4) as i64);
        }
        let tx = max_images as u32 * (THUMB + 4) + 8;
        for (k, line) in lines.iter().enumerate() {
            let colour = if k + 1 == lines.len() { Rgb([180, 0, 0]) } else { Rgb([0, 0, 0]) };
            crate::plot::draw_text(&mut sheet, tx as i32, (y + 4 + k as u32 * LINE) as i32, line, colour, 13)?;
        }
        y += h;
        for x in 0..width {
            sheet.put_pixel(x, y.saturating_sub(1), Rgb([200, 200, 200]));
        }
    }
    Ok(sheet)
}
