//! Line charts as PNG (training curves), drawn with the image crate and the 8x8
//! bitmap font of the contact sheets. Plotting crates need a TrueType font at run
//! time, which fresh machines lack; a chart of a few curves does not.

use image::{Rgb, RgbImage};

use crate::data::sheet::draw_text;

const W: u32 = 720;
const H: u32 = 400;
const LEFT: u32 = 80;
const RIGHT: u32 = 20;
const TOP: u32 = 36;
const BOTTOM: u32 = 48;

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e4).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 || (v.fract() == 0.0 && a >= 1.0) {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, c);
        }
    }
}

/// A chart of `series` (each a name and its (x, y) points), with axes, five ticks
/// per axis, a title and a legend. Non-finite points are skipped.
pub fn line_chart(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let pts: Vec<(f64, f64)> =
        series.iter().flat_map(|(_, p)| p.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    draw_text(&mut img, LEFT, 12, title, Rgb([0, 0, 0]));
    if pts.is_empty() {
        draw_text(&mut img, LEFT, H / 2, "no data", Rgb([120, 120, 120]));
        return img;
    }
    let (mut x0, mut x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x1 - x0 < 1e-12 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if y1 - y0 < 1e-12 {
        y0 -= 0.5 * y0.abs().max(1e-3);
        y1 += 0.5 * y1.abs().max(1e-3);
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let sx = |x: f64| LEFT as f64 + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP as f64 + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let grey = Rgb([200, 200, 200]);
    let black = Rgb([0, 0, 0]);
    for i in 0..=4 {
        let t = i as f64 / 4.0;
        let (xv, yv) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        line(&mut img, (sx(xv), TOP as f64), (sx(xv), (H - BOTTOM) as f64), grey);
        line(&mut img, (LEFT as f64, sy(yv)), ((W - RIGHT) as f64, sy(yv)), grey);
        let xs = fmt_tick(xv);
        draw_text(&mut img, (sx(xv) as u32).saturating_sub(4 * xs.len() as u32), H - BOTTOM + 8, &xs, black);
        let ys = fmt_tick(yv);
        draw_text(&mut img, LEFT.saturating_sub(8 * ys.len() as u32 + 6), sy(yv) as u32 - 4, &ys, black);
    }
    line(&mut img, (LEFT as f64, TOP as f64), (LEFT as f64, (H - BOTTOM) as f64), black);
    line(&mut img, (LEFT as f64, (H - BOTTOM) as f64), ((W - RIGHT) as f64, (H - BOTTOM) as f64), black);
    draw_text(&mut img, LEFT + (pw as u32) / 2 - 4 * x_label.len() as u32, H - 18, x_label, black);
    let colours = [Rgb([31, 119, 180]), Rgb([214, 39, 40]), Rgb([44, 160, 44]), Rgb([148, 103, 189])];
    for (k, (name, p)) in series.iter().enumerate() {
        let c = colours[k % colours.len()];
        let good: Vec<&(f64, f64)> = p.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        for w in good.windows(2) {
            line(&mut img, (sx(w[0].0), sy(w[0].1)), (sx(w[1].0), sy(w[1].1)), c);
        }
        if good.len() == 1 {
            let (x, y) = (sx(good[0].0) as u32, sy(good[0].1) as u32);
            for d in 0..3 {
                img.put_pixel((x + d).min(W - 1), y.min(H - 1), c);
            }
        }
        draw_text(&mut img, W - RIGHT - 8 * name.len() as u32 - 8, TOP + 4 + 12 * k as u32, name, c);
    }
    img
}
