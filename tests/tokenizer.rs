//! The tiny tokenizer asset, the Qwen chat template and the SFT label mask.

use actial::model::image::{ImageProcessorConfig, preprocess};
use actial::model::tiny::{TINY_VOCAB, tiny_config, tiny_dir, tiny_tokenizer};
use actial::model::tokenizer::{Content, Message, QWEN_SPECIAL_TOKENS, QwenTokenizer, Role, train_qwen_style_bpe};
use actial::model::{Batch, Qwen25Vl, Sample};

#[test]
fn tiny_tokenizer_asset_is_reproducible() {
    let corpus = std::fs::read_to_string(tiny_dir().join("corpus.txt")).unwrap();
    let lines: Vec<&str> = corpus.lines().collect();
    let fresh = train_qwen_style_bpe(&lines, TINY_VOCAB).unwrap().to_string(true).unwrap();
    let committed = std::fs::read_to_string(tiny_dir().join("tokenizer.json")).unwrap();
    assert!(
        fresh == committed,
        "assets/tiny/tokenizer.json is stale: run `cargo run --release --example make_tiny_tokenizer`"
    );
}

#[test]
fn special_tokens_keep_qwen_order_and_text_round_trips() {
    let tok = tiny_tokenizer().unwrap();
    for (i, s) in QWEN_SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tok.tokenizer.token_to_id(s), Some(i as u32), "{s}");
    }
    assert!(tok.vocab_size() <= TINY_VOCAB && tok.vocab_size() > 300);
    for text in [
        "From the camera's perspective, did the camera move? A: Move to the left",
        "<think>turned 45 degrees</think><answer>B</answer>",
        "Unicode too: Grüße, 東京, emoji 🙂 and tabs\tand\nnewlines",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
    // Special tokens written in text are single tokens.
    assert_eq!(tok.encode("<|im_start|>").unwrap(), vec![tok.ids.im_start]);
}

fn conversation() -> Vec<Message> {
    vec![
        Message {
            role: Role::User,
            content: vec![
                Content::Image,
                Content::Image,
                Content::Text("Which way did the camera turn? A: left B: right".into()),
            ],
        },
        Message::text(Role::Assistant, "<answer>A</answer>"),
    ]
}

#[test]
fn chat_template_matches_qwen_rendering() {
    let tok = tiny_tokenizer().unwrap();
    let enc = tok.encode_chat(&conversation(), &[4, 2], false).unwrap();
    // What Qwen2-VL's chat template renders (default system turn, images inline).
    let rendered = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
        <|vision_start|><|image_pad|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>\
        <|vision_start|><|image_pad|><|image_pad|><|vision_end|>Which way did the camera turn? A: left B: right<|im_end|>\n\
        <|im_start|>assistant\n<answer>A</answer><|im_end|>\n";
    assert_eq!(enc.ids, tok.encode(rendered).unwrap());
    assert_eq!(tok.decode(&enc.ids, false).unwrap(), rendered);
    // Generation prompt; an explicit system turn replaces the default.
    let mut msgs = vec![Message::text(Role::System, "Be brief.")];
    msgs.push(conversation().remove(0));
    let prompt = tok.encode_chat(&msgs, &[1, 1], true).unwrap();
    let text = tok.decode(&prompt.ids, false).unwrap();
    assert!(text.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"), "{text}");
    assert!(text.ends_with("<|im_end|>\n<|im_start|>assistant\n"), "{text}");
}

#[test]
fn labels_cover_only_assistant_content_and_its_end() {
    let tok = tiny_tokenizer().unwrap();
    let enc = tok.encode_chat(&conversation(), &[4, 2], false).unwrap();
    assert_eq!(enc.labels.len(), enc.ids.len());
    let supervised: Vec<u32> = enc.labels.iter().filter(|&&l| l >= 0).map(|&l| l as u32).collect();
    assert_eq!(tok.decode(&supervised, false).unwrap(), "<answer>A</answer><|im_end|>");
    for (l, &id) in enc.labels.iter().zip(&enc.ids) {
        assert!(*l == -100 || *l == id as i32);
    }
}

#[test]
fn image_count_mismatch_and_missing_files_are_errors() {
    let tok = tiny_tokenizer().unwrap();
    let e = tok.encode_chat(&conversation(), &[4], false).unwrap_err().to_string();
    assert!(e.contains("2 images") && e.contains("1 token counts"), "{e}");
    let e = QwenTokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json")).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/tokenizer.json") && e.contains("not found"), "{e}");
}

