//! Charts as PNG (training curves) with the `plotters` crate, and text on
//! images (contact sheets), in DejaVu Sans embedded in the binary
//! (assets/fonts: a fresh machine needs no installed fonts).
//!
//! Ticks are round numbers (plotters' 1-2-5 steps); steps on the x axis are
//! integers.

use std::sync::Once;

use image::{Rgb, RgbImage};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::Result;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// The family every chart and sheet uses.
pub const FAMILY: &str = "sans-serif";

fn font() {
    REGISTER.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the embedded DejaVu Sans does not parse");
        }
    });
}

fn plot_err<E: std::fmt::Debug>(e: E) -> crate::error::Error {
    crate::arg_err!("plot", "{e:?}")
}

const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e4).contains(&a) {
        format!("{v:.1e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        // The shortest form that shows a 1-2-5 tick exactly.
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One chart of a figure: a title and named curves of (x, y) points.
pub struct Panel<'a> {
    pub title: &'a str,
    pub series: Vec<(&'a str, Vec<(f64, f64)>)>,
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel, x_label: &str) -> Result<()> {
    let pts: Vec<(f64, f64)> =
        p.series.iter().flat_map(|(_, s)| s.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let title_style = (FAMILY, 18).into_font();
    if pts.is_empty() {
        area.titled(p.title, title_style).map_err(plot_err)?;
        let (w, h) = area.dim_in_pixel();
        area.draw_text(
            "no data",
            &(FAMILY, 14).into_font().color(&RGBColor(120, 120, 120)),
            (w as i32 / 2 - 25, h as i32 / 2),
        )
        .map_err(plot_err)?;
        return Ok(());
    }
    let fold = |f: fn(&(f64, f64)) -> f64| {
        pts.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
    };
    let (x0, x1) = fold(|p| p.0);
    let (x0, x1) = (x0.floor() as i64, (x1.ceil() as i64).max(x0.floor() as i64 + 1));
    let (mut y0, mut y1) = fold(|p| p.1);
    if y1 - y0 < 1e-12 {
        let d = 0.5 * y0.abs().max(1e-3);
        (y0, y1) = (y0 - d, y1 + d);
    }
    let pad = (y1 - y0) * 0.05;
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, title_style)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .x_labels(8)
        .y_labels(6)
        .y_label_formatter(&|v| fmt_tick(*v))
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_err)?;
    for (k, (name, s)) in p.series.iter().enumerate() {
        let c = COLOURS[k % COLOURS.len()];
        // Steps are integers; a curve's x values are rounded onto them.
        let good: Vec<(i64, f64)> =
            s.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| (x.round() as i64, y)).collect();
        let line = chart.draw_series(LineSeries::new(good.clone(), c.stroke_width(2))).map_err(plot_err)?;
        line.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        if good.len() == 1 {
            chart.draw_series(good.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(plot_err)?;
        }
    }
    if p.series.len() > 1 {
        chart
            .configure_series_labels()
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// A figure of `panels` in a grid `columns` wide, each 720 x 400 pixels.
pub fn figure(panels: &[Panel], columns: usize, x_label: &str) -> Result<RgbImage> {
    font();
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let (w, h) = (720 * columns as u32, 400 * rows as u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let areas = root.split_evenly((rows, columns));
        for (p, area) in panels.iter().zip(&areas) {
            draw_panel(area, p, x_label)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(RgbImage::from_raw(w, h, buf).expect("the buffer holds w x h RGB pixels"))
}

/// One chart of `series` (each a name and its (x, y) points) with a title and,
/// for several curves, a legend. Non-finite points are skipped.
pub fn line_chart(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<RgbImage> {
    figure(&[Panel { title, series: series.to_vec() }], 1, x_label)
}

/// Draws `text` on `img` at (x, y) (top left), `size` pixels high.
pub fn draw_text(img: &mut RgbImage, x: i32, y: i32, text: &str, colour: Rgb<u8>, size: u32) -> Result<()> {
    font();
    let (w, h) = img.dimensions();
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    let style = (FAMILY, size).into_font().color(&RGBColor(colour.0[0], colour.0[1], colour.0[2]));
    root.draw_text(text, &style, (x, y)).map_err(plot_err)?;
    root.present().map_err(plot_err)
}
