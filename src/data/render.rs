//! A small procedural renderer for synthetic viewpoint data: object-centric scenes
//! (asymmetric objects made of coloured box parts, on a checkered ground), a
//! directional light, cameras on an orbit, and a CPU rasterizer with a depth
//! buffer. Everything is deterministic in the seed.
//!
//! World frame: y is up, the object stands on the ground plane y = 0 around the
//! origin. Camera poses use the project's convention (world-to-camera, OpenCV
//! axes; see `geometry`).

use image::RgbImage;

use super::geometry::{Pose, Vec3, add, dot, mat_vec, normalize, scale, sub, transpose};
use crate::rng::Philox;

/// Colours parts can take, with the names questions use. Distinct hues, none close
/// to the ground's greys.
pub const PALETTE: [(&str, [u8; 3]); 7] = [
    ("red", [210, 40, 40]),
    ("green", [40, 170, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [235, 205, 40]),
    ("orange", [240, 130, 30]),
    ("purple", [140, 60, 190]),
    ("cyan", [40, 200, 210]),
];

/// One box-shaped part of the object.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub center: Vec3,
    pub half: Vec3,
    /// Rotation about the vertical axis, radians.
    pub yaw: f64,
    pub colour: [u8; 3],
    pub colour_name: &'static str,
    /// Set for a flat quad (one half extent zero): its outward normal, the only
    /// side it is seen from. Boxes derive their face normals from the centre.
    pub normal: Option<Vec3>,
}

impl Part {
    /// The 8 corners in world coordinates.
    fn corners(&self) -> [Vec3; 8] {
        let (c, s) = (self.yaw.cos(), self.yaw.sin());
        let mut out = [[0.0; 3]; 8];
        for (i, o) in out.iter_mut().enumerate() {
            let l = [
                if i & 1 == 0 { -self.half[0] } else { self.half[0] },
                if i & 2 == 0 { -self.half[1] } else { self.half[1] },
                if i & 4 == 0 { -self.half[2] } else { self.half[2] },
            ];
            *o = add(self.center, [c * l[0] + s * l[2], l[1], -s * l[0] + c * l[2]]);
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub parts: Vec<Part>,
    /// Unit vector towards the light.
    pub light: Vec3,
    pub ground: [[u8; 3]; 2],
    /// Radius of a sphere around `target` holding the object (for framing).
    pub radius: f64,
    /// The point cameras look at.
    pub target: Vec3,
    /// What questions call one of `parts`: "part" or "face".
    pub noun: &'static str,
}

/// Which kind of object a synthetic scene shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SceneStyle {
    /// An asymmetric object of 4-5 coloured box parts (the default).
    #[default]
    Parts,
    /// One frame-filling cube whose five visible faces have five colours, drawn
    /// anew for every scene (a 4-block vision tower reads big faces, not small parts).
    Cube,
    /// The same cube in every scene: each face always has the same colour (the
    /// tiny preset). Which faces a photo shows, and where, then tells the camera's
    /// heading around the cube from that photo alone; with colours drawn anew the
    /// direction of a turn needs matching a colour across the two photos, which a
    /// model trained from nothing does not learn in CPU minutes (docs/TINY_BASE.md).
    KnownCube,
}

impl std::str::FromStr for SceneStyle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "parts" => Ok(SceneStyle::Parts),
            "cube" => Ok(SceneStyle::Cube),
            "known-cube" => Ok(SceneStyle::KnownCube),
            _ => Err(format!("unknown scene style {s:?} (expected \"parts\", \"cube\" or \"known-cube\")")),
        }
    }
}

/// A random scene of the given style.
pub fn random_scene_of(style: SceneStyle, rng: &mut Philox) -> Scene {
    match style {
        SceneStyle::Parts => random_scene(rng),
        SceneStyle::Cube => random_cube(rng, false),
        SceneStyle::KnownCube => random_cube(rng, true),
    }
}

/// Palette indices of the known cube's faces +x, -x, +z, -z, top: going round
/// the sides (+x, +z, -x, -z) red, green, blue, yellow; the top orange.
pub const KNOWN_CUBE: [usize; 5] = [0, 2, 1, 3, 4];

