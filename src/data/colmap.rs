//! COLMAP sparse models (cameras and images, text or binary, as COLMAP writes
//! them) and real multi-view captures laid out like MVImgNet
//! (`<object>/images/*` + `<object>/sparse/0/{cameras,images}.{bin,txt}`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::geometry::{PairFilter, Pose, Reject, ViewpointTruth, quat_to_mat, viewpoint_truth};
use crate::error::{Error, Result};
use crate::rng::Philox;

#[derive(Clone, Debug, PartialEq)]
pub struct ColmapCamera {
    pub id: u32,
    pub model: String,
    pub width: u64,
    pub height: u64,
    pub params: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ColmapImage {
    pub id: u32,
    /// World-to-camera rotation as a quaternion (w, x, y, z).
    pub qvec: [f64; 4],
    pub tvec: [f64; 3],
    pub camera_id: u32,
    pub name: String,
}

impl ColmapImage {
    pub fn pose(&self) -> Pose {
        Pose { r: quat_to_mat(self.qvec), t: self.tvec }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ColmapModel {
    pub cameras: BTreeMap<u32, ColmapCamera>,
    /// Sorted by image name (capture order in MVImgNet).
    pub images: Vec<ColmapImage>,
}

/// (name, number of parameters) by COLMAP model id.
const MODELS: [(&str, usize); 11] = [
    ("SIMPLE_PINHOLE", 3),
    ("PINHOLE", 4),
    ("SIMPLE_RADIAL", 4),
    ("RADIAL", 5),
    ("OPENCV", 8),
    ("OPENCV_FISHEYE", 8),
    ("FULL_OPENCV", 12),
    ("FOV", 5),
    ("SIMPLE_RADIAL_FISHEYE", 4),
    ("RADIAL_FISHEYE", 5),
    ("THIN_PRISM_FISHEYE", 12),
];

fn err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Arg { op: "colmap", msg: format!("{}: {msg}", path.display()) }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })
}

/// Reads `dir/{cameras,images}.bin`, or the `.txt` pair when there is no binary.
pub fn read_model(dir: &Path) -> Result<ColmapModel> {
    if dir.join("images.bin").is_file() && dir.join("cameras.bin").is_file() {
        read_binary(dir)
    } else if dir.join("images.txt").is_file() && dir.join("cameras.txt").is_file() {
        read_text(dir)
    } else {
        let present: Vec<&str> = ["cameras.bin", "images.bin", "cameras.txt", "images.txt"]
            .into_iter()
            .filter(|f| dir.join(f).is_file())
            .collect();
        Err(err(
            dir,
            format!(
                "no COLMAP model here: cameras and images, both .bin or both .txt, are needed (found {})",
                if present.is_empty() { "neither".to_string() } else { present.join(", ") }
            ),
        ))
    }
}

/// The model with its images in name order, once every image's camera exists:
/// an empty camera file, or an image naming an undefined camera, is an error
/// naming the files (every pose needs its intrinsics).
fn checked(
    cameras: BTreeMap<u32, ColmapCamera>,
    mut images: Vec<ColmapImage>,
    cam_path: &Path,
    img_path: &Path,
) -> Result<ColmapModel> {
    if cameras.is_empty() {
        return Err(err(cam_path, "no cameras"));
    }
    if images.is_empty() {
        return Err(err(img_path, "no images"));
    }
    if let Some(i) = images.iter().find(|i| !cameras.contains_key(&i.camera_id)) {
        return Err(err(
            img_path,
            format!(
                "image {} ({}) names camera {}, which {} does not define",
                i.id,
                i.name,
                i.camera_id,
                cam_path.display()
            ),
        ));
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ColmapModel { cameras, images })
}

/// The text format: `cameras.txt` (`ID MODEL W H PARAMS...`) and `images.txt`
/// (two lines per image: `ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`, then points).
pub fn read_text(dir: &Path) -> Result<ColmapModel> {
    let cam_path = dir.join("cameras.txt");
    let text = String::from_utf8_lossy(&read(&cam_path)?).into_owned();
    let mut cameras = BTreeMap::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |m: &str| err(&cam_path, format!("line {}: {m}", no + 1));
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            return Err(bad("expected ID MODEL WIDTH HEIGHT PARAMS..."));
        }
        let num = |s: &str| s.parse::<f64>().map_err(|_| bad(&format!("{s:?} is not a number")));
        let model = f[1].to_string();
        let params: Vec<f64> = f[4..].iter().map(|s| num(s)).collect::<Result<_>>()?;
        if let Some((_, n)) = MODELS.iter().find(|(m, _)| *m == model)
            && *n != params.len()
        {
            return Err(bad(&format!("{model} takes {n} parameters, found {}", params.len())));
        }
        let id = f[0].parse().map_err(|_| bad("bad camera id"))?;
        let width = f[2].parse().map_err(|_| bad("bad width"))?;
        let height = f[3].parse().map_err(|_| bad("bad height"))?;
        cameras.insert(id, ColmapCamera { id, model, width, height, params });
    }
    let img_path = dir.join("images.txt");
    let text = String::from_utf8_lossy(&read(&img_path)?).into_owned();
    let mut images = Vec::new();
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with('#'));
    while let Some((no, line)) = lines.next() {
        if line.trim().is_empty() {
            continue; // a blank points line after an image, or trailing space
        }
        let bad = |m: &str| err(&img_path, format!("line {}: {m}", no + 1));
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            return Err(bad("expected ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"));
        }
        let num = |s: &str| s.parse::<f64>().map_err(|_| bad(&format!("{s:?} is not a number")));
        let qvec = [num(f[1])?, num(f[2])?, num(f[3])?, num(f[4])?];
        let tvec = [num(f[5])?, num(f[6])?, num(f[7])?];
        let id = f[0].parse().map_err(|_| bad("bad image id"))?;
        let camera_id = f[8].parse().map_err(|_| bad("bad camera id"))?;
        // Names may contain spaces: everything after the camera id.
        let name = f[9..].join(" ");
        images.push(ColmapImage { id, qvec, tvec, camera_id, name });
        lines.next(); // the POINTS2D line (possibly empty)
    }
    checked(cameras, images, &cam_path, &img_path)
}

