//! Greedy decoding with the KV cache agrees with full forward passes.

use std::path::Path;

use actial::model::{Batch, Checkpoint, Qwen25Vl, Sample};

#[test]
fn cached_decoding_matches_full_forward() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/untied_gqa_two_images");
    let model = Qwen25Vl::from_dir(&dir).unwrap();
    let fx = Checkpoint::open(&dir.join("fixture.safetensors")).unwrap();
    let ids = fx.tensor("input_ids").unwrap();
    let l = ids.dims()[1];
    let mask = fx.tensor("attention_mask").unwrap().to_vec_i32().unwrap();
    let prompt: Vec<u32> = ids.to_vec_i32().unwrap()[..l]
        .iter()
        .zip(&mask[..l])
        .filter(|(_, m)| **m == 1)
        .map(|(&t, _)| t as u32)
        .collect();
    let g = fx.tensor("image_grid_thw").unwrap().to_vec_i32().unwrap();
    let grids: Vec<[usize; 3]> = g.chunks(3).map(|c| [c[0] as usize, c[1] as usize, c[2] as usize]).collect();
    let pixels = fx.tensor("pixel_values").unwrap();

    let n_new = 8;
    let out = model.generate_greedy(&prompt, Some(pixels.clone()), &grids, n_new, &[], true).unwrap();
    assert_eq!(out.tokens.len(), n_new);
    assert!(!out.stopped);

    // One forward over prompt + generated tokens (all but the last).
    let mut full = prompt.clone();
    full.extend(&out.tokens[..n_new - 1]);
    let batch =
        Batch::new(&[Sample { tokens: full.clone(), labels: None }], Some(pixels.clone()), &grids, &model.config)
            .unwrap();
    let (logits, _) = model.forward(&batch).unwrap();
    let v = model.config.text.vocab_size;
    let all = logits.to_vec_f32().unwrap();
    // Prefill logits equal the forward's on the prompt.
    let pl = out.prompt_logits.unwrap().to_vec_f32().unwrap();
    let err = pl.iter().zip(&all[..prompt.len() * v]).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-4, "prefill logits differ by {err}");
    // Every generated token is the argmax of the full forward at its position.
    for (i, &t) in out.tokens.iter().enumerate() {
        let row = &all[(prompt.len() - 1 + i) * v..(prompt.len() + i) * v];
        let best = (0..v).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(best as u32, t, "step {i}");
    }

    // A stop token ends decoding without being returned.
    let stop = out.tokens[3];
    let first = out.tokens.iter().position(|&t| t == stop).unwrap();
    let s = model.generate_greedy(&prompt, Some(pixels), &grids, n_new, &[stop], false).unwrap();
    assert!(s.stopped);
    assert_eq!(s.tokens, out.tokens[..first].to_vec());
}

mod decoding {
    use actial::model::generate::Decoding;
    use actial::rng::Philox;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits_once() {
        // Token 0 leads by 0.1 but was seen (twice: penalised once); 1.2 turns
        // 2.0 into 1.667 < 1.9. Seen negative logits get more negative.
        let d = Decoding { repetition_penalty: 1.2, ..Decoding::GREEDY };
        let mut rng = Philox::new(0, 0);
        assert_eq!(d.pick(&[2.0, 1.9, -1.0], &[0, 0], &mut rng), 1);
        assert_eq!(Decoding::GREEDY.pick(&[2.0, 1.9, -1.0], &[0, 0], &mut rng), 0);
        // -1.0 * 1.2 = -1.2 < -1.1: token 3 wins when 0, 1 are negative too.
        assert_eq!(d.pick(&[-2.0, -1.5, -1.0, -1.1], &[2], &mut rng), 3);
    }

    #[test]
    fn sampling_follows_the_softmax_and_the_filters() {
        let logits = [1.0f32, 0.0, 2.0, -1.0];
        let d = Decoding { temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 7 };
        let mut rng = Philox::new(7, 0);
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[d.pick(&logits, &[], &mut rng) as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let p = (logits[i] as f64).exp() / z;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((c as f64 / n as f64 - p).abs() < 5.0 * sd, "token {i}: {c} of {n}, p {p}");
        }
        // top_k 2 keeps tokens 2 and 0; top_p 0.5 keeps token 2 alone (p 0.64).
        let k2 = Decoding { top_k: 2, ..d.clone() };
        assert!((0..2000).all(|_| matches!(k2.pick(&logits, &[], &mut rng), 0 | 2)));
        let p5 = Decoding { top_p: 0.5, ..d.clone() };
        assert!((0..2000).all(|_| p5.pick(&logits, &[], &mut rng) == 2));
        // Qwen2.5-VL-Instruct's top_k 1 is argmax.
        assert!(Decoding { top_k: 1, ..d }.is_greedy());
    }

    #[test]
    fn generation_config_is_read_with_transformers_defaults() {
        let dir = std::env::temp_dir().join(format!("actial-genconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Decoding::from_generation_config(&dir).unwrap(), None);
        let write = |s: &str| std::fs::write(dir.join("generation_config.json"), s).unwrap();
        write(r#"{"do_sample": true, "temperature": 0.1, "top_p": 0.001, "top_k": 1, "repetition_penalty": 1.05}"#);
        let d = Decoding::from_generation_config(&dir).unwrap().unwrap();
        assert_eq!((d.temperature, d.top_k, d.top_p, d.repetition_penalty), (0.1, 1, 0.001, 1.05));
        write(r#"{"do_sample": true}"#);
        let d = Decoding::from_generation_config(&dir).unwrap().unwrap();
        assert_eq!((d.temperature, d.top_k, d.top_p), (1.0, 50, 1.0));
        write(r#"{"repetition_penalty": 1.1}"#);
        assert_eq!(
            Decoding::from_generation_config(&dir).unwrap().unwrap(),
            Decoding { repetition_penalty: 1.1, ..Decoding::GREEDY }
        );
        write(r#"{"do_sample": true, "temperature": "hot"}"#);
        let e = Decoding::from_generation_config(&dir).unwrap_err().to_string();
        assert!(e.contains("generation_config.json") && e.contains("temperature"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
