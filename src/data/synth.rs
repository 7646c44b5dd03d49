//! Synthetic viewpoint pairs from the procedural renderer: a random object, two
//! cameras on its orbit, the paper's three questions (labels from the camera
//! poses through the same geometry code real captures use) and SAT-like questions
//! about the same scenes.

use image::RgbImage;

use super::geometry::{PairFilter, ViewpointTruth, sub, viewpoint_truth};
use super::qa::{McQuestion, OptionOrder};
use super::render::{Camera, Scene, SceneStyle, orbit_camera, random_scene_of, render};
use super::viewpoint::viewpoint_questions;
use crate::rng::Philox;

#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Output side in pixels (square images).
    pub size: u32,
    /// Supersampling factor per axis (2 = 4 samples per pixel).
    pub supersample: u32,
    pub fov_deg: f64,
    /// Orbit angle change between the two photos, degrees (sign random).
    pub min_yaw_deg: f64,
    pub max_yaw_deg: f64,
    /// Camera elevation range (parts scenes; see [`SynthConfig::pitch_range`]) and
    /// the largest change between the photos.
    pub pitch_deg: (f64, f64),
    pub pitch_jitter_deg: f64,
    /// Camera distance as a multiple of the distance that just frames the object.
    pub distance: (f64, f64),
    /// Option layout of the questions (the paper shuffles; see `qa::OptionOrder`).
    pub option_order: OptionOrder,
    /// What the photos show.
    pub scene: SceneStyle,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            size: 112,
            supersample: 2,
            fov_deg: 45.0,
            min_yaw_deg: 20.0,
            max_yaw_deg: 100.0,
            pitch_deg: (10.0, 35.0),
            pitch_jitter_deg: 5.0,
            distance: (1.05, 1.35),
            option_order: OptionOrder::Shuffled,
            scene: SceneStyle::Parts,
        }
    }
}

impl SynthConfig {
    /// The elevation range cameras are drawn from. Cubes are seen from 20-40
    /// degrees: lower, a camera at the framing distance stands below the top face,
    /// and a view can show a single face (nothing to match across the photos).
    pub fn pitch_range(&self) -> (f64, f64) {
        match self.scene {
            SceneStyle::Parts => self.pitch_deg,
            SceneStyle::Cube | SceneStyle::KnownCube => (20.0, 40.0),
        }
    }
}

/// One rendered pair with everything known about it.
pub struct SynthPair {
    pub seed: u64,
    pub scene: Scene,
    pub cameras: [Camera; 2],
    pub images: [RgbImage; 2],
    pub truth: ViewpointTruth,
    /// The paper's three questions, options shuffled.
    pub viewpoint: [McQuestion; 3],
    /// SAT-like questions: (question, which images it shows: 1 = first only, 2 = both).
    pub sat: Vec<(McQuestion, usize)>,
}

/// Renders pair number `index` of the stream seeded by `seed`. Deterministic; the
/// orbit change is drawn inside the filter's yaw range, so every pair qualifies.
pub fn synth_pair(seed: u64, index: u64, c: &SynthConfig) -> SynthPair {
    let mut rng = Philox::new(seed, index);
    let scene = random_scene_of(c.scene, &mut rng);
    let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform() as f64;
    let target = scene.target;
    let frame = scene.radius / (c.fov_deg.to_radians() / 2.0).tan();
    let orbit1 = u(0.0, 360.0);
    let delta = u(c.min_yaw_deg, c.max_yaw_deg) * if u(0.0, 1.0) < 0.5 { -1.0 } else { 1.0 };
    let (lo, hi) = c.pitch_range();
    let pitch1 = u(lo, hi);
    let pitch2 = (pitch1 + u(-c.pitch_jitter_deg, c.pitch_jitter_deg)).clamp(lo, hi);
    let cam1 = orbit_camera(orbit1, pitch1, frame * u(c.distance.0, c.distance.1), target, c.size, c.fov_deg);
    let cam2 = orbit_camera(orbit1 + delta, pitch2, frame * u(c.distance.0, c.distance.1), target, c.size, c.fov_deg);
    let filter = PairFilter { min_yaw_deg: 0.0, max_yaw_deg: 180.0, ..PairFilter::default() };
    let truth = viewpoint_truth(&cam1.pose, &cam2.pose, &filter).expect("orbit pairs always move sideways and turn");
    let mut qrng = Philox::new(seed ^ 0x005e_ed0f_0a5e, index);
    let viewpoint = viewpoint_questions(&truth, c.option_order, &mut qrng);
    let sat = super::sat::sat_questions(&scene, &cam1, &cam2, c.option_order, &mut qrng);
    let images = [render(&scene, &cam1, c.supersample), render(&scene, &cam2, c.supersample)];
    SynthPair { seed, scene, cameras: [cam1, cam2], images, truth, viewpoint, sat }
}