/// A cursor over little-endian binary data that reports truncation by file.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            err(self.path, format!("truncated: needed {n} bytes at offset {}, file has {}", self.pos, self.data.len()))
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

/// The binary format of COLMAP's `write_model` (little endian).
pub fn read_binary(dir: &Path) -> Result<ColmapModel> {
    let cam_path = dir.join("cameras.bin");
    let data = read(&cam_path)?;
    let mut r = Reader { data: &data, pos: 0, path: &cam_path };
    let mut cameras = BTreeMap::new();
    for _ in 0..r.u64()? {
        let id = r.i32()? as u32;
        let model_id = r.i32()?;
        let (model, n) = *MODELS
            .get(model_id as usize)
            .ok_or_else(|| err(&cam_path, format!("unknown camera model id {model_id}")))?;
        let width = r.u64()?;
        let height = r.u64()?;
        let params = (0..n).map(|_| r.f64()).collect::<Result<_>>()?;
        cameras.insert(id, ColmapCamera { id, model: model.to_string(), width, height, params });
    }
    let img_path = dir.join("images.bin");
    let data = read(&img_path)?;
    let mut r = Reader { data: &data, pos: 0, path: &img_path };
    let n = r.u64()?;
    let mut images = Vec::new();
    for _ in 0..n {
        let id = r.i32()? as u32;
        let qvec = [r.f64()?, r.f64()?, r.f64()?, r.f64()?];
        let tvec = [r.f64()?, r.f64()?, r.f64()?];
        let camera_id = r.i32()? as u32;
        let start = r.pos;
        while r.take(1)? != [0] {}
        let name = String::from_utf8_lossy(&r.data[start..r.pos - 1]).into_owned();
        let points = r.u64()? as usize;
        r.take(points.checked_mul(24).ok_or_else(|| err(&img_path, "absurd point count"))?)?;
        images.push(ColmapImage { id, qvec, tvec, camera_id, name });
    }
    checked(cameras, images, &cam_path, &img_path)
}

/// Chosen pairs of one capture and why the others were rejected.
#[derive(Debug, Default)]
pub struct PairSelection {
    /// (index of image 1, index of image 2, ground truth) into `model.images`.
    pub pairs: Vec<(usize, usize, ViewpointTruth)>,
    pub rejected: BTreeMap<Reject, usize>,
}

/// Every ordered pair of frames that passes `filter`, then up to `max_pairs` of
/// them picked at random (deterministic in `seed`).
pub fn choose_pairs(model: &ColmapModel, filter: &PairFilter, max_pairs: usize, seed: u64) -> PairSelection {
    let mut sel = PairSelection::default();
    let poses: Vec<Pose> = model.images.iter().map(ColmapImage::pose).collect();
    for i in 0..poses.len() {
        for j in 0..poses.len() {
            if i == j {
                continue;
            }
            match viewpoint_truth(&poses[i], &poses[j], filter) {
                Ok(t) => sel.pairs.push((i, j, t)),
                Err(r) => *sel.rejected.entry(r).or_default() += 1,
            }
        }
    }
    let mut rng = Philox::new(seed, 0xc01);
    for k in (1..sel.pairs.len()).rev() {
        let m = (rng.next_u32() as usize) % (k + 1);
        sel.pairs.swap(k, m);
    }
    sel.pairs.truncate(max_pairs);
    sel
}

/// A capture directory: its COLMAP model and its image folder.
#[derive(Clone, Debug)]
pub struct Capture {
    pub root: PathBuf,
    pub model_dir: PathBuf,
    pub images_dir: PathBuf,
}

/// Finds captures under `root`: directories with `sparse/0` (MVImgNet, COLMAP's
/// default) or `sparse` holding a model, next to an `images` folder. `root` itself
/// may be one capture.
pub fn find_captures(root: &Path) -> Result<Vec<Capture>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        // Any of the model's files marks a capture: one missing its partner is
        // then an error naming it, not a capture silently passed over.
        let model_dir = [d.join("sparse/0"), d.join("sparse")]
            .into_iter()
            .find(|m| ["images.bin", "images.txt", "cameras.bin", "cameras.txt"].iter().any(|f| m.join(f).is_file()));
        if let Some(model_dir) = model_dir {
            out.push(Capture { root: d.clone(), model_dir, images_dir: d.join("images") });
            continue;
        }
        let entries = std::fs::read_dir(&d).map_err(|e| Error::Io { path: d.display().to_string(), source: e })?;
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    out.sort_by(|a, b| a.root.cmp(&b.root));
    Ok(out)
}