/// A unit cube standing on the ground with a random yaw, built from six flat
/// quads (one `Part` per face, centred on the face, outward normal set) so that
/// every face has its own colour and its own entry in the id buffer, and a face
/// turned away from the camera is never drawn. The four sides and the top take five
/// distinct palette colours (random, or with `known_colours` always [`KNOWN_CUBE`]);
/// the bottom, never seen from above the ground, is grey.
pub fn random_cube(rng: &mut Philox, known_colours: bool) -> Scene {
    let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform() as f64;
    let yaw = u(0.0, std::f64::consts::TAU);
    let mut colours: Vec<usize> = (0..PALETTE.len()).collect();
    let mut faces = Vec::new();
    let h = 0.5;
    // (half extents, outward normal in the cube's frame): +x, -x, +z, -z, top, bottom.
    let layout: [(Vec3, Vec3); 6] = [
        ([0.0, h, h], [1.0, 0.0, 0.0]),
        ([0.0, h, h], [-1.0, 0.0, 0.0]),
        ([h, h, 0.0], [0.0, 0.0, 1.0]),
        ([h, h, 0.0], [0.0, 0.0, -1.0]),
        ([h, 0.0, h], [0.0, 1.0, 0.0]),
        ([h, 0.0, h], [0.0, -1.0, 0.0]),
    ];
    let (c, s) = (yaw.cos(), yaw.sin());
    let turn = |v: Vec3| [c * v[0] + s * v[2], v[1], -s * v[0] + c * v[2]];
    for (k, (half, n)) in layout.into_iter().enumerate() {
        let local = add([0.0, h, 0.0], scale(n, h));
        let (colour, colour_name) = if k < 5 && known_colours {
            (PALETTE[KNOWN_CUBE[k]].1, PALETTE[KNOWN_CUBE[k]].0)
        } else if k < 5 {
            let ci = colours.remove((u(0.0, 1.0) * colours.len() as f64) as usize % colours.len());
            (PALETTE[ci].1, PALETTE[ci].0)
        } else {
            ([90, 90, 90], "grey")
        };
        faces.push(Part { center: turn(local), half, yaw, colour, colour_name, normal: Some(turn(n)) });
    }
    let light = normalize([u(-0.8, 0.8), 1.0, u(-0.8, 0.8)]);
    let g = u(110.0, 160.0) as u8;
    Scene {
        parts: faces,
        light,
        ground: [[g, g, g.saturating_sub(8)], [g.saturating_sub(45), g.saturating_sub(45), g.saturating_sub(50)]],
        radius: 3f64.sqrt() * h,
        target: [0.0, h, 0.0],
        noun: "face",
    }
}

/// A camera on an orbit around the object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    pub pose: Pose,
    /// Focal length in pixels; square pixels, principal point at the centre.
    pub focal: f64,
    pub width: u32,
    pub height: u32,
    /// Orbit angle in degrees (increasing = moving to the camera's right, i.e.
    /// counter-clockwise seen from above).
    pub orbit_deg: f64,
    /// Elevation above the ground plane in degrees.
    pub pitch_deg: f64,
    pub distance: f64,
}

/// Where a camera on the orbit `(orbit_deg, pitch_deg, distance)` stands, looking
/// at `target`: `target + distance·(sin θ cos φ, sin φ, cos θ cos φ)`.
pub fn orbit_camera(orbit_deg: f64, pitch_deg: f64, distance: f64, target: Vec3, size: u32, fov_deg: f64) -> Camera {
    let (th, ph) = (orbit_deg.to_radians(), pitch_deg.to_radians());
    let eye = add(target, scale([th.sin() * ph.cos(), ph.sin(), th.cos() * ph.cos()], distance));
    let focal = size as f64 / 2.0 / (fov_deg.to_radians() / 2.0).tan();
    Camera {
        pose: Pose::look_at(eye, target, [0.0, 1.0, 0.0]),
        focal,
        width: size,
        height: size,
        orbit_deg,
        pitch_deg,
        distance,
    }
}