#[test]
fn tiny_preset_runs_a_chat_sample_with_two_images() {
    let tok = tiny_tokenizer().unwrap();
    let cfg = tiny_config(&tok);
    cfg.validate("tiny").unwrap();
    tok.check_config(&cfg).unwrap();
    let model = Qwen25Vl::random(cfg.clone(), 7).unwrap();
    let imgs = [
        image::RgbImage::from_pixel(112, 112, image::Rgb([200, 30, 30])),
        image::RgbImage::from_pixel(112, 112, image::Rgb([30, 30, 200])),
    ];
    let px = preprocess(&imgs, &ImageProcessorConfig::for_vision(&cfg.vision)).unwrap();
    assert_eq!(px.grids, vec![[1, 8, 8], [1, 8, 8]]);
    let counts: Vec<usize> = px.grids.iter().map(|g| g[0] * g[1] * g[2] / 4).collect();
    let enc = tok.encode_chat(&conversation(), &counts, false).unwrap();
    let n = enc.ids.len();
    let batch =
        Batch::new(&[Sample { tokens: enc.ids, labels: Some(enc.labels) }], Some(px.pixel_values), &px.grids, &cfg)
            .unwrap();
    let (logits, _) = model.forward(&batch).unwrap();
    assert_eq!(logits.dims(), &[n, tok.vocab_size()]);
    assert!(logits.to_vec_f32().unwrap().iter().all(|x| x.is_finite()));
}

/// Conversations encoded by transformers with a slice of the real Qwen2.5
/// tokenizer (tools/make_qwen_tokenizer_fixture.py): whitespace and newlines at
/// the edges of every kind of turn, CRLF, Chinese, emoji, special-token text,
/// images.
#[test]
fn chat_ids_equal_transformers_with_the_real_qwen_tokenizer() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/qwen25-slice");
    let tok = QwenTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("chat.json")).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 20);
    for case in cases {
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message {
                role: match m["role"].as_str().unwrap() {
                    "system" => Role::System,
                    "user" => Role::User,
                    _ => Role::Assistant,
                },
                content: m["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| match c["type"].as_str().unwrap() {
                        "image" => Content::Image,
                        _ => Content::Text(c["text"].as_str().unwrap().to_string()),
                    })
                    .collect(),
            })
            .collect();
        let counts: Vec<usize> =
            case["image_tokens"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap() as usize).collect();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap() as u32).collect();
        let e = tok.encode_chat(&messages, &counts, case["generation_prompt"].as_bool().unwrap()).unwrap();
        assert_eq!(e.ids, want, "{:?}", case["text"]);

        // Labels: exactly the assistant turns' content and their <|im_end|>.
        let answers: String = messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .flat_map(|m| &m.content)
            .map(|c| match c {
                Content::Text(t) => t.as_str(),
                Content::Image => "",
            })
            .collect();
        let supervised: Vec<u32> = e.labels.iter().filter(|&&l| l >= 0).map(|&l| l as u32).collect();
        let text = tok.decode(&supervised, false).unwrap();
        let n_answers = messages.iter().filter(|m| m.role == Role::Assistant).count();
        assert_eq!(text.matches("<|im_end|>").count(), n_answers, "{text:?}");
        let content = text.replace("<|im_end|>", "");
        // A token that joins the header's newline with the answer's leading
        // newlines is supervised: it is how transformers tokenizes the answer.
        assert!(content.trim_start_matches('\n') == answers.trim_start_matches('\n'), "{content:?} vs {answers:?}");
    }
}

#[test]
fn a_leading_newline_joins_the_role_header_newline() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/qwen25-slice");
    let tok = QwenTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let e = tok.encode_chat(&[Message::text(Role::User, "\nHello")], &[], false).unwrap();
    let user = tok.tokenizer.token_to_id("user").unwrap();
    let at = e.ids.iter().position(|&i| i == user).unwrap();
    // `user`, then one token for "\n\n" (271 in the whole tokenizer), not 198 198.
    assert_eq!(tok.decode(&e.ids[at + 1..at + 2], false).unwrap(), "\n\n");
}

#[test]
fn a_model_vocab_smaller_than_the_tokenizer_is_refused_naming_the_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/qwen25-slice");
    let tok = QwenTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let mut cfg = tiny_config(&tok);
    cfg.text.vocab_size = 4118; // the slice's ids go up to 4117
    tok.check_config(&cfg).unwrap();
    cfg.text.vocab_size = 4000;
    let e = tok.check_config(&cfg).unwrap_err().to_string();
    assert!(e.contains("qwen25-slice/tokenizer.json") && e.contains("4117") && e.contains("4000"), "{e}");
    cfg.tokens.image_token_id = 7;
    let e = tok.check_config(&cfg).unwrap_err().to_string();
    assert!(e.contains("image_token_id = 7"), "{e}");
}
