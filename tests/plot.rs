//! Charts: curves drawn in their colours, a figure's grid, text in the
//! embedded font.

use actial::plot::{Panel, draw_text, figure, line_chart};
use image::Rgb;

fn count(img: &image::RgbImage, c: [u8; 3]) -> usize {
    img.pixels().filter(|p| p.0 == c).count()
}

#[test]
fn curves_legends_and_empty_charts() {
    let up: Vec<(f64, f64)> = (1..=20).map(|s| (s as f64, s as f64 * 0.1)).collect();
    let down: Vec<(f64, f64)> = (1..=20).map(|s| (s as f64, 2.0 - s as f64 * 0.1)).collect();
    let img = line_chart("accuracy and format", "step", &[("accuracy", up), ("format", down)]).unwrap();
    assert_eq!(img.dimensions(), (720, 400));
    assert!(count(&img, [31, 119, 180]) > 300, "the first curve in blue");
    assert!(count(&img, [214, 39, 40]) > 300, "the second in red");
    let empty = line_chart("nothing yet", "step", &[("loss", vec![(1.0, f64::NAN)])]).unwrap();
    assert_eq!(count(&empty, [31, 119, 180]), 0);
    assert!(empty.pixels().any(|p| p.0 != [255, 255, 255]), "the title and 'no data' are written");
}

#[test]
fn a_figure_is_a_grid_of_panels() {
    let panel = |t| Panel { title: t, series: vec![("x", vec![(1.0, 1.0), (2.0, 3.0)])] };
    let img = figure(&[panel("a"), panel("b"), panel("c"), panel("d"), panel("e")], 3, "step").unwrap();
    assert_eq!(img.dimensions(), (3 * 720, 2 * 400));
    // The sixth cell stays empty.
    let blank = (3 * 720 * 2 / 3 + 10..3 * 720 - 10).all(|x| (410..790).all(|y| img.get_pixel(x, y).0 == [255; 3]));
    assert!(blank);
}

#[test]
fn text_is_drawn_in_the_embedded_font() {
    let mut img = image::RgbImage::from_pixel(200, 40, Rgb([255, 255, 255]));
    draw_text(&mut img, 4, 4, "answer: B", Rgb([180, 0, 0]), 16).unwrap();
    let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(inked > 100, "{inked} pixels inked");
    assert!(img.pixels().skip(200 * 30).all(|p| p.0 == [255, 255, 255]), "16 px text stays in its lines");
}
