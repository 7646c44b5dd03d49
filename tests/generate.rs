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
