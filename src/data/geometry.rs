//! Camera geometry for viewpoint questions.
//!
//! Convention (stated once, used everywhere): poses are **world-to-camera** as
//! COLMAP stores them, `x_cam = R·x_world + t`, with OpenCV camera axes: x right,
//! y down, z forward (the viewing direction). The camera centre is `C = −Rᵀt`.
//!
//! For a pair (camera 1, camera 2), everything is expressed in camera 1's frame:
//! - translation: camera 2's centre `p = R1·(C2 − C1)`; `p.x > 0` means camera 2
//!   stands to the right of camera 1 ("the camera moved to the right");
//! - yaw: the angle of the relative rotation `R1·R2ᵀ` (axis-angle), signed by the
//!   direction of its axis along camera 1's vertical: positive = turned right. For
//!   an orbit this is exactly the orbit angle, whatever the cameras' common tilt
//!   (a heading measured in camera 1's tilted image plane would not be);
//! - seen from the object (facing the camera), left and right swap.

pub type Vec3 = [f64; 3];
pub type Mat3 = [[f64; 3]; 3];

/// A world-to-camera pose.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub r: Mat3,
    pub t: Vec3,
}

pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
pub fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}
pub fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}
pub fn normalize(a: Vec3) -> Vec3 {
    scale(a, 1.0 / norm(a))
}
pub fn mat_vec(m: &Mat3, v: Vec3) -> Vec3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}
pub fn transpose(m: &Mat3) -> Mat3 {
    [[m[0][0], m[1][0], m[2][0]], [m[0][1], m[1][1], m[2][1]], [m[0][2], m[1][2], m[2][2]]]
}

/// Rotation matrix of a unit quaternion (w, x, y, z), as COLMAP's images.txt stores.
pub fn quat_to_mat(q: [f64; 4]) -> Mat3 {
    let n = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
    let [w, x, y, z] = [q[0] / n, q[1] / n, q[2] / n, q[3] / n];
    [
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
        [2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x)],
        [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)],
    ]
}

impl Pose {
    /// The camera centre in world coordinates, `−Rᵀt`.
    pub fn center(&self) -> Vec3 {
        scale(mat_vec(&transpose(&self.r), self.t), -1.0)
    }

    /// A camera at `eye` looking at `target`, with `up` the world's up direction
    /// (OpenCV axes: its y axis points along −up on screen).
    pub fn look_at(eye: Vec3, target: Vec3, up: Vec3) -> Pose {
        let f = normalize(sub(target, eye));
        let r = normalize(cross(f, up));
        let d = cross(f, r);
        let rot = [r, d, f];
        Pose { r: rot, t: scale(mat_vec(&rot, eye), -1.0) }
    }

    /// World point to camera coordinates.
    pub fn to_camera(&self, x: Vec3) -> Vec3 {
        add(mat_vec(&self.r, x), self.t)
    }

    pub fn is_finite(&self) -> bool {
        self.r.iter().flatten().chain(&self.t).all(|x| x.is_finite())
    }
}

/// Camera 2 relative to camera 1, in camera 1's frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelativeMotion {
    /// Camera 2's centre in camera 1's frame.
    pub translation: Vec3,
    /// Heading change in degrees, positive = turned right.
    pub yaw_deg: f64,
    /// Angle between the rotation axis and camera 1's vertical axis, degrees: ~the
    /// cameras' tilt for an orbit, large when the camera went over the object.
    pub axis_tilt_deg: f64,
}

/// Rows times rows: `a·bᵀ`.
fn mul_transpose(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x = dot(a[i], b[j]);
        }
    }
    m
}

