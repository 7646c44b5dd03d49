//! TensorBoard event files: the TFRecord framing (CRCs) and the protobuf fields
//! decoded by hand, independently of the writer.

use actial::train::tensorboard::{TbWriter, read_records};

/// (field number, wire type, payload) of a protobuf message's top-level fields.
fn fields(mut b: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let x = b[0];
            *b = &b[1..];
            v |= ((x & 0x7f) as u64) << shift;
            if x < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let (field, wire) = (key >> 3, (key & 7) as u8);
        let payload = match wire {
            0 => varint(&mut b).to_le_bytes().to_vec(),
            1 => {
                let p = b[..8].to_vec();
                b = &b[8..];
                p
            }
            2 => {
                let n = varint(&mut b) as usize;
                let p = b[..n].to_vec();
                b = &b[n..];
                p
            }
            5 => {
                let p = b[..4].to_vec();
                b = &b[4..];
                p
            }
            w => panic!("wire type {w}"),
        };
        out.push((field, wire, payload));
    }
    out
}

#[test]
fn events_hold_the_version_a_resume_mark_and_tagged_scalars() {
    let dir = std::env::temp_dir().join(format!("actial-tb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut w = TbWriter::create(&dir, Some(7)).unwrap();
    let line = serde_json::json!({"step": 8, "loss": 1.5, "lr": 1e-4, "cuda": {"launches": 12}, "note": "text"});
    w.json_scalars(8, "sft", &line).unwrap();
    let recs = read_records(w.path()).unwrap();
    assert_eq!(recs.len(), 3);
    let version = fields(&recs[0]);
    assert!(version.iter().any(|(f, _, p)| *f == 3 && p == b"brain.Event:2"), "{version:?}");
    // SessionLog (field 7) START at step 8, the first the resumed run logs.
    let resume = fields(&recs[1]);
    assert!(resume.iter().any(|(f, _, p)| *f == 2 && p[0] == 8));
    let log = &resume.iter().find(|(f, _, _)| *f == 7).unwrap().2;
    assert_eq!(fields(log), vec![(1, 0, 1u64.to_le_bytes().to_vec())]);
    // The step's summary: tag and f32 value per number, nested keys joined.
    let ev = fields(&recs[2]);
    assert!(ev.iter().any(|(f, _, p)| *f == 2 && p[0] == 8));
    let summary = &ev.iter().find(|(f, _, _)| *f == 5).unwrap().2;
    let values: Vec<(String, f32)> = fields(summary)
        .into_iter()
        .map(|(_, _, v)| {
            let f = fields(&v);
            let tag = String::from_utf8(f[0].2.clone()).unwrap();
            (tag, f32::from_le_bytes(f[1].2.clone().try_into().unwrap()))
        })
        .collect();
    assert_eq!(values, vec![("sft/cuda/launches".into(), 12.0), ("sft/loss".into(), 1.5), ("sft/lr".into(), 1e-4f32)]);
    // A flipped byte fails its CRC, named.
    let mut bytes = std::fs::read(w.path()).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 1;
    std::fs::write(w.path(), bytes).unwrap();
    assert!(read_records(w.path()).unwrap_err().to_string().contains("CRC mismatch"));
    let _ = std::fs::remove_dir_all(&dir);
}
