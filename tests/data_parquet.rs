//! Parquet loaders on fixtures in array/SAT's and verl's layouts
//! (tools/make_parquet_fixtures.py).

use std::path::{Path, PathBuf};

use actial::data::parquet::load_parquet_qa;
use actial::data::qa::ImageRef;

fn fx(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet").join(name)
}

#[test]
fn array_sat_layout() {
    let rep = load_parquet_qa(&fx("sat_array.parquet"), "Answer with the option letter.", false).unwrap();
    assert_eq!(rep.records.len(), 2, "{}", rep.summary());
    let r = &rep.records[1];
    assert_eq!(r.kind, "ego_movement");
    assert_eq!(r.images.len(), 2);
    assert!(matches!(&r.images[0], ImageRef::Bytes(b) if b.starts_with(b"\x89PNG")));
    assert_eq!(
        r.prompt,
        "<image><image>Did the camera move left or right between the frames? A: left B: right Answer with the option letter."
    );
    assert_eq!(r.answer, "B");
    // Two bad rows, counted with their reasons.
    assert_eq!(rep.skipped_total(), 2);
    let s = rep.summary();
    assert!(s.contains("is not one of the options") && s.contains("undecodable image"), "{s}");
    let e = load_parquet_qa(&fx("sat_array.parquet"), "", true).unwrap_err().to_string();
    assert!(e.contains("sat_array.parquet") && e.contains("row 2"), "{e}");
}

#[test]
fn verl_layout() {
    let rep = load_parquet_qa(&fx("sat_verl.parquet"), "", true).unwrap();
    assert_eq!(rep.records.len(), 2);
    let r = &rep.records[0];
    assert_eq!(r.prompt, "<image><image>Which way did the camera turn? A: left B: right");
    assert_eq!((r.answer.as_str(), r.kind.as_str(), r.images.len()), ("B", "sat", 2));
    assert_eq!(rep.records[1].answer, "A");
}

#[test]
fn not_parquet_is_a_clear_error() {
    let e = load_parquet_qa(&fx("../images/a.png"), "", true).unwrap_err().to_string();
    assert!(e.contains("a.png") && e.contains("parquet"), "{e}");
}
