//! Packing several image samples into one batch gives each sample exactly the
//! logits it gets alone (images, window order and M-RoPE positions stay with their
//! own sample).

use actial::Tensor;
use actial::model::image::{ImageProcessorConfig, preprocess};
use actial::model::tiny::{tiny_config, tiny_tokenizer};
use actial::model::tokenizer::{Content, Message, Role};
use actial::model::{Batch, Qwen25Vl, Sample};
use actial::rng::Philox;

#[test]
fn packed_samples_match_their_standalone_logits() {
    let tok = tiny_tokenizer().unwrap();
    let cfg = tiny_config(&tok);
    let model = Qwen25Vl::random(cfg.clone(), 11).unwrap();
    let proc = ImageProcessorConfig::for_vision(&cfg.vision);
    let mut rng = Philox::new(4, 0);
    // Sample 0: one 112x112 image; sample 1: two images of other sizes; sample 2: text.
    let sizes: [&[(u32, u32)]; 3] = [&[(112, 112)], &[(56, 112), (112, 84)], &[]];
    let mut samples = Vec::new();
    for (s, imgs) in sizes.iter().enumerate() {
        let images: Vec<image::RgbImage> = imgs
            .iter()
            .map(|&(w, h)| image::RgbImage::from_fn(w, h, |_, _| image::Rgb([(rng.next_u32() % 256) as u8, 40, 200])))
            .collect();
        let px = if images.is_empty() { None } else { Some(preprocess(&images, &proc).unwrap()) };
        let counts: Vec<usize> = px.iter().flat_map(|p| p.grids.iter().map(|g| g[0] * g[1] * g[2] / 4)).collect();
        let mut content = vec![Content::Image; images.len()];
        content.push(Content::Text(format!("sample {s}: which colour?")));
        let e = tok.encode_chat(&[Message { role: Role::User, content }], &counts, true).unwrap();
        samples.push((e.ids, px));
    }
    let alone: Vec<Vec<f32>> = samples
        .iter()
        .map(|(ids, px)| {
            let b = Batch::new(
                &[Sample { tokens: ids.clone(), labels: None }],
                px.as_ref().map(|p| p.pixel_values.clone()),
                px.as_ref().map(|p| p.grids.clone()).unwrap_or_default().as_slice(),
                &cfg,
            )
            .unwrap();
            model.forward(&b).unwrap().0.to_vec_f32().unwrap()
        })
        .collect();
    let pix: Vec<&Tensor> = samples.iter().filter_map(|(_, p)| p.as_ref().map(|p| &p.pixel_values)).collect();
    let grids: Vec<[usize; 3]> = samples.iter().filter_map(|(_, p)| p.as_ref()).flat_map(|p| p.grids.clone()).collect();
    let packed = Batch::new(
        &samples.iter().map(|(ids, _)| Sample { tokens: ids.clone(), labels: None }).collect::<Vec<_>>(),
        Some(Tensor::cat(&pix, 0).unwrap()),
        &grids,
        &cfg,
    )
    .unwrap();
    let all = model.forward(&packed).unwrap().0.to_vec_f32().unwrap();
    let v = cfg.text.vocab_size;
    for (s, range) in packed.sample_ranges.iter().enumerate() {
        let got = &all[range.start * v..range.end * v];
        let worst = got.iter().zip(&alone[s]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "sample {s}: packed logits differ from standalone by {worst}");
    }
}