/// Camera-space depth of a point: used by SAT questions and tests.
pub fn depth(cam: &Camera, x: super::geometry::Vec3) -> f64 {
    cam.pose.to_camera(x)[2]
}

/// The colours of the parts visible in the photo `cam` takes
/// ([`super::render::visible_parts`]), from left to right: what a pseudo-CoT's
/// visual analysis reports.
pub fn visible_left_to_right(scene: &Scene, cam: &Camera) -> Vec<&'static str> {
    let cover = super::render::part_coverage(scene, cam);
    let mut v = super::render::visible_parts(scene, cam);
    v.sort_by(|&a, &b| cover[a].1.total_cmp(&cover[b].1));
    v.into_iter().map(|i| scene.parts[i].colour_name).collect()
}

/// Distance between two points.
pub fn dist(a: super::geometry::Vec3, b: super::geometry::Vec3) -> f64 {
    let d = sub(a, b);
    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
}

/// The dataset rows of one pair whose images are stored at `images`: three
/// viewpoint records, the SAT-like records, and a manifest row with the ground
/// truth angles.
pub fn pair_records(
    index: u64,
    p: &SynthPair,
    images: [std::path::PathBuf; 2],
) -> (Vec<super::qa::QaRecord>, Vec<super::qa::QaRecord>, serde_json::Value) {
    use super::qa::{ImageRef, LETTER_INSTRUCTION, QaRecord};
    let t = &p.truth;
    let faces = p.cameras.map(|cam| visible_left_to_right(&p.scene, &cam));
    let meta = serde_json::json!({
        "pair": index,
        "yaw_deg": t.yaw_deg,
        "camera_translation": t.camera_translation.word(),
        "object_translation": t.object_translation.word(),
        "camera_rotation": t.camera_rotation.word(),
        "visible": faces,
        "noun": p.scene.noun,
    });
    let both: Vec<ImageRef> = images.iter().cloned().map(ImageRef::Path).collect();
    let record = |q: &McQuestion, imgs: Vec<ImageRef>, meta: serde_json::Value| QaRecord {
        id: format!("{index:06}_{}", q.kind),
        kind: q.kind.clone(),
        system: None,
        prompt: format!("{}{}", "<image>".repeat(imgs.len()), q.prompt(LETTER_INSTRUCTION)),
        images: imgs,
        response: q.letter().to_string(),
        answer: q.letter().to_string(),
        meta,
    };
    let viewpoint = p.viewpoint.iter().map(|q| record(q, both.clone(), meta.clone())).collect();
    let sat = p.sat.iter().map(|(q, n)| record(q, both[..*n].to_vec(), serde_json::json!({"pair": index}))).collect();
    let [c1, c2] = &p.cameras;
    let manifest = serde_json::json!({
        "pair": index,
        "seed": p.seed,
        "images": images.iter().map(|i| i.file_name().map(|f| f.to_string_lossy().to_string())).collect::<Vec<_>>(),
        "orbit_deg": [c1.orbit_deg, c2.orbit_deg],
        "pitch_deg": [c1.pitch_deg, c2.pitch_deg],
        "distance": [c1.distance, c2.distance],
        "yaw_deg": t.yaw_deg,
        "translation_cam1": t.translation,
        "answers": {
            "camera_translation": t.camera_translation.word(),
            "object_translation": t.object_translation.word(),
            "camera_rotation": t.camera_rotation.word(),
        },
        "world_to_camera": [{"R": c1.pose.r, "t": c1.pose.t}, {"R": c2.pose.r, "t": c2.pose.t}],
    });
    (viewpoint, sat, manifest)
}

/// One pair's rows: viewpoint records, SAT-like records, manifest row.
pub type PairRows = (Vec<super::qa::QaRecord>, Vec<super::qa::QaRecord>, serde_json::Value);

/// Renders pairs `0..pairs` of stream `seed` in parallel, saves their PNGs as
/// `img_dir/NNNNNN_{a,b}.png`, and returns each pair's [`pair_records`] in order.
/// `on_pair` is called once per finished pair (progress bars).
pub fn render_pairs(
    img_dir: &std::path::Path,
    pairs: u64,
    seed: u64,
    c: &SynthConfig,
    on_pair: &(dyn Fn() + Sync),
) -> crate::error::Result<Vec<PairRows>> {
    use rayon::prelude::*;
    std::fs::create_dir_all(img_dir)
        .map_err(|e| crate::error::Error::Io { path: img_dir.display().to_string(), source: e })?;
    (0..pairs)
        .into_par_iter()
        .map(|i| {
            let p = synth_pair(seed, i, c);
            let paths = [img_dir.join(format!("{i:06}_a.png")), img_dir.join(format!("{i:06}_b.png"))];
            for (img, path) in p.images.iter().zip(&paths) {
                img.save(path).map_err(|e| crate::arg_err!("synth", "{}: {e}", path.display()))?;
            }
            on_pair();
            Ok(pair_records(i, &p, paths))
        })
        .collect()
}
