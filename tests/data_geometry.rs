//! Viewpoint geometry on constructed poses, and synthetic labels re-derived from
//! the renderer's known orbit angles.

use actial::data::geometry::{PairFilter, Pose, Reject, Side, quat_to_mat, relative_motion, viewpoint_truth};
use actial::data::render::orbit_camera;
use actial::data::synth::{SynthConfig, synth_pair};

/// A camera at `eye` looking along `dir` (world up = −y, so the identity pose is a
/// camera at the origin looking along +z).
fn cam(eye: [f64; 3], dir: [f64; 3]) -> Pose {
    Pose::look_at(eye, [eye[0] + dir[0], eye[1] + dir[1], eye[2] + dir[2]], [0.0, -1.0, 0.0])
}

fn assert_mat_eq(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) {
    let err = a.iter().flatten().zip(b.iter().flatten()).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(err < 1e-12, "{a:?} vs {b:?}");
}

fn heading(deg: f64) -> [f64; 3] {
    [deg.to_radians().sin(), 0.0, deg.to_radians().cos()]
}

#[test]
fn identity_convention() {
    let p = cam([0.0; 3], [0.0, 0.0, 1.0]);
    assert_mat_eq(&p.r, &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
    // COLMAP quaternion (w, x, y, z) of +90 degrees about y.
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let m = quat_to_mat([h, 0.0, h, 0.0]);
    assert_mat_eq(&m, &[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]);
}

#[test]
fn pure_yaw_each_way() {
    let c1 = cam([0.0; 3], [0.0, 0.0, 1.0]);
    for (deg, side) in [(30.0, Side::Right), (-30.0, Side::Left)] {
        let c2 = cam([0.0; 3], heading(deg));
        let m = relative_motion(&c1, &c2);
        assert!((m.yaw_deg - deg).abs() < 1e-9, "{m:?}");
        assert!(m.translation.iter().all(|x| x.abs() < 1e-12));
        let side_of = if m.yaw_deg > 0.0 { Side::Right } else { Side::Left };
        assert_eq!(side_of, side);
        // Turning on the spot has no sideways movement to ask about.
        assert_eq!(viewpoint_truth(&c1, &c2, &PairFilter::default()), Err(Reject::NoLateralMovement));
    }
}

#[test]
fn translation_only() {
    let c1 = cam([0.0; 3], [0.0, 0.0, 1.0]);
    let c2 = cam([1.0, 0.0, 0.2], [0.0, 0.0, 1.0]);
    let m = relative_motion(&c1, &c2);
    assert!((m.translation[0] - 1.0).abs() < 1e-12 && (m.translation[2] - 0.2).abs() < 1e-12);
    assert!(m.yaw_deg.abs() < 1e-9);
    assert_eq!(viewpoint_truth(&c1, &c2, &PairFilter::default()), Err(Reject::YawTooSmall));
    // With the yaw filter opened, the camera moved right and the object saw it go left.
    let open = PairFilter { min_yaw_deg: 0.0, ..PairFilter::default() };
    let t = viewpoint_truth(&c1, &c2, &open).unwrap();
    assert_eq!((t.camera_translation, t.object_translation), (Side::Right, Side::Left));
}

#[test]
fn orbit_moves_right_and_turns_left_and_the_object_sees_it_mirrored() {
    // Orbiting counterclockwise (seen from above) around the object: camera moves to its
    // right and turns left to keep the object in view.
    let a = orbit_camera(10.0, 0.0, 5.0, [0.0; 3], 112, 45.0);
    let b = orbit_camera(60.0, 0.0, 5.0, [0.0; 3], 112, 45.0);
    let t = viewpoint_truth(&a.pose, &b.pose, &PairFilter::default()).unwrap();
    assert_eq!(t.camera_translation, Side::Right);
    assert_eq!(t.camera_rotation, Side::Left);
    assert_eq!(t.object_translation, Side::Left);
    assert!((t.yaw_deg + 50.0).abs() < 1e-9, "{}", t.yaw_deg);
    let back = viewpoint_truth(&b.pose, &a.pose, &PairFilter::default()).unwrap();
    assert_eq!(
        (back.camera_translation, back.camera_rotation, back.object_translation),
        (Side::Left, Side::Right, Side::Right)
    );
}

#[test]
fn yaw_borders_are_inclusive() {
    let f = PairFilter::default();
    let a = orbit_camera(0.0, 0.0, 5.0, [0.0; 3], 112, 45.0);
    for (delta, ok) in [(20.0, true), (19.9, false), (100.0, true), (100.1, false), (-20.0, true), (-100.1, false)] {
        let b = orbit_camera(delta, 0.0, 5.0, [0.0; 3], 112, 45.0);
        assert_eq!(viewpoint_truth(&a.pose, &b.pose, &f).is_ok(), ok, "delta {delta}");
    }
}

#[test]
fn degenerate_poses_are_rejected_with_reasons() {
    let a = orbit_camera(0.0, 10.0, 5.0, [0.0; 3], 112, 45.0);
    assert_eq!(viewpoint_truth(&a.pose, &a.pose, &PairFilter::default()), Err(Reject::SameCamera));
    let mut nan = a.pose;
    nan.t[1] = f64::NAN;
    assert_eq!(viewpoint_truth(&a.pose, &nan, &PairFilter::default()), Err(Reject::NonFinitePose));
    assert!(!Reject::SameCamera.reason().is_empty());
    // Over the top of the object: a 60-degree rotation about a horizontal axis, with
    // some sideways drift so only the tilt rule applies.
    let low = orbit_camera(0.0, 0.0, 5.0, [0.0; 3], 112, 45.0);
    let high = orbit_camera(8.0, 60.0, 5.0, [0.0; 3], 112, 45.0);
    let open = PairFilter { min_lateral_fraction: 0.0, ..PairFilter::default() };
    assert_eq!(viewpoint_truth(&low.pose, &high.pose, &open), Err(Reject::AxisTooTilted));
}

#[test]
fn synthetic_labels_match_the_orbit_angles() {
    let c = SynthConfig { supersample: 1, ..SynthConfig::default() };
    let mut letters = [[0usize; 3]; 3];
    for i in 0..150 {
        let p = synth_pair(3, i, &c);
        let delta = p.cameras[1].orbit_deg - p.cameras[0].orbit_deg;
        assert!((20.0..=100.0).contains(&delta.abs()), "pair {i}: orbit change {delta}");
        // Independent derivation: counterclockwise (delta > 0) = moved right, turned left.
        let (moved, turned, seen) = if delta > 0.0 { ("right", "left", "left") } else { ("left", "right", "right") };
        let [q1, q2, q3] = &p.viewpoint;
        assert_eq!(q1.options[q1.answer], format!("Move to the {moved}"), "pair {i}");
        assert_eq!(q2.options[q2.answer], format!("Move to the {seen}"), "pair {i}");
        assert_eq!(q3.options[q3.answer], format!("Rotate to the {turned}"), "pair {i}");
        // The measured yaw follows the orbit change (exactly at equal pitch).
        // The measured yaw is the orbit change (up to the small pitch change between photos).
        assert!((p.truth.yaw_deg + delta).abs() < 6.0, "pair {i}: yaw {} vs orbit {delta}", p.truth.yaw_deg);
        for (k, q) in p.viewpoint.iter().enumerate() {
            assert!(!q.options[q.answer].starts_with("No "), "the no-motion option is always a distractor");
            letters[k][q.answer] += 1;
        }
        let ego = p.sat.iter().find(|(q, _)| q.kind == "sat_ego_motion").unwrap();
        assert_eq!(ego.0.options[ego.0.answer], if delta > 0.0 { "Counterclockwise" } else { "Clockwise" });
    }
    // Shuffled options: every letter is the answer sometimes, for every question.
    for row in letters {
        assert!(row.iter().all(|&n| n > 25), "letter counts {row:?}");
    }
}

#[test]
fn renderer_is_deterministic_and_shows_the_object() {
    let c = SynthConfig::default();
    let a = synth_pair(9, 4, &c);
    let b = synth_pair(9, 4, &c);
    assert_eq!(a.images[0], b.images[0]);
    assert_eq!(a.images[1], b.images[1]);
    assert_eq!(a.viewpoint, b.viewpoint);
    let other = synth_pair(9, 5, &c);
    assert_ne!(a.images[0], other.images[0]);
    // The base part's colour (shaded) shows up: some pixel is close to it in chroma.
    let base = a.scene.parts[0].colour.map(|v| v as f32);
    let chroma = |c: [f32; 3]| {
        let s = c[0] + c[1] + c[2] + 1e-3;
        [c[0] / s, c[1] / s]
    };
    let want = chroma(base);
    let hits = a.images[0]
        .pixels()
        .filter(|p| {
            let c = chroma(p.0.map(|v| v as f32));
            (c[0] - want[0]).abs() < 0.03 && (c[1] - want[1]).abs() < 0.03
        })
        .count();
    assert!(hits > 100, "only {hits} pixels of the base colour");
}

#[test]
fn cube_shows_exactly_the_faces_turned_to_the_camera() {
    use actial::data::render::{SceneStyle, part_coverage, visible_parts};
    use actial::data::synth::depth;
    let c = SynthConfig { scene: SceneStyle::Cube, ..SynthConfig::default() };
    let mut shown = [0usize; 4];
    for i in 0..40 {
        let p = synth_pair(3, i, &c);
        assert_eq!(p.scene.noun, "face");
        // Five distinct colours on the faces that can be seen.
        let mut names: Vec<&str> = p.scene.parts[..5].iter().map(|f| f.colour_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 5);
        for cam in &p.cameras {
            let cover = part_coverage(&p.scene, cam);
            let eye = cam.pose.center();
            for (k, face) in p.scene.parts.iter().enumerate() {
                let n = face.normal.expect("cube faces are flat quads");
                let to_eye = [eye[0] - face.center[0], eye[1] - face.center[1], eye[2] - face.center[2]];
                let facing = n[0] * to_eye[0] + n[1] * to_eye[1] + n[2] * to_eye[2] > 0.0;
                // A face turned away is never drawn: not one pixel of it.
                if !facing {
                    assert_eq!(cover[k].0, 0, "pair {i}: hidden face {k} has pixels");
                }
                // The top is always seen (cameras stand above the cube), the bottom never.
                if k == 4 {
                    assert!(cover[k].0 >= 25, "pair {i}: top shows {} pixels", cover[k].0);
                }
                if k == 5 {
                    assert_eq!(cover[k].0, 0);
                }
            }
            let vis = visible_parts(&p.scene, cam);
            assert!((2..=3).contains(&vis.len()), "pair {i}: {} faces visible", vis.len());
            shown[vis.len()] += 1;
            // The cube fills a good part of the frame.
            let pixels: usize = cover.iter().map(|c| c.0).sum();
            assert!(pixels > 112 * 112 / 5, "pair {i}: cube covers only {pixels} pixels");
        }
        // SAT-like questions name only faces the photo they are about shows.
        for (q, n_images) in &p.sat {
            let cam = if q.kind == "sat_perspective" { &p.cameras[1] } else { &p.cameras[0] };
            let vis = visible_parts(&p.scene, cam);
            for (k, face) in p.scene.parts.iter().enumerate() {
                if q.question.contains(&format!("the {} face", face.colour_name)) {
                    assert!(vis.contains(&k), "pair {i}: {} names a hidden face", q.kind);
                }
            }
            if q.kind == "sat_nearer" {
                assert_eq!(*n_images, 1);
                let named: Vec<usize> =
                    (0..6).filter(|&k| q.options.iter().any(|o| o.contains(p.scene.parts[k].colour_name))).collect();
                let near = (0..6).find(|&k| q.options[q.answer].contains(p.scene.parts[k].colour_name)).unwrap();
                let far = *named.iter().find(|&&k| k != near).unwrap();
                assert!(depth(cam, p.scene.parts[near].center) < depth(cam, p.scene.parts[far].center));
            }
        }
    }
    // Both two- and three-face views occur.
    assert!(shown[2] > 5 && shown[3] > 5, "views by visible faces {shown:?}");
}
