//! SAT-like spatial questions about rendered scenes, for GRPO and out-of-domain
//! evaluation: relative position in one view, which part is nearer, ego-motion in
//! other words, and perspective taking. Labels come from the scene geometry; pairs
//! of parts too close to call are skipped, so every label has a clear margin.

use super::qa::{McQuestion, OptionOrder};
use super::render::{Camera, Part, Scene};
use crate::rng::Philox;

fn palette_rank(colour: &str) -> usize {
    super::render::PALETTE.iter().position(|(n, _)| *n == colour).unwrap_or(usize::MAX)
}

/// Smallest horizontal separation (fraction of the image width) for left/right.
const MIN_DU: f64 = 0.06;
/// Smallest depth difference (fraction of the object radius) for nearer/farther.
const MIN_DZ: f64 = 0.25;

fn pick_two(n: usize, rng: &mut Philox) -> (usize, usize) {
    let a = (rng.next_u32() as usize) % n;
    let b = (a + 1 + (rng.next_u32() as usize) % (n - 1)) % n;
    (a, b)
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
    // Relative position in the first photo.
    let (a, b) = pick_two(parts.len(), rng);
    if let Some(left) = left_of(cam1, &parts[a], &parts[b]) {
        let q = format!(
            "In the photo, is the {} part to the left or to the right of the {} part?",
            parts[a].colour_name, parts[b].colour_name
        );
        out.push((
            McQuestion::with_order("sat_relative_position", q, &["Left", "Right"], usize::from(!left), order, rng),
            1,
        ));
    }
    // Nearer to the camera, first photo.
    let (a, b) = pick_two(parts.len(), rng);
    let (za, zb) = (cam1.pose.to_camera(parts[a].center)[2], cam1.pose.to_camera(parts[b].center)[2]);
    if (za - zb).abs() >= MIN_DZ * scene.radius {
        let (ca, cb) = (parts[a].colour_name, parts[b].colour_name);
        let q = format!("Which part is nearer to the camera, the {ca} part or the {cb} part?");
        // Fixed order lists the two colours in palette order.
        let a_first = order == OptionOrder::Shuffled || palette_rank(ca) < palette_rank(cb);
        let (first, second) = if a_first { (ca, cb) } else { (cb, ca) };
        let opts = [format!("The {first} part"), format!("The {second} part")];
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
    let (a, b) = pick_two(parts.len(), rng);
    if let Some(left) = left_of(cam2, &parts[a], &parts[b]) {
        let q = format!(
            "Seen from the camera that took the second photo, is the {} part to the left or to the right of the {} part?",
            parts[a].colour_name, parts[b].colour_name
        );
        out.push((McQuestion::with_order("sat_perspective", q, &["Left", "Right"], usize::from(!left), order, rng), 2));
    }
    out
}
