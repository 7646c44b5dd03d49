//! COLMAP readers on a small committed capture (tools/make_colmap_fixture.py: 8
//! cameras on an orbit, in a rotated, scaled and shifted world frame), and the
//! pair labels derived from it.

use std::path::{Path, PathBuf};

use actial::data::colmap::{choose_pairs, find_captures, read_binary, read_model, read_text};
use actial::data::geometry::{PairFilter, Side};

fn capture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/colmap/orbit")
}

fn orbit() -> Vec<f64> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(capture().join("truth.json")).unwrap()).unwrap();
    v["orbit_deg"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn text_and_binary_models_agree() {
    let dir = capture().join("sparse/0");
    let t = read_text(&dir).unwrap();
    let b = read_binary(&dir).unwrap();
    assert_eq!(t, b);
    assert_eq!(t.images.len(), 8);
    assert_eq!(t.images[3].name, "frame_003.png");
    let cam = &t.cameras[&1];
    assert_eq!((cam.model.as_str(), cam.width, cam.height, cam.params.len()), ("SIMPLE_RADIAL", 64, 48, 4));
    assert_eq!(read_model(&dir).unwrap(), b);
}

#[test]
fn pair_labels_follow_the_orbit_in_any_world_frame() {
    let model = read_model(&capture().join("sparse/0")).unwrap();
    let angles = orbit();
    let sel = choose_pairs(&model, &PairFilter::default(), usize::MAX, 0);
    let mut expected = 0;
    for i in 0..8 {
        for j in 0..8 {
            let d = angles[j] - angles[i];
            let d = (d + 180.0).rem_euclid(360.0) - 180.0; // into [-180, 180)
            if i != j && (20.0..=100.0).contains(&d.abs()) {
                expected += 1;
            }
        }
    }
    assert_eq!(sel.pairs.len(), expected);
    assert!(!sel.pairs.is_empty());
    for (i, j, t) in &sel.pairs {
        let d = angles[*j] - angles[*i];
        let d = (d + 180.0).rem_euclid(360.0) - 180.0;
        let (moved, turned) = if d > 0.0 { (Side::Right, Side::Left) } else { (Side::Left, Side::Right) };
        assert_eq!((t.camera_translation, t.camera_rotation), (moved, turned), "pair {i}->{j}, orbit {d}");
        assert_eq!(t.object_translation, moved.mirrored());
        assert!((t.yaw_deg + d).abs() < 1e-6, "yaw {} vs orbit {d}", t.yaw_deg);
    }
    // Determinism and the cap.
    let a = choose_pairs(&model, &PairFilter::default(), 5, 3);
    let b = choose_pairs(&model, &PairFilter::default(), 5, 3);
    assert_eq!(a.pairs.len(), 5);
    assert_eq!(
        a.pairs.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
        b.pairs.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>()
    );
    assert_eq!(a.rejected.values().sum::<usize>() + expected, 56);
}

#[test]
fn captures_are_found_and_bad_files_are_named() {
    let caps = find_captures(&capture()).unwrap();
    assert_eq!(caps.len(), 1);
    assert!(caps[0].images_dir.join("frame_000.png").is_file());
    let d = std::env::temp_dir().join(format!("actial-colmap-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let src = capture().join("sparse/0");
    std::fs::copy(src.join("cameras.bin"), d.join("cameras.bin")).unwrap();
    let img = std::fs::read(src.join("images.bin")).unwrap();
    std::fs::write(d.join("images.bin"), &img[..img.len() - 30]).unwrap();
    let e = read_binary(&d).unwrap_err().to_string();
    assert!(e.contains("images.bin") && e.contains("truncated"), "{e}");
    std::fs::write(d.join("cameras.txt"), "1 PINHOLE 64 48 60 60 32\n").unwrap();
    std::fs::write(d.join("images.txt"), "").unwrap();
    let e = read_text(&d).unwrap_err().to_string();
    assert!(e.contains("cameras.txt") && e.contains("line 1") && e.contains("PINHOLE takes 4"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
    assert!(read_model(Path::new("/nonexistent")).unwrap_err().to_string().contains("no COLMAP model"));
}

/// Models that cannot give a pose with its intrinsics are errors naming the
/// files: an image naming an undefined camera, an empty cameras.txt, a model
/// missing its images file (a campaign found each gave exit 0 and an empty
/// viewpoint.jsonl).
#[test]
fn incomplete_models_are_errors_naming_the_file() {
    let d = std::env::temp_dir().join(format!("actial-colmap-incomplete-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let image = "1 1 0 0 0 0 0 4 7 frame_000.png\n\n";
    std::fs::write(d.join("cameras.txt"), "1 PINHOLE 64 48 60 60 32 24\n").unwrap();
    std::fs::write(d.join("images.txt"), image).unwrap();
    let e = read_text(&d).unwrap_err().to_string();
    assert!(e.contains("images.txt") && e.contains("frame_000.png") && e.contains("names camera 7"), "{e}");
    std::fs::write(d.join("cameras.txt"), "# no cameras\n").unwrap();
    let e = read_text(&d).unwrap_err().to_string();
    assert!(e.contains("cameras.txt") && e.contains("no cameras"), "{e}");
    // A capture whose model lacks images.txt is found, and reading it says so.
    let cap = d.join("cap");
    std::fs::create_dir_all(cap.join("sparse/0")).unwrap();
    std::fs::write(cap.join("sparse/0/cameras.txt"), "1 PINHOLE 64 48 60 60 32 24\n").unwrap();
    let caps = find_captures(&cap).unwrap();
    assert_eq!(caps.len(), 1);
    let e = read_model(&caps[0].model_dir).unwrap_err().to_string();
    assert!(e.contains("no COLMAP model") && e.contains("found cameras.txt"), "{e}");
    // actial-data build over only unreadable captures fails, saying why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_actial-data"))
        .args(["build", "--captures", cap.to_str().unwrap(), "--out", d.join("out").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no viewpoint pair") && err.contains("unreadable COLMAP model"),
        "{err}"
    );
    assert!(!d.join("out/viewpoint.jsonl").exists());
    std::fs::remove_dir_all(&d).unwrap();
}
