//! The tiny base (assets/tiny-base, docs/TINY_BASE.md): it must answer
//! held-out single-photo multiple choice (in the option order it was trained with,
//! recorded in actial_pretrain.json) at 90% or better and sits near chance on the
//! viewpoint questions it never saw (shuffled options, at most 45%).

use actial::data::pretrain::{PretrainMix, pretrain_records};
use actial::data::qa::{LETTERS, OptionOrder, QaRecord};
use actial::data::render::SceneStyle;
use actial::data::synth::{SynthConfig, render_pairs};
use actial::model::Qwen25Vl;
use actial::model::image::ImageProcessorConfig;
use actial::model::tiny::{tiny_base_dir, tiny_tokenizer};
use actial::train::eval::{encode_prompts, evaluate};

fn is_letter_item(r: &QaRecord) -> bool {
    LETTERS.iter().any(|l| r.answer == l.to_string())
}

#[test]
fn tiny_base_has_2d_skills_and_no_viewpoint_skill() {
    let dir = tiny_base_dir();
    let model = Qwen25Vl::from_dir(&dir).unwrap();
    let tok = tiny_tokenizer().unwrap();
    tok.check_config(&model.config).unwrap();
    let proc = ImageProcessorConfig::for_vision(&model.config.vision);
    // The option layout the base was pretrained with (docs/TINY_BASE.md).
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("actial_pretrain.json")).unwrap()).unwrap();
    let order: OptionOrder = serde_json::from_value(info["option_order"].clone()).unwrap();
    let scene: SceneStyle = serde_json::from_value(info["synth_scene"].clone()).unwrap();
    let synth = SynthConfig { option_order: order, scene, ..SynthConfig::default() };
    let tmp = std::env::temp_dir().join(format!("actial-tiny-base-{}", std::process::id()));
    // Seeds the base never trained on (it used seed 42 for photos and text).
    let held = pretrain_records(
        &tmp.join("photos"),
        4242,
        PretrainMix {
            photos: 60,
            pairs: 0,
            text_items: 200,
            perspective_items: 0,
            perspective_photos: 0,
            reasoning_every: 0,
        },
        &synth,
        &|| {},
    )
    .unwrap();
    let (text, photo): (Vec<QaRecord>, Vec<QaRecord>) =
        held.into_iter().filter(is_letter_item).partition(|r| r.images.is_empty());
    // Viewpoint questions with the paper's shuffled options whatever the base's
    // order: near chance means near 33% (a constant letter scores 50% in fixed order).
    let shuffled = SynthConfig { option_order: OptionOrder::Shuffled, ..synth.clone() };
    let rows = render_pairs(&tmp.join("pairs"), 40, 4242, &shuffled, &|| {}).unwrap();
    let view: Vec<QaRecord> = rows.into_iter().flat_map(|(v, _, _)| v).collect();
    let acc = |records: &[QaRecord]| {
        let (items, skipped) = encode_prompts(records, &tok, &proc, None, 1024).unwrap();
        assert!(skipped.is_empty());
        let r = evaluate(&model, &tok, &items, 4, 64, &mut |_| {}).unwrap();
        (r.accuracy(), r.items.len())
    };
    let (a_photo, n_photo) = acc(&photo);
    let (a_text, n_text) = acc(&text);
    let (a_view, n_view) = acc(&view);
    println!("single photo {a_photo:.3} ({n_photo}), text {a_text:.3} ({n_text}), viewpoint {a_view:.3} ({n_view})");
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(n_photo >= 120 && n_view == 120, "{n_photo} photo items, {n_view} viewpoint items");
    assert!(a_photo >= 0.90, "single-photo accuracy {a_photo}");
    assert!(a_view <= 0.45, "viewpoint accuracy {a_view}");
}

#[test]
fn every_binary_names_models_the_same_way() {
    use actial::model::load::load_model;
    let tiny = load_model("tiny", 0).unwrap();
    assert_eq!(tiny.dir.as_deref(), Some(actial::model::tiny::tiny_base_dir().as_path()));
    assert!(!tiny.trained_here(None));
    let random = load_model("tiny-random", 3).unwrap();
    assert!(random.dir.is_none());
    assert_eq!(random.model.config, tiny.model.config, "tiny-random is the tiny preset with random weights");
    let e = load_model("/nonexistent/model", 0).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/model/config.json") && e.contains("tiny-random"), "{e}");
}