pub fn relative_motion(c1: &Pose, c2: &Pose) -> RelativeMotion {
    let translation = mat_vec(&c1.r, sub(c2.center(), c1.center()));
    // Camera 2's axes in camera 1's frame: the rotation taking camera 1's axes to camera 2's.
    let m = mul_transpose(&c1.r, &c2.r);
    let angle = ((m[0][0] + m[1][1] + m[2][2] - 1.0) / 2.0).clamp(-1.0, 1.0).acos();
    // The axis's y component (camera 1's down axis) sets the sign: a right turn
    // rotates about the up axis, −y.
    let axis_y = m[2][0] - m[0][2];
    let yaw_deg = -angle.to_degrees() * axis_y.signum();
    let axis = [m[1][2] - m[2][1], m[2][0] - m[0][2], m[0][1] - m[1][0]];
    let axis_tilt_deg =
        if norm(axis) < 1e-12 { 0.0 } else { (axis[1].abs() / norm(axis)).clamp(0.0, 1.0).acos().to_degrees() };
    RelativeMotion { translation, yaw_deg, axis_tilt_deg }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub fn mirrored(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
    pub fn word(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// The answers of the paper's three questions for one pair.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ViewpointTruth {
    /// Q1: camera's perspective, translation.
    pub camera_translation: Side,
    /// Q2: object's perspective, translation (the mirror of Q1).
    pub object_translation: Side,
    /// Q3: camera's perspective, rotation.
    pub camera_rotation: Side,
    pub yaw_deg: f64,
    pub axis_tilt_deg: f64,
    pub translation: Vec3,
}

/// Which pairs qualify for viewpoint questions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairFilter {
    /// Accepted |yaw| range in degrees (the paper: 20 to 100).
    pub min_yaw_deg: f64,
    pub max_yaw_deg: f64,
    /// Sideways movement must be at least this fraction of the total movement
    /// (else "left or right?" has no clear answer).
    pub min_lateral_fraction: f64,
    /// Largest tilt of the rotation axis from camera 1's vertical (orbits in
    /// MVImgNet are mostly level; this rejects pairs that went over the object).
    pub max_axis_tilt_deg: f64,
}

impl Default for PairFilter {
    fn default() -> Self {
        PairFilter { min_yaw_deg: 20.0, max_yaw_deg: 100.0, min_lateral_fraction: 0.2, max_axis_tilt_deg: 45.0 }
    }
}

/// Why a pair was rejected; counted in summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    NonFinitePose,
    SameCamera,
    YawTooSmall,
    YawTooLarge,
    AxisTooTilted,
    NoLateralMovement,
}

impl Reject {
    pub fn reason(self) -> &'static str {
        match self {
            Reject::NonFinitePose => "pose holds NaN or inf",
            Reject::SameCamera => "the two cameras coincide",
            Reject::YawTooSmall => "yaw below the minimum",
            Reject::YawTooLarge => "yaw above the maximum",
            Reject::AxisTooTilted => "rotation axis far from vertical",
            Reject::NoLateralMovement => "no clear sideways movement",
        }
    }
}

/// Ground truth for a pair, or why it does not qualify. The borders are inclusive:
/// a yaw of exactly 20 or 100 degrees is accepted.
pub fn viewpoint_truth(c1: &Pose, c2: &Pose, f: &PairFilter) -> Result<ViewpointTruth, Reject> {
    if !c1.is_finite() || !c2.is_finite() {
        return Err(Reject::NonFinitePose);
    }
    let m = relative_motion(c1, c2);
    let dist = norm(m.translation);
    if dist < 1e-9 && m.yaw_deg.abs() < 1e-6 {
        return Err(Reject::SameCamera);
    }
    // Tolerate float noise at the borders (poses built from exact angles).
    let (yaw, eps) = (m.yaw_deg.abs(), 1e-9);
    if yaw < f.min_yaw_deg - eps {
        return Err(Reject::YawTooSmall);
    }
    if yaw > f.max_yaw_deg + eps {
        return Err(Reject::YawTooLarge);
    }
    if m.yaw_deg.abs() > 1e-6 && m.axis_tilt_deg > f.max_axis_tilt_deg {
        return Err(Reject::AxisTooTilted);
    }
    if dist < 1e-9 || m.translation[0].abs() < f.min_lateral_fraction * dist {
        return Err(Reject::NoLateralMovement);
    }
    let camera_translation = if m.translation[0] > 0.0 { Side::Right } else { Side::Left };
    let camera_rotation = if m.yaw_deg > 0.0 { Side::Right } else { Side::Left };
    Ok(ViewpointTruth {
        camera_translation,
        object_translation: camera_translation.mirrored(),
        camera_rotation,
        yaw_deg: m.yaw_deg,
        axis_tilt_deg: m.axis_tilt_deg,
        translation: m.translation,
    })
}