impl Camera {
    /// Pixel coordinates (u right, v down) and depth of a world point.
    pub fn project(&self, x: Vec3) -> (f64, f64, f64) {
        let p = self.pose.to_camera(x);
        let (cx, cy) = (self.width as f64 / 2.0, self.height as f64 / 2.0);
        (self.focal * p[0] / p[2] + cx, self.focal * p[1] / p[2] + cy, p[2])
    }
}

/// A random object: a base block plus 3–4 parts attached asymmetrically (a tower
/// at one corner, an arm out of one side, a block on top, a post), each in its own
/// colour; a random light from above.
pub fn random_scene(rng: &mut Philox) -> Scene {
    let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform() as f64;
    let mut colours: Vec<usize> = (0..PALETTE.len()).collect();
    let mut parts = Vec::new();
    let base_half = [u(0.5, 0.8), u(0.15, 0.3), u(0.35, 0.6)];
    let base_yaw = u(0.0, std::f64::consts::TAU);
    let mut pick = |r: f64| colours.remove((r * colours.len() as f64) as usize % colours.len());
    let base_colour = pick(u(0.0, 1.0));
    parts.push((base_half, [0.0, base_half[1], 0.0], base_colour));
    // Tower on a corner (sign choices make the object chiral / asymmetric).
    let (sx, sz) = (if u(0.0, 1.0) < 0.5 { -1.0 } else { 1.0 }, if u(0.0, 1.0) < 0.5 { -1.0 } else { 1.0 });
    let th = [u(0.12, 0.2), u(0.35, 0.6), u(0.12, 0.2)];
    parts.push((
        th,
        [sx * (base_half[0] - th[0]), 2.0 * base_half[1] + th[1], sz * (base_half[2] - th[2])],
        pick(u(0.0, 1.0)),
    ));
    // Arm out of the side opposite the tower.
    let ah = [u(0.25, 0.4), u(0.08, 0.12), u(0.1, 0.15)];
    parts.push((ah, [-sx * (base_half[0] + ah[0] * 0.9), base_half[1] * 1.2, u(-0.2, 0.2)], pick(u(0.0, 1.0))));
    // Block on top, off-centre towards the other z side.
    let bh = [u(0.15, 0.25), u(0.1, 0.18), u(0.15, 0.25)];
    parts.push((bh, [u(-0.2, 0.2), 2.0 * base_half[1] + bh[1], -sz * u(0.1, 0.25)], pick(u(0.0, 1.0))));
    if u(0.0, 1.0) < 0.6 {
        // A post in front.
        let ph = [u(0.06, 0.1), u(0.15, 0.3), u(0.06, 0.1)];
        parts.push((ph, [u(-0.3, 0.3), ph[1], sz * (base_half[2] + ph[2] + 0.15)], pick(u(0.0, 1.0))));
    }
    let (c, s) = (base_yaw.cos(), base_yaw.sin());
    let parts: Vec<Part> = parts
        .into_iter()
        .map(|(half, local, ci)| Part {
            center: [c * local[0] + s * local[2], local[1], -s * local[0] + c * local[2]],
            half,
            yaw: base_yaw,
            colour: PALETTE[ci].1,
            colour_name: PALETTE[ci].0,
            normal: None,
        })
        .collect();
    let target = [0.0, 0.3, 0.0];
    let radius =
        parts.iter().flat_map(|p| p.corners()).map(|x| dot(sub(x, target), sub(x, target)).sqrt()).fold(0.0, f64::max);
    let light = normalize([u(-0.8, 0.8), 1.0, u(-0.8, 0.8)]);
    let g = u(110.0, 160.0) as u8;
    Scene {
        parts,
        light,
        ground: [[g, g, g.saturating_sub(8)], [g.saturating_sub(45), g.saturating_sub(45), g.saturating_sub(50)]],
        radius,
        target,
        noun: "part",
    }
}

