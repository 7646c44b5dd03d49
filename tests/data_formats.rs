//! Dataset files (ShareGPT / LLaMA-Factory layouts, generic MCQ jsonl), their
//! errors, and the hybrid cold-start mix.

use std::collections::HashMap;
use std::path::PathBuf;

use actial::data::formats::{load_mcq, load_sharegpt, write_sharegpt};
use actial::data::mix::{CotStyle, MixConfig, cot_answer, mix, pseudo_cot, pseudo_cot_styled};
use actial::data::qa::{
    ACTIAL_SYSTEM, ImageRef, LETTER_INSTRUCTION, QaRecord, REASONING_INSTRUCTION, with_instruction,
};
use actial::data::synth::{SynthConfig, pair_records, synth_pair};
use actial::rng::Philox;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("actial-data-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn synth_records(n: u64, dir: &std::path::Path) -> Vec<QaRecord> {
    let c = SynthConfig { supersample: 1, ..SynthConfig::default() };
    (0..n)
        .flat_map(|i| {
            let p = synth_pair(5, i, &c);
            pair_records(i, &p, [dir.join(format!("{i}_a.png")), dir.join(format!("{i}_b.png"))]).0
        })
        .collect()
}

#[test]
fn sharegpt_round_trip() {
    let d = tmp("rt");
    let mut recs = synth_records(3, &d);
    recs[0].system = Some("sys".into());
    recs[1].images[0] = ImageRef::Bytes(vec![1, 2, 3]);
    let f = d.join("data.jsonl");
    write_sharegpt(&f, &recs).unwrap();
    let back = load_sharegpt(&f, true).unwrap();
    assert_eq!(back.records, recs);
    // Paths are written relative to the file.
    assert!(std::fs::read_to_string(&f).unwrap().contains("\"0_b.png\""));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn sharegpt_variants_load() {
    let d = tmp("variants");
    let f = d.join("arr.json");
    std::fs::write(
        &f,
        r#"[{"conversations": [{"from": "human", "value": "<image>Is it red? A: yes B: no"}, {"from": "gpt", "value": "<think>x</think><answer>A</answer>"}],
             "images": [{"bytes": "AQID"}], "system": "be brief"},
            {"messages": [{"role": "user", "content": "no image? A: 1 B: 2"}, {"role": "assistant", "content": "B"}], "images": []}]"#,
    )
    .unwrap();
    let r = load_sharegpt(&f, true).unwrap().records;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].images, vec![ImageRef::Bytes(vec![1, 2, 3])]);
    assert_eq!(r[0].answer, "A");
    assert_eq!(r[0].system.as_deref(), Some("be brief"));
    assert_eq!((r[1].answer.as_str(), r[1].id.as_str()), ("B", "line2"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn malformed_rows_name_file_and_line_or_are_counted() {
    let d = tmp("bad");
    let f = d.join("bad.jsonl");
    let good = r#"{"messages": [{"role": "user", "content": "<image>q"}, {"role": "assistant", "content": "A"}], "images": ["x.png"]}"#;
    let lines = [
        good,
        "{not json",
        r#"{"messages": [{"role": "user", "content": "<image><image>q"}, {"role": "assistant", "content": "A"}], "images": ["x.png"]}"#,
        r#"{"messages": [{"role": "assistant", "content": "A"}]}"#,
        r#"{"messages": [{"role": "user", "content": "<image>q"}], "images": [{"bytes": "%%%"}]}"#,
        good,
        // No assistant turn and no answer: nothing to train on or score against
        // (it used to train an empty reply and score against "").
        r#"{"messages": [{"role": "user", "content": "q"}]}"#,
        // A prompt-only row with its answer (GRPO data) is fine.
        r#"{"messages": [{"role": "user", "content": "q"}], "answer": "B"}"#,
    ];
    std::fs::write(&f, lines.join("\n")).unwrap();
    let e = load_sharegpt(&f, true).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2") && e.contains("invalid JSON"), "{e}");
    let rep = load_sharegpt(&f, false).unwrap();
    assert_eq!(rep.records.len(), 3);
    assert_eq!(rep.skipped_total(), 5);
    let summary = rep.summary();
    assert!(summary.contains("<image> placeholders do not match the images"), "{summary}");
    assert!(summary.contains("no user turn") && summary.contains("base64"), "{summary}");
    assert!(summary.contains("no assistant turn and no \"answer\""), "{summary}");
    // SFT skips the prompt-only row, naming it.
    let tok = actial::model::tiny::tiny_tokenizer().unwrap();
    let proc = actial::model::image::ImageProcessorConfig::for_vision(&actial::model::tiny::tiny_config(&tok).vision);
    let enc = actial::train::data::encode_records(&rep.records[2..], &tok, &proc, None, 512).unwrap();
    assert!(enc.examples.is_empty());
    assert!(
        enc.skipped.keys().any(|k| k.starts_with("no response to train on (first: record line8")),
        "{:?}",
        enc.skipped
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn mcq_jsonl_loads_with_any_answer_style() {
    let d = tmp("mcq");
    let f = d.join("mcq.jsonl");
    std::fs::write(
        &f,
        [
            r#"{"id": "q1", "question": "Which is nearer?", "options": ["cube", "ball"], "answer": "B", "images": ["a.png"]}"#,
            r#"{"question": "Left or right?", "options": ["left", "right", "neither"], "answer": 2}"#,
            r#"{"question": "Colour?", "options": ["red", "blue"], "answer": "blue"}"#,
            r#"{"question": "Bad", "options": ["x"], "answer": 0}"#,
            r#"{"question": "Bad", "options": ["x", "y"], "answer": "z"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let rep = load_mcq(&f, "Answer with the letter.", false).unwrap();
    let r = &rep.records;
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].prompt, "<image>Which is nearer? A: cube B: ball Answer with the letter.");
    assert_eq!((r[0].answer.as_str(), r[1].answer.as_str(), r[2].answer.as_str()), ("B", "C", "B"));
    assert_eq!(r[0].images, vec![ImageRef::Path(d.join("a.png"))]);
    assert_eq!(rep.skipped_total(), 2);
    assert!(load_mcq(&f, "", true).unwrap_err().to_string().contains("mcq.jsonl:4"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn pseudo_cots_follow_the_format_and_the_truth() {
    let d = tmp("cot");
    let recs = synth_records(20, &d);
    let mut rng = Philox::new(1, 0);
    for r in &recs {
        let cot = pseudo_cot(r, &mut rng).unwrap();
        assert_eq!(cot_answer(&cot).as_deref(), Some(r.answer.as_str()), "{cot}");
        for section in
            ["Identifying the images", "Visual analysis", "The movement in 3D", "The trajectory", "The answer is"]
        {
            assert!(cot.contains(section), "missing {section}: {cot}");
        }
        // The CoT states the correct option's text.
        let letter = r.answer.chars().next().unwrap();
        let opt_start = r.prompt.find(&format!(" {letter}: ")).unwrap() + 4;
        let opt = &r.prompt[opt_start..];
        let opt = &opt[..opt.find(" A: ").or(opt.find(" B: ")).or(opt.find(" C: ")).or(opt.find(" Select")).unwrap()];
        assert!(cot.contains(&format!("The answer is {letter}: {opt}.")), "{cot}");
        // Rendered pairs: the visual analysis lists what each photo shows, as the
        // manifest's id-buffer facts say.
        let seen: Vec<Vec<&str>> = r.meta["visible"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect())
            .collect();
        let first = seen[0].last().unwrap();
        assert!(cot.contains("the first photo shows the parts "), "{cot}");
        let analysis = &cot[cot.find("the first photo shows").unwrap()..cot.find("the second photo shows").unwrap()];
        assert!(analysis.contains(first), "{first} missing from {analysis}");
    }
    assert!(cot_answer("<think>a</think> <answer> B </answer>").as_deref() == Some("B"));
    assert!(cot_answer("B").is_none());
    assert!(cot_answer("<answer>B</answer>").is_none());
    assert!(cot_answer("<think>a</think><answer>B</answer> extra").is_none());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn short_pseudo_cots_state_the_motion_then_the_perspective() {
    let d = tmp("cot_short");
    let recs = synth_records(30, &d);
    let mut rng = Philox::new(1, 0);
    for r in &recs {
        let cot = pseudo_cot_styled(r, &mut rng, CotStyle::Short).unwrap();
        assert_eq!(cot_answer(&cot).as_deref(), Some(r.answer.as_str()), "{cot}");
        let (moved, turned) =
            (r.meta["camera_translation"].as_str().unwrap(), r.meta["camera_rotation"].as_str().unwrap());
        // The motion in the same words whatever the question asks ...
        assert!(cot.starts_with(&format!("<think>The camera moved {moved} and turned {turned}. ")), "{cot}");
        // ... then the question's perspective; the object's swaps left and right.
        let mirrored = if moved == "left" { "right" } else { "left" };
        let view = match r.kind.as_str() {
            "camera_translation" => format!("From the camera's view it moved {moved}."),
            "object_translation" => format!("From the object's view left and right swap, so it moved {mirrored}."),
            "camera_rotation" => format!("From the camera's view it turned {turned}."),
            k => panic!("unexpected kind {k}"),
        };
        assert!(cot.contains(&view), "{view} missing: {cot}");
        // The stated option is the answer's, and it is the perspective's word.
        let option = cot.split(&format!("The answer is {}: ", r.answer)).nth(1).unwrap().split('.').next().unwrap();
        assert!(r.prompt.contains(&format!(" {}: {option}", r.answer)), "{option} is not option {}", r.answer);
        assert!(cot.len() < pseudo_cot(r, &mut rng).unwrap().len() / 3, "short means short: {cot}");
    }
    assert_eq!("short".parse::<CotStyle>(), Ok(CotStyle::Short));
    assert!("long".parse::<CotStyle>().unwrap_err().contains("\"full\" or \"short\""));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn mix_interleaves_at_the_configured_fraction() {
    let d = tmp("mix");
    let recs = synth_records(300, &d); // 900 letter items
    let c = MixConfig { cot_unique: 40, ..MixConfig::default() };
    let (out, rep) = mix(&recs, &HashMap::new(), &c);
    assert_eq!(rep.letters, 900);
    assert_eq!(rep.cot_slots, 100); // 10% of 1000
    assert_eq!(rep.cot_unique, 40);
    assert_eq!(out.len(), 1000);
    assert!(out.iter().all(|r| r.system.as_deref() == Some(ACTIAL_SYSTEM)));
    let cot_positions: Vec<usize> =
        out.iter().enumerate().filter(|(_, r)| r.id.ends_with("_cot")).map(|(i, _)| i).collect();
    assert_eq!(cot_positions.len(), 100);
    // Evenly spread: one CoT after every 9 letter items.
    assert!(cot_positions.windows(2).all(|w| w[1] - w[0] == 10), "{:?}", &cot_positions[..5]);
    // Letter items answer with the letter; CoT items are well formed.
    for r in &out {
        if r.id.ends_with("_cot") {
            assert_eq!(cot_answer(&r.response).as_deref(), Some(r.answer.as_str()));
        } else {
            assert_eq!(r.response, r.answer);
        }
    }
    // Imported CoTs replace templates; wrong or malformed ones are counted, not used.
    let mut imported = HashMap::new();
    imported.insert(recs[0].id.clone(), format!("<think>mine</think><answer>{}</answer>", recs[0].answer));
    imported.insert(recs[1].id.clone(), "<think>x</think><answer>Z</answer>".to_string());
    imported.insert(recs[2].id.clone(), "just text".to_string());
    let (out, rep) = mix(&recs, &imported, &c);
    assert_eq!(rep.imported, 1);
    assert_eq!(rep.skipped.values().sum::<usize>(), 2);
    assert!(out.iter().filter(|r| r.id.ends_with("_cot")).all(|r| r.response.contains("mine")));

    // With a CoT instruction, CoT items ask for the reasoning; letter items keep the
    // paper's letter-only prompt.
    let c = MixConfig { cot_instruction: Some(REASONING_INSTRUCTION.into()), ..c };
    let (out, _) = mix(&recs, &HashMap::new(), &c);
    for r in &out {
        if r.id.ends_with("_cot") {
            assert!(r.prompt.ends_with(REASONING_INSTRUCTION), "{}", r.prompt);
            assert!(!r.prompt.contains(LETTER_INSTRUCTION), "{}", r.prompt);
        } else {
            assert!(r.prompt.ends_with(LETTER_INSTRUCTION), "{}", r.prompt);
        }
    }
    assert_eq!(with_instruction("Q? A: x B: y", "Think."), "Q? A: x B: y Think.");
    assert_eq!(with_instruction(&format!("Q? A: x {LETTER_INSTRUCTION}"), ""), "Q? A: x");
    std::fs::remove_dir_all(&d).unwrap();
}
