//! SAT-like spatial questions about rendered scenes, for GRPO and out-of-domain
//! evaluation: relative position in one view, which part is nearer, ego-motion in
//! other words, and perspective taking. Labels come from the scene geometry; pairs
//! of parts too close to call are skipped, so every label has a clear margin.

use super::qa::{McQuestion, OptionOrder};
use super::render::{Camera, Part, Scene, visible_parts};
use crate::rng::Philox;

fn palette_rank(colour: &str) -> usize {
    super::render::PALETTE.iter().position(|(n, _)| *n == colour).unwrap_or(usize::MAX)
}

/// Smallest horizontal separation (fraction of the image width) for left/right.
const MIN_DU: f64 = 0.06;
/// Smallest depth difference (fraction of the object radius) for nearer/farther.
const MIN_DZ: f64 = 0.25;

/// Two different entries of `from` (None with fewer than two).
fn pick_two(from: &[usize], rng: &mut Philox) -> Option<(usize, usize)> {
    let n = from.len();
    if n < 2 {
        return None;
    }
    let a = (rng.next_u32() as usize) % n;
    let b = (a + 1 + (rng.next_u32() as usize) % (n - 1)) % n;
    Some((from[a], from[b]))
}

/// Left/right of part `a` relative to part `b` seen from `cam`, if clear.
fn left_of(cam: &Camera, a: &Part, b: &Part) -> Option<bool> {
    let (ua, _, _) = cam.project(a.center);
    let (ub, _, _) = cam.project(b.center);
    let du = (ua - ub) / cam.width as f64;
    (du.abs() >= MIN_DU).then_some(du < 0.0)
}

/// Questions about the pair (cam1, cam2) of `scene`: each with the number of
/// images it shows (1: the first photo only, 2: both).
pub fn sat_questions(
    scene: &Scene,
    cam1: &Camera,
    cam2: &Camera,
    order: OptionOrder,
    rng: &mut Philox,
) -> Vec<(McQuestion, usize)> {
    let mut out = Vec::new();
    let parts = &scene.parts;
    let noun = scene.noun;
    // Questions name only parts the photo they are about shows.
    let (seen1, seen2) = (visible_parts(scene, cam1), visible_parts(scene, cam2));
    // Relative position in the first photo.
    let pair = pick_two(&seen1, rng);
    if let Some(left) = pair.and_then(|(a, b)| left_of(cam1, &parts[a], &parts[b])) {
        let (a, b) = pair.expect("checked");
        let q = format!(
            "In the photo, is the {} {noun} to the left or to the right of the {} {noun}?",
            parts[a].colour_name, parts[b].colour_name
        );
        out.push((
            McQuestion::with_order("sat_relative_position", q, &["Left", "Right"], usize::from(!left), order, rng),
            1,
        ));
    }
    // Nearer to the camera, first photo.
    let depth =
        |(a, b): (usize, usize)| (cam1.pose.to_camera(parts[a].center)[2], cam1.pose.to_camera(parts[b].center)[2]);
    let pair = pick_two(&seen1, rng).filter(|&p| (depth(p).0 - depth(p).1).abs() >= MIN_DZ * scene.radius);
    if let Some((a, b)) = pair {
        let (za, zb) = depth((a, b));
        let (ca, cb) = (parts[a].colour_name, parts[b].colour_name);
        let q = format!("Which {noun} is nearer to the camera, the {ca} {noun} or the {cb} {noun}?");
        // Fixed order lists the two colours in palette order.
        let a_first = order == OptionOrder::Shuffled || palette_rank(ca) < palette_rank(cb);
        let (first, second) = if a_first { (ca, cb) } else { (cb, ca) };
        let opts = [format!("The {first} {noun}"), format!("The {second} {noun}")];
        let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
        let a_nearer = za < zb;
        let correct = usize::from(a_nearer != a_first);
        out.push((McQuestion::with_order("sat_nearer", q, &opts, correct, order, rng), 1));
    }
    // Ego-motion in other words: orbit direction seen from above.
    let ccw = cam2.orbit_deg > cam1.orbit_deg;
    let q = "Seen from above, did the camera circle the object clockwise or counterclockwise between the first and the second photo?".to_string();
    out.push((
        McQuestion::with_order("sat_ego_motion", q, &["Clockwise", "Counterclockwise"], usize::from(ccw), order, rng),
        2,
    ));
    // Perspective taking: left/right as seen from the second camera.
    let pair = pick_two(&seen2, rng);
    if let Some(left) = pair.and_then(|(a, b)| left_of(cam2, &parts[a], &parts[b])) {
        let (a, b) = pair.expect("checked");
        let q = format!(
            "Seen from the camera that took the second photo, is the {} {noun} to the left or to the right of the {} {noun}?",
            parts[a].colour_name, parts[b].colour_name
        );
        out.push((McQuestion::with_order("sat_perspective", q, &["Left", "Right"], usize::from(!left), order, rng), 2));
    }
    out
}