/// Renders `scene` from `cam`, supersampled `ss`x`ss` per pixel.
pub fn render(scene: &Scene, cam: &Camera, ss: u32) -> RgbImage {
    let (w, h) = (cam.width * ss, cam.height * ss);
    let hi = Camera { focal: cam.focal * ss as f64, width: w, height: h, ..*cam };
    let mut colour = vec![[0.0f32; 3]; (w * h) as usize];
    let mut depth = vec![f64::INFINITY; (w * h) as usize];
    draw_ground_and_sky(scene, &hi, &mut colour, &mut depth);
    for part in &scene.parts {
        draw_box(scene, part, &hi, None, &mut colour, &mut depth);
    }
    // Box-filter down to the output size.
    let n = (ss * ss) as f32;
    RgbImage::from_fn(cam.width, cam.height, |x, y| {
        let mut acc = [0.0f32; 3];
        for dy in 0..ss {
            for dx in 0..ss {
                let c = colour[((y * ss + dy) * w + x * ss + dx) as usize];
                (0..3).for_each(|i| acc[i] += c[i]);
            }
        }
        image::Rgb(acc.map(|v| (v / n).round().clamp(0.0, 255.0) as u8))
    })
}

/// What each part shows in the photo `cam` takes (no supersampling): visible
/// pixel count and the mean column of those pixels (NaN when hidden). Questions
/// about a single photo ask only about parts that are actually visible.
pub fn part_coverage(scene: &Scene, cam: &Camera) -> Vec<(usize, f64)> {
    let n = (cam.width * cam.height) as usize;
    let mut ids = vec![[0.0f32; 3]; n];
    let mut depth = vec![f64::INFINITY; n];
    for (i, part) in scene.parts.iter().enumerate() {
        draw_box(scene, part, cam, Some(i as f32 + 1.0), &mut ids, &mut depth);
    }
    let mut acc = vec![(0usize, 0.0f64); scene.parts.len()];
    for (px, c) in ids.iter().enumerate() {
        if c[0] >= 1.0 {
            let a = &mut acc[c[0] as usize - 1];
            a.0 += 1;
            a.1 += (px % cam.width as usize) as f64 + 0.5;
        }
    }
    acc.into_iter().map(|(k, s)| (k, if k > 0 { s / k as f64 } else { f64::NAN })).collect()
}

/// A part counts as visible from this fraction of the photo's pixels (25 of
/// 112x112).
pub const MIN_VISIBLE_FRACTION: f64 = 25.0 / (112.0 * 112.0);

/// Indices of the parts visible in the photo `cam` takes (see
/// [`MIN_VISIBLE_FRACTION`]), in scene order.
pub fn visible_parts(scene: &Scene, cam: &Camera) -> Vec<usize> {
    let min = MIN_VISIBLE_FRACTION * (cam.width * cam.height) as f64;
    part_coverage(scene, cam).iter().enumerate().filter(|(_, c)| c.0 as f64 >= min).map(|(i, _)| i).collect()
}

const AMBIENT: f32 = 0.35;
const GROUND_RADIUS: f64 = 3.5;
const CHECK: f64 = 0.4;

fn draw_ground_and_sky(scene: &Scene, cam: &Camera, colour: &mut [[f32; 3]], depth: &mut [f64]) {
    let rt = transpose(&cam.pose.r);
    let eye = cam.pose.center();
    let (cx, cy) = (cam.width as f64 / 2.0, cam.height as f64 / 2.0);
    let diffuse = (1.0 - AMBIENT) * scene.light[1].max(0.0) as f32;
    for v in 0..cam.height {
        for u in 0..cam.width {
            let i = (v * cam.width + u) as usize;
            let d_cam = [(u as f64 + 0.5 - cx) / cam.focal, (v as f64 + 0.5 - cy) / cam.focal, 1.0];
            let d = mat_vec(&rt, d_cam);
            let hit = if d[1] < -1e-9 { Some(-eye[1] / d[1]) } else { None };
            match hit.map(|t| (t, add(eye, scale(d, t)))) {
                Some((t, p)) if p[0] * p[0] + p[2] * p[2] < GROUND_RADIUS * GROUND_RADIUS => {
                    let parity = ((p[0] / CHECK).floor() as i64 + (p[2] / CHECK).floor() as i64).rem_euclid(2) as usize;
                    // Soft contact shadow under the object.
                    let r2 = p[0] * p[0] + p[2] * p[2];
                    let shadow = 1.0 - 0.35 * (-r2 / (scene.radius * scene.radius * 0.5)).exp() as f32;
                    let shade = (AMBIENT + diffuse) * shadow;
                    colour[i] = scene.ground[parity].map(|c| c as f32 * shade);
                    depth[i] = t; // d_cam has z = 1, so t is the camera-space depth
                }
                _ => {
                    // Sky: a vertical gradient.
                    let k = (v as f32 / cam.height as f32).clamp(0.0, 1.0);
                    colour[i] = [150.0 + 60.0 * k, 180.0 + 40.0 * k, 225.0];
                }
            }
        }
    }
}

/// The 6 faces of a box as corner indices (counter-clockwise seen from outside is
/// not required: both windings are drawn, the depth buffer resolves visibility).
const FACES: [[usize; 4]; 6] = [[0, 2, 6, 4], [1, 3, 7, 5], [0, 1, 5, 4], [2, 3, 7, 6], [0, 1, 3, 2], [4, 5, 7, 6]];

/// Draws one part, shaded by the light, or (with `id`) flat in `[id, 0, 0]` for
/// the id buffer of [`part_coverage`].
fn draw_box(scene: &Scene, part: &Part, cam: &Camera, id: Option<f32>, colour: &mut [[f32; 3]], depth: &mut [f64]) {
    let corners = part.corners();
    let centre = part.center;
    for face in FACES {
        let q = face.map(|i| corners[i]);
        // Outward normal: from the box centre towards the face centre.
        let fc = scale(add(add(q[0], q[1]), add(q[2], q[3])), 0.25);
        let n = part.normal.unwrap_or_else(|| normalize(sub(fc, centre)));
        // Back faces (pointing away from the camera) are hidden by the box itself.
        if dot(n, sub(cam.pose.center(), fc)) <= 0.0 {
            continue;
        }
        let shade = AMBIENT + (1.0 - AMBIENT) * dot(n, scene.light).max(0.0) as f32;
        let c = match id {
            Some(id) => [id, 0.0, 0.0],
            None => part.colour.map(|v| v as f32 * shade),
        };
        let p = q.map(|x| cam.project(x));
        raster_triangle([p[0], p[1], p[2]], c, cam, colour, depth);
        raster_triangle([p[0], p[2], p[3]], c, cam, colour, depth);
    }
}

/// Fills a screen-space triangle with a flat colour, depth-tested with depth
/// interpolated perspective-correctly (linear in 1/z).
fn raster_triangle(p: [(f64, f64, f64); 3], c: [f32; 3], cam: &Camera, colour: &mut [[f32; 3]], depth: &mut [f64]) {
    if p.iter().any(|v| v.2 <= 1e-3) {
        return; // behind the camera: cannot happen for orbit cameras outside the object
    }
    let area = (p[1].0 - p[0].0) * (p[2].1 - p[0].1) - (p[1].1 - p[0].1) * (p[2].0 - p[0].0);
    if area.abs() < 1e-12 {
        return;
    }
    let min_x = p.iter().map(|v| v.0).fold(f64::INFINITY, f64::min).floor().max(0.0) as u32;
    let max_x = p.iter().map(|v| v.0).fold(f64::NEG_INFINITY, f64::max).ceil().min(cam.width as f64 - 1.0) as i64;
    let min_y = p.iter().map(|v| v.1).fold(f64::INFINITY, f64::min).floor().max(0.0) as u32;
    let max_y = p.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max).ceil().min(cam.height as f64 - 1.0) as i64;
    let inv_z = p.map(|v| 1.0 / v.2);
    for y in min_y as i64..=max_y {
        for x in min_x as i64..=max_x {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let w0 = ((p[1].0 - px) * (p[2].1 - py) - (p[1].1 - py) * (p[2].0 - px)) / area;
            let w1 = ((p[2].0 - px) * (p[0].1 - py) - (p[2].1 - py) * (p[0].0 - px)) / area;
            let w2 = 1.0 - w0 - w1;
            if w0 < 0.0 || w1 < 0.0 || w2 < 0.0 {
                continue;
            }
            let z = 1.0 / (w0 * inv_z[0] + w1 * inv_z[1] + w2 * inv_z[2]);
            let i = (y as u32 * cam.width + x as u32) as usize;
            if z < depth[i] {
                depth[i] = z;
                colour[i] = c;
            }
        }
    }
}
