//! Rung 4 of the verification ladder on CUDA: tensors that live on the device
//! (round trips, casts, the layout copies behind narrow / permute / cat) and the
//! tiny model's forward and backward on CUDA against the CPU, both starting from
//! the same bf16-rounded weights. The CPU computes in f32, the GPU keeps bf16
//! activations, so logits and gradients are compared by relative error.
//!
//! Without a GPU every test prints "SKIPPED: no CUDA device (why)" and passes.

#[cfg(actial_cuda)]
mod common;

#[cfg(not(actial_cuda))]
#[test]
fn cuda_model_skipped_without_kernels() {
    assert!(
        std::env::var_os("ACTIAL_REQUIRE_CUDA_BUILD").is_none(),
        "ACTIAL_REQUIRE_CUDA_BUILD is set but the kernels were not built"
    );
    println!("SKIPPED: {}", actial::cuda::build_info::NOT_BUILT);
}

#[cfg(actial_cuda)]
mod on_device {
    use std::collections::BTreeMap;

    use actial::model::image::{ImageProcessorConfig, preprocess};
    use actial::model::tiny::{tiny_config, tiny_tokenizer};
    use actial::model::tokenizer::{Content, Message, Role};
    use actial::model::{Batch, LoraSpec, Part, Qwen25Vl, Sample};
    use actial::ops;
    use actial::rng::Philox;
    use actial::tensor::DType;
    use actial::{Device, Tensor};

    /// CUDA device 0, or None (with the SKIPPED line) when this machine has none.
    fn gpu() -> Option<Device> {
        match actial::cuda::available() {
            Err(why) => {
                println!("SKIPPED: no CUDA device ({why})");
                None
            }
            Ok(_) => {
                let d = Device::Cuda(0);
                d.check_available().expect("a CUDA device is present, so opening it must work");
                Some(d)
            }
        }
    }

    fn randn(seed: u64, dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_f32(Philox::new(seed, 0).normal_vec(n, 1.0), dims, Device::Cpu).unwrap()
    }

    /// Layout ops are bit copies: the device must give exactly the CPU's elements.
    #[test]
    fn layout_ops_round_trips_and_casts_match_the_cpu() {
        let Some(dev) = gpu() else { return };
        let x = randn(1, &[3, 5, 4]);
        let g = x.to_device(dev).unwrap();
        assert_eq!(g.device(), dev);
        let same = |what: &str, a: &Tensor, b: &Tensor| {
            assert_eq!(a.dims(), b.dims(), "{what}: shape");
            assert_eq!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap(), "{what}: elements");
        };
        same("round trip", &x, &g);
        same("narrow dim 1", &x.narrow(1, 1, 3).unwrap(), &g.narrow(1, 1, 3).unwrap());
        same("narrow dim 2", &x.narrow(2, 3, 1).unwrap(), &g.narrow(2, 3, 1).unwrap());
        let (xv, gv) = (x.narrow(0, 1, 2).unwrap(), g.narrow(0, 1, 2).unwrap());
        same("view then permute", &xv.permute(&[2, 0, 1]).unwrap(), &gv.permute(&[2, 0, 1]).unwrap());
        same("transpose", &x.transpose(0, 2).unwrap(), &g.transpose(0, 2).unwrap());
        same("copy of a view", &xv.copy().unwrap(), &gv.copy().unwrap());
        let (x2, g2) = (x.narrow(1, 0, 2).unwrap(), g.narrow(1, 0, 2).unwrap());
        same("cat dim 1", &Tensor::cat(&[&x, &x2], 1).unwrap(), &Tensor::cat(&[&g, &g2], 1).unwrap());
        same("cat dim 0", &Tensor::cat(&[&xv, &x], 0).unwrap(), &Tensor::cat(&[&gv, &g], 0).unwrap());
        let (xb, gb) = (x.to_dtype(DType::BF16).unwrap(), g.to_dtype(DType::BF16).unwrap());
        assert_eq!(gb.dtype(), DType::BF16);
        same("cast to bf16 (round to nearest even on both)", &xb, &gb);
        same("bf16 permute", &xb.permute(&[1, 2, 0]).unwrap(), &gb.permute(&[1, 2, 0]).unwrap());
        let ids = Tensor::from_i32((0..12).collect(), [3, 4], Device::Cpu).unwrap();
        let gids = ids.to_device(dev).unwrap();
        assert_eq!(
            ids.transpose(0, 1).unwrap().to_vec_i32().unwrap(),
            gids.transpose(0, 1).unwrap().to_vec_i32().unwrap()
        );
        // Writes never show through a shared buffer (copy-on-write on the device too).
        let mut w = g.clone();
        ops::scale_assign(&mut w, 0.0).unwrap();
        same("the original after zeroing a clone", &x, &g);
        assert!(w.to_vec_f32().unwrap().iter().all(|&v| v == 0.0));
    }

    /// Empty tensors move to the device and back, and elementwise ops on them
    /// give empty results, as on the CPU.
    #[test]
    fn empty_tensors_round_trip_and_add() {
        let Some(dev) = gpu() else { return };
        let x = Tensor::from_f32(vec![], [0, 4], Device::Cpu).unwrap();
        let g = x.to_device(dev).unwrap();
        assert_eq!(g.dims(), &[0, 4]);
        assert!(g.to_vec_f32().unwrap().is_empty());
        let s = ops::add(&g, &g).unwrap();
        assert_eq!(s.dims(), &[0, 4]);
        assert!(s.to_vec_f32().unwrap().is_empty());
    }

    /// The tensor-level optimizer ops on CUDA (one multi-tensor launch each)
    /// against the CPU loop: ragged sizes, two steps, the global norm.
    #[test]
    fn adamw_step_and_grad_norm_match_the_cpu() {
        let Some(dev) = gpu() else { return };
        let sizes: [&[usize]; 4] = [&[1], &[7, 3], &[4097], &[33, 130]];
        let mk = |seed: u64| sizes.iter().enumerate().map(|(i, d)| randn(seed + i as u64, d)).collect::<Vec<_>>();
        let (mut pc, gc) = (mk(10), mk(20));
        let (mut mc, mut vc) = (pc.iter().map(|t| t.zeros_like().unwrap()).collect::<Vec<_>>(), Vec::new());
        vc.extend(pc.iter().map(|t| t.zeros_like().unwrap()));
        let on = |ts: &[Tensor]| ts.iter().map(|t| t.to_device(dev).unwrap()).collect::<Vec<_>>();
        let (mut pg, gg, mut mg, mut vg) = (on(&pc), on(&gc), on(&mc), on(&vc));
        let norm_c = ops::grad_norm(&gc.iter().collect::<Vec<_>>()).unwrap();
        let norm_g = ops::grad_norm(&gg.iter().collect::<Vec<_>>()).unwrap();
        assert!((norm_c - norm_g).abs() <= 1e-5 * norm_c, "grad norm cpu {norm_c} cuda {norm_g}");
        let h = ops::AdamW { lr: 1e-2, weight_decay: 0.1, ..Default::default() };
        for step in 1..=2 {
            for (p, g, m, v) in [(&mut pc, &gc, &mut mc, &mut vc), (&mut pg, &gg, &mut mg, &mut vg)] {
                let mut slots: Vec<ops::AdamSlot<'_>> = p
                    .iter_mut()
                    .zip(g.iter())
                    .zip(m.iter_mut().zip(v.iter_mut()))
                    .map(|((param, grad), (m, v))| ops::AdamSlot { param, grad, m, v })
                    .collect();
                ops::adamw_step(&mut slots, &h, step, 0.75).unwrap();
            }
        }
        for (i, (a, b)) in pc.iter().zip(&pg).enumerate() {
            assert_eq!(b.device(), dev);
            let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-3)).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "tensor {i} ({:?}): params differ by {worst} (relative)", sizes[i]);
        }
    }

    /// NaN logits stop sampling with the row named, as on the CPU.
    #[test]
    fn sampling_rejects_nan_logits_naming_the_row() {
        let Some(dev) = gpu() else { return };
        let mut x = Philox::new(7, 0).normal_vec(3 * 50, 1.0);
        x[50 + 17] = f32::NAN;
        let logits = Tensor::from_f32(x, [3, 50], Device::Cpu).unwrap();
        let p = ops::sampling::SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 };
        for t in [logits.clone(), logits.to_device(dev).unwrap()] {
            let e = ops::sampling::sample(&t, 4, &p, 1, 0).unwrap_err().to_string();
            assert!(e.contains("row 1") && e.contains("NaN"), "{:?}: {e}", t.device());
        }
    }

    /// The paged KV ops on CUDA against the CPU: `store_kv` writes the new
    /// rows where the tables say, and `attention_decode_paged` (the fused
    /// kernel; a group wider than it takes the gathered three-op path) reads
    /// them back through the tables.
    #[test]
    fn paged_kv_ops_match_the_cpu() {
        let Some(dev) = gpu() else { return };
        let close = |what: &str, a: &Tensor, b: &Tensor, tol: f32| {
            let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(worst <= tol, "{what}: differs by {worst}");
        };
        let bs = 4usize;
        // (samples per group, prefix lengths): two small groups, then one past the kernel's 32.
        for (groups, prefixes) in [(vec![3usize, 2], vec![7usize, 12]), (vec![33], vec![5])] {
            let s: usize = groups.iter().sum();
            let suffix_lens: Vec<usize> = (0..s).map(|i| 1 + i % 6).collect();
            let blocks = prefixes.iter().map(|p| p.div_ceil(bs)).sum::<usize>() + s * 2 + 3;
            let bf =
                |seed, dims: &[usize]| randn(seed, dims).to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
            let (q, k_new, v_new) = (bf(1, &[s, 4, 32]), bf(2, &[s, 2, 32]), bf(3, &[s, 2, 32]));
            let (kp, vp) = (bf(4, &[blocks * bs, 2, 32]), bf(5, &[blocks * bs, 2, 32]));
            let run = |device: Device| {
                // Blocks handed out from the top down, so no table is the identity.
                let mut next = (0..blocks as u32).rev();
                let mut prefix = ops::BlockTable::new(groups.len(), 3, device).unwrap();
                let mut suffix = ops::BlockTable::new(s, 2, device).unwrap();
                for (g, &p) in prefixes.iter().enumerate() {
                    for b in 0..p.div_ceil(bs) {
                        prefix.set(groups.len() - 1 - g, b, next.next().unwrap()).unwrap();
                    }
                }
                let mut store = Vec::new();
                for (i, &l) in suffix_lens.iter().enumerate() {
                    let ids: Vec<u32> = (0..l.div_ceil(bs)).map(|_| next.next().unwrap()).collect();
                    for (b, &id) in ids.iter().enumerate() {
                        suffix.set(i, b, id).unwrap();
                    }
                    store.push((ids[(l - 1) / bs] as usize * bs + (l - 1) % bs) as i32);
                }
                prefix.sync().unwrap();
                suffix.sync().unwrap();
                let mut cu = vec![0usize];
                for &g in &groups {
                    cu.push(cu.last().unwrap() + g);
                }
                let gslot: Vec<i32> = (0..groups.len()).rev().map(|g| g as i32).collect();
                let plen: Vec<i32> = prefixes.iter().map(|&p| p as i32).collect();
                let slen: Vec<i32> = suffix_lens.iter().map(|&l| l as i32).collect();
                let rows = ops::DecodeRows::new(cu, gslot, plen, (0..s as i32).collect(), slen, store, device).unwrap();
                let on = |t: &Tensor| t.to_device(device).unwrap();
                // The pools in the cache's dtype there (bf16 on CUDA).
                let pool = |t: &Tensor| on(t).to_dtype(actial::model::text::kv_dtype(device)).unwrap();
                let (mut kp, mut vp) = (pool(&kp), pool(&vp));
                ops::store_kv(&mut kp, &mut vp, &on(&k_new), &on(&v_new), &rows.store_rows()).unwrap();
                let kv = ops::PagedKv { k_pool: &kp, v_pool: &vp, block_size: bs, prefix: &prefix, suffix: &suffix };
                let out = ops::attention_decode_paged(&on(&q), &kv, &rows, 32f32.powf(-0.5)).unwrap();
                (out, kp)
            };
            let (want, kp_cpu) = run(Device::Cpu);
            let (got, kp_gpu) = run(dev);
            assert_eq!(got.out.device(), dev);
            close(&format!("stored keys, groups {groups:?}"), &kp_gpu, &kp_cpu, 0.0);
            close(&format!("out, groups {groups:?}"), &got.out, &want.out, 2e-2);
            close(&format!("lse, groups {groups:?}"), &got.lse, &want.lse, 1e-3);
        }
    }

    /// One image sample with supervised answer tokens.
    fn batch(cfg: &actial::model::Qwen25VlConfig) -> Batch {
        let tok = tiny_tokenizer().unwrap();
        let mut rng = Philox::new(3, 0);
        let img = image::RgbImage::from_fn(112, 84, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 3) as u8, (rng.next_u32() % 256) as u8])
        });
        let px = preprocess(&[img], &ImageProcessorConfig::for_vision(&cfg.vision)).unwrap();
        let counts: Vec<usize> = px.grids.iter().map(|g| g[0] * g[1] * g[2] / 4).collect();
        let msg =
            Message { role: Role::User, content: vec![Content::Image, Content::Text("which colour is left?".into())] };
        let ids = tok.encode_chat(&[msg], &counts, true).unwrap().ids;
        let n = ids.len();
        // Supervise the last 6 tokens (labels are next-token targets inside Batch).
        let labels: Vec<i32> = ids.iter().enumerate().map(|(i, &t)| if i + 6 >= n { t as i32 } else { -100 }).collect();
        Batch::new(&[Sample { tokens: ids, labels: Some(labels) }], Some(px.pixel_values), &px.grids, cfg).unwrap()
    }

    fn grads(model: &mut Qwen25Vl) -> BTreeMap<String, Vec<f32>> {
        let mut out = BTreeMap::new();
        model.visit(&mut |name, p| {
            if let Some(g) = &p.grad {
                out.insert(name, g.to_vec_f32().unwrap());
            }
        });
        out
    }

    /// ‖a − b‖ / ‖b‖ (with a floor so an all-zero reference does not divide by 0).
    fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
        (num / den.max(1e-20)).sqrt()
    }

    /// Forward + backward of `m` and of its copy on `dev`: logits, loss and
    /// every gradient must agree within the bf16 tolerances.
    fn assert_matches_cpu(m: Qwen25Vl, dev: Device) {
        let (lc, lg, mut cpu, mut gpu, logit_err) = both(m, dev);
        println!("loss cpu {lc:.5} cuda {lg:.5}; logits relative L2 error {logit_err:.2e}");
        assert!(logit_err < 2e-2, "logits differ by {logit_err:.3e} (relative L2)");
        assert!((lc - lg).abs() <= 1e-2 * lc.abs().max(1.0), "loss cpu {lc} vs cuda {lg}");
        compare_grads(&mut cpu, &mut gpu, 5e-2);
    }

    /// Runs forward + backward on both devices; returns the CPU and GPU models.
    fn both(mut cpu: Qwen25Vl, dev: Device) -> (f32, f32, Qwen25Vl, Qwen25Vl, f64) {
        let b = batch(&cpu.config);
        let mut gpu = cpu.clone();
        gpu.to_device(dev, DType::BF16).unwrap();
        assert_eq!(gpu.device(), dev);
        let (logits_cpu, _) = cpu.forward(&b).unwrap();
        let (logits_gpu, _) = gpu.forward(&b).unwrap();
        assert_eq!(logits_gpu.device(), dev);
        let logit_err = rel_l2(&logits_gpu.to_vec_f32().unwrap(), &logits_cpu.to_vec_f32().unwrap());
        cpu.zero_grad().unwrap();
        gpu.zero_grad().unwrap();
        let lc = cpu.forward_backward(&b, None).unwrap().loss;
        let lg = gpu.forward_backward(&b, None).unwrap().loss;
        (lc, lg, cpu, gpu, logit_err)
    }

    fn compare_grads(cpu: &mut Qwen25Vl, gpu: &mut Qwen25Vl, tol: f64) {
        let (gc, gg) = (grads(cpu), grads(gpu));
        assert_eq!(gc.keys().collect::<Vec<_>>(), gg.keys().collect::<Vec<_>>(), "the same parameters train");
        assert!(!gc.is_empty());
        let mut worst = (String::new(), 0.0f64);
        for (name, c) in &gc {
            let g = &gg[name];
            assert!(g.iter().all(|v| v.is_finite()), "{name}: non-finite CUDA gradient");
            let e = rel_l2(g, c);
            if e > worst.1 {
                worst = (name.clone(), e);
            }
        }
        println!("{} gradients, worst relative L2 error {:.2e} ({})", gc.len(), worst.1, worst.0);
        assert!(worst.1 < tol, "gradient of {} differs by {:.3e} (relative L2) between CUDA and CPU", worst.0, worst.1);
    }

    fn bf16_model(seed: u64) -> Qwen25Vl {
        let tok = tiny_tokenizer().unwrap();
        let mut m = Qwen25Vl::random(tiny_config(&tok), seed).unwrap();
        // Both devices start from the weights a bf16 GPU holds.
        m.to_device(Device::Cpu, DType::BF16).unwrap();
        m
    }

    #[test]
    fn tiny_model_full_parameter_forward_and_backward_match_the_cpu() {
        let Some(dev) = gpu() else { return };
        let mut m = bf16_model(7);
        for part in [Part::VisionTower, Part::Merger, Part::Language] {
            m.set_trainable(part, true).unwrap();
        }
        assert_matches_cpu(m, dev);
    }

    #[test]
    fn tiny_model_lora_forward_and_backward_match_the_cpu() {
        let Some(dev) = gpu() else { return };
        assert_matches_cpu(with_lora(bf16_model(8)), dev);
    }

    /// Rank-4 adapters on q/v/qkv/down_proj of both towers, with B drawn
    /// (it starts at zero) so that dA is not zero either.
    fn with_lora(mut m: Qwen25Vl) -> Qwen25Vl {
        let spec = LoraSpec {
            rank: 4,
            alpha: 8.0,
            targets: vec!["q_proj".into(), "v_proj".into(), "qkv".into(), "down_proj".into()],
            language: true,
            vision: true,
            seed: 2,
        };
        m.add_lora(&spec).unwrap();
        let mut rng = Philox::new(9, 0);
        m.visit(&mut |n, p| {
            if n.ends_with("lora_B.weight") {
                let v = rng.normal_vec(p.value.numel(), 0.05);
                let b = Tensor::from_f32(v, p.value.dims(), Device::Cpu).unwrap();
                // bf16-representable values, so both devices start from the same B.
                p.value = b.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
            }
        });
        m
    }

    /// The CUDA path at Qwen2.5-VL-3B's widths (text 2048, 16 query / 2 kv
    /// heads of 128, MLP 11008, vocabulary 151,936, tied; vision 1280, 16
    /// heads of 80, windows of 112 px, patch 14; M-RoPE [16, 24, 24]) with one
    /// decoder layer and one vision block, against the CPU: forward and LoRA
    /// backward of an image sample, then a grouped rollout whose log-probs
    /// must be the CPU's teacher forcing of the same tokens.
    #[test]
    fn released_3b_widths_match_the_cpu() {
        use actial::model::rollout::PromptInput;
        let Some(dev) = gpu() else { return };
        let tok = tiny_tokenizer().unwrap();
        let cfg = actial::model::tiny::with_released_widths(&tok, "3b", 1).unwrap();
        let (t, v) = (&cfg.text, &cfg.vision);
        assert_eq!((t.hidden_size, t.num_attention_heads, t.num_key_value_heads, t.head_dim()), (2048, 16, 2, 128));
        assert_eq!((t.vocab_size, t.tie_word_embeddings, t.mrope_section), (151_936, true, [16, 24, 24]));
        assert_eq!(
            (v.hidden_size, v.num_heads, v.hidden_size / v.num_heads, v.window_size, v.patch_size),
            (1280, 16, 80, 112, 14)
        );
        let mut m = Qwen25Vl::random(cfg.clone(), 4).unwrap();
        m.to_device(Device::Cpu, DType::BF16).unwrap();
        let m = with_lora(m);
        let (lc, lg, cpu, gpu_model, logit_err) = both(m, dev);
        println!("3B widths: loss cpu {lc:.5} cuda {lg:.5}; logits relative L2 error {logit_err:.2e}");
        assert!(
            logit_err < 2e-2 && (lc - lg).abs() <= 1e-2 * lc.abs().max(1.0),
            "loss {lc} vs {lg}, logits {logit_err}"
        );
        let (mut cpu, mut gpu_model) = (cpu, gpu_model);
        compare_grads(&mut cpu, &mut gpu_model, 5e-2);

        let prompt: Vec<u32> = (0..9).map(|i| (31 * i + 40) % 600).collect();
        let input = PromptInput { tokens: prompt.clone(), pixels: None, grids: vec![] };
        let out = gpu_model.rollout(&[input], &sampling_rollout(&gpu_model, 2, 3)).unwrap();
        let mut worst = 0.0f32;
        for s in &out {
            let seq: Vec<u32> = prompt.iter().chain(&s.tokens).copied().collect();
            let b = Batch::new(&[Sample { tokens: seq, labels: None }], None, &[], &cfg).unwrap();
            let logits = cpu.forward(&b).unwrap().0.to_vec_f32().unwrap();
            for (j, (&tok, &lp)) in s.tokens.iter().zip(&s.logprobs).enumerate() {
                let row = &logits[(prompt.len() - 1 + j) * t.vocab_size..][..t.vocab_size];
                let mx = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                let lse = mx + row.iter().map(|&x| (x - mx).exp()).sum::<f32>().ln();
                worst = worst.max((lp - (row[tok as usize] - lse)).abs());
            }
        }
        println!("3B widths: CUDA rollout log-probs vs CPU teacher forcing: worst |difference| {worst:.2e}");
        assert!(worst < 5e-2, "rollout log-probs differ from the CPU's teacher forcing by {worst}");
    }

    /// An SFT step through the trainer (LoRA on every projection, the fused LM
    /// head + cross-entropy in chunks, AdamW) at Qwen2.5-VL-3B's widths with one
    /// decoder layer, CUDA against the CPU: two steps on one text sample, the
    /// second scoring the first's update.
    #[test]
    fn an_sft_step_at_3b_widths_follows_the_cpu() {
        use actial::train::data::Example;
        let Some(_dev) = gpu() else { return };
        let tok = tiny_tokenizer().unwrap();
        let cfg = actial::model::tiny::with_released_widths(&tok, "3b", 1).unwrap();
        let mut base = Qwen25Vl::random(cfg.clone(), 6).unwrap();
        base.to_device(Device::Cpu, DType::BF16).unwrap();
        let tokens: Vec<u32> = (0..24).map(|i| (37 * i + 11) % 900).collect();
        let labels: Vec<i32> = tokens.iter().enumerate().map(|(i, &t)| if i >= 16 { t as i32 } else { -100 }).collect();
        let ex = Example {
            id: "3b-text".into(),
            kind: "text".into(),
            tokens,
            labels,
            pixels: None,
            grids: vec![],
            target_tokens: 8,
            reasoning: false,
            pair: "3b-text".into(),
        };
        let mut c = actial::train::config::SftConfig::tiny_defaults();
        (c.run.global_batch, c.run.micro_batch, c.run.steps, c.optim.warmup_steps) = (1, 1, 2, 1);
        c.lora.enabled = true;
        let mut losses = Vec::new();
        for device in ["cpu", "cuda"] {
            let mut c = c.clone();
            c.run.device = device.into();
            let mut t = actial::train::sft::SftTrainer::new(c, base.clone(), vec![ex.clone()]).unwrap();
            let l: Vec<f64> = (0..2).map(|_| t.train_step().unwrap().loss).collect();
            losses.push(l);
        }
        println!("3B widths, LoRA SFT: cpu losses {:?}, cuda losses {:?}", losses[0], losses[1]);
        for (a, b) in losses[0].iter().zip(&losses[1]) {
            assert!((a - b).abs() <= 2e-2 * a.abs().max(1.0), "cpu {:?} vs cuda {:?}", losses[0], losses[1]);
        }
        assert!(losses[1][1] < losses[1][0], "the CUDA step did not lower the loss: {:?}", losses[1]);
    }

    /// GRPO's CUDA-only paths: rollouts (the shared prompt prefilled once, the
    /// group decoded by the cascade kernel, tokens drawn by the device sampler)
    /// must carry the log-probs the CPU model assigns to the same tokens by
    /// teacher forcing, and the accumulated GRPO loss and gradient over the same
    /// rollouts (off-policy, with a reference, so ratio, clip and k3 all act)
    /// must match the CPU's.
    #[test]
    fn grpo_rollouts_and_gradient_on_cuda_match_the_cpu() {
        use actial::train::grpo::{GrpoParams, LossAgg};
        use actial::train::grpo_trainer::{Rollout, UpdateStats};
        let Some(_dev) = gpu() else { return };
        let trainer = |device| crate::common::tiny_grpo_trainer(bf16_model(5), device, 0.05);
        let (mut cpu, mut gpu) = (trainer("cpu"), trainer("cuda"));
        assert!(matches!(gpu.model.device(), Device::Cuda(_)));
        let mut rolls = crate::common::fixed_advantage_rollouts(&gpu);
        assert_eq!(rolls.len(), 8, "2 prompts x a group of 4");
        let refs: Vec<&Rollout> = rolls.iter().collect();
        let teacher = cpu.logprobs(&cpu.model, &refs).unwrap();
        let mut worst = 0.0f32;
        for (r, t) in rolls.iter().zip(&teacher) {
            assert_eq!(r.old_logp.len(), t.len());
            for (a, b) in r.old_logp.iter().zip(t) {
                assert!(a.is_finite() && *a <= 0.0, "rollout log-prob {a}");
                worst = worst.max((a - b).abs());
            }
        }
        println!("CUDA rollout log-probs vs CPU teacher forcing: worst |difference| {worst:.2e}");
        assert!(worst < 5e-2, "CUDA rollout log-probs differ from the CPU's teacher forcing by {worst}");

        for r in &mut rolls {
            r.ref_logp = r.old_logp.iter().map(|x| x + 0.3).collect();
            r.old_logp = r.old_logp.iter().map(|x| x - 0.05).collect();
        }
        let mini: Vec<usize> = (0..rolls.len()).collect();
        let tokens: usize = rolls.iter().map(|r| r.tokens.len()).sum();
        let p = GrpoParams {
            eps_low: 0.2,
            eps_high: 0.2,
            beta: 0.05,
            clip_ratio_c: 3.0,
            kl_clamp: 10.0,
            agg: LossAgg::TokenMean,
            adv_eps: 1e-4,
            max_completion_len: 6,
            global_tokens: tokens,
            global_seqs: rolls.len(),
        };
        let mut loss = Vec::new();
        for t in [&mut cpu, &mut gpu] {
            t.model.zero_grad().unwrap();
            let mut st = UpdateStats::default();
            t.accumulate(&rolls, &mini, &p, true, &mut st).unwrap();
            loss.push(st.loss);
        }
        println!("GRPO loss cpu {:.5} cuda {:.5}", loss[0], loss[1]);
        assert!(
            (loss[0] - loss[1]).abs() <= 1e-2 * loss[0].abs().max(1e-1),
            "GRPO loss cpu {} cuda {}",
            loss[0],
            loss[1]
        );
        compare_grads(&mut cpu.model, &mut gpu.model, 5e-2);
    }

    /// Budget: a rollout decode step sends the host only the sampled ids and
    /// their log-probs (16 bytes per active sample at most; 8 today), even with
    /// the vision ids banned as GRPO and evaluation ban them: the sampler masks
    /// them on the device. (Before, a banned list sent every step's whole
    /// `[active samples, vocab]` logits to the host: 4·vocab bytes a sample.)
    /// Counted on a device handle of this test's own.
    #[test]
    fn a_rollout_decode_step_sends_the_host_only_ids_and_logprobs() {
        use actial::cuda::accounting::Phase;
        use actial::model::rollout::PromptInput;
        let Some(dev) = gpu() else { return };
        let iso = actial::cuda::device::isolated(0).unwrap();
        let mut m = bf16_model(11);
        m.to_device(dev, DType::BF16).unwrap();
        let vocab = m.config.text.vocab_size;
        let prompts: Vec<PromptInput> = (0..3)
            .map(|p| PromptInput {
                tokens: (0..5 + 2 * p).map(|i| (17 * i + 3 * p + 40) % 200).collect(),
                pixels: None,
                grids: vec![],
            })
            .collect();
        let max_new = 9;
        let c = sampling_rollout(&m, 4, max_new);
        iso.reset_accounting();
        let out = m.rollout(&prompts, &c).unwrap();
        let acc = iso.take_accounting();
        println!("{}", acc.table());
        let draws: usize = out.iter().map(|s| s.tokens.len() - 1).sum();
        assert_eq!(draws, 3 * 4 * (max_new - 1), "no stop ids: every sample decodes every step");
        let banned = m.vision_token_ids();
        assert!(out.iter().all(|s| s.tokens.iter().all(|t| !banned.contains(t))), "a banned id was drawn");
        let decode = acc.phase(Phase::RolloutDecode);
        println!(
            "decode: {} B device-to-host for {draws} draws ({:.1} B each; full logits would be {} B each)",
            decode.d2h_bytes,
            decode.d2h_bytes as f64 / draws as f64,
            4 * vocab
        );
        assert!(
            decode.d2h_bytes <= 16 * draws as u64,
            "decode sent {} B to the host for {draws} draws",
            decode.d2h_bytes
        );
        assert_eq!(decode.d2h_copies, 2 * (max_new as u64 - 1), "one copy of ids and one of log-probs per step");
        let prefill = acc.phase(Phase::RolloutPrefill);
        assert!(prefill.d2h_bytes <= 16 * 12, "prefill: {} B to the host for 12 first draws", prefill.d2h_bytes);
        // What goes in: ids, positions and stream ids (16 B a draw), the
        // step's rows for the paged KV (slots, lengths, store rows: 12 B a
        // draw, one upload for every layer), block-table entries (8 B per
        // sample every 16 tokens), a few per-step constants. Not the rope rows
        // (the table is uploaded once per rollout, in the prefill): before,
        // each step sent 2·head_dim·4 B of them per draw; nor per-layer
        // offsets (before paged KV, 8 B a draw per layer).
        let budget = 32 * draws as u64 + 1024 * (max_new as u64 - 1);
        println!(
            "decode: {:.0} B host-to-device per draw (budget {budget} B in all)",
            decode.h2d_bytes as f64 / draws as f64
        );
        assert!(decode.h2d_bytes <= budget, "decode sent the device {} B, budget {budget}", decode.h2d_bytes);
    }

    /// Rollouts at temperature 1 with no stop ids (every sample decodes every
    /// step), vision ids banned, all samples in flight.
    fn sampling_rollout(m: &Qwen25Vl, group: usize, max_new: usize) -> actial::model::rollout::RolloutConfig {
        actial::model::rollout::RolloutConfig {
            group,
            max_new_tokens: max_new,
            sampling: ops::sampling::SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 },
            stop: vec![],
            banned: m.vision_token_ids(),
            seed: 3,
            stream: 0,
            shards: 0,
            max_inflight_samples: 0,
        }
    }

    /// Budget: a decode step launches a fixed number of kernels (and cuBLASLt
    /// calls) per decoder layer, whatever the samples in flight: new keys and
    /// values go to the paged pools in one launch per pool, the attention reads
    /// them in one, and the step's rows are uploaded once for all layers.
    /// Before paged KV, each sample cost two `write_rows` copies, two narrows
    /// and its share of a `cat` per layer: 94.5 launches per layer per step at
    /// 32 samples, 285 at 128 (3B widths on an H200, docs/GPU-RUNS.md).
    #[test]
    fn a_decode_step_launches_a_fixed_number_of_kernels_per_layer() {
        use actial::cuda::accounting::Phase;
        use actial::model::rollout::PromptInput;
        const PER_LAYER: f64 = 16.0;
        let Some(dev) = gpu() else { return };
        let iso = actial::cuda::device::isolated(0).unwrap();
        let max_new = 9;
        // Launches + cuBLASLt calls per decode step, of the tiny model cut to
        // `layers` layers, rolling out 3 prompts in groups of `group`.
        let per_step = |layers: usize, group: usize| -> f64 {
            let mut m = bf16_model(11);
            m.text.layers.truncate(layers);
            m.text.recompute.truncate(layers);
            (m.config.text.num_hidden_layers, m.text.cfg.num_hidden_layers) = (layers, layers);
            m.to_device(dev, DType::BF16).unwrap();
            let prompts: Vec<PromptInput> = (0..3)
                .map(|p| PromptInput {
                    tokens: (0..6 + p).map(|i| (13 * i + p + 40) % 200).collect(),
                    pixels: None,
                    grids: vec![],
                })
                .collect();
            let c = sampling_rollout(&m, group, max_new);
            iso.reset_accounting();
            m.rollout(&prompts, &c).unwrap();
            let acc = iso.take_accounting();
            let d = acc.phase(Phase::RolloutDecode);
            (d.launches + d.gemms) as f64 / (max_new - 1) as f64
        };
        let (two, four) = (per_step(2, 2), per_step(4, 2));
        let per_layer = (four - two) / 2.0;
        println!(
            "decode step: {four} launches with 4 layers, {two} with 2: {per_layer} per layer, {} per step besides",
            two - 2.0 * per_layer
        );
        assert_eq!(per_step(4, 8), four, "4x the samples in flight changed the launches per step");
        assert_eq!(per_step(2, 16), two, "8x the samples in flight changed the launches per step");
        assert!(per_layer <= PER_LAYER, "{per_layer} launches per decoder layer per decode step (budget {PER_LAYER})");
    }

    /// A GRPO step on CUDA reports what the device did, per phase, in its
    /// metrics (one line of metrics.jsonl); the trainer keeps the run's total.
    /// Budget: outside the rollout (whose decode holds `[samples in flight,
    /// vocab]` logits), no buffer of more vocabulary rows than one logit chunk
    /// is allocated: the policy and reference passes run the LM head fused with
    /// the log-probs, on the response positions only.
    #[test]
    fn grpo_step_metrics_carry_the_device_accounting() {
        use actial::cuda::accounting::Phase;
        let Some(_dev) = gpu() else { return };
        let iso = actial::cuda::device::isolated(0).unwrap();
        let mut t = crate::common::tiny_grpo_trainer(bf16_model(5), "cuda", 0.05);
        // Every mini-batch updates (the KL term alone when rewards tie), so the
        // backward and optimizer phases run whatever the rollouts score.
        t.cfg.grpo.skip_flat_updates = false;
        let vocab = t.model.config.text.vocab_size;
        t.model.text.logit_chunk_bytes = 4 * vocab * 4; // 4 rows of logits at a time
        t.reference.as_mut().expect("beta > 0 keeps a reference").text.logit_chunk_bytes = 4 * vocab * 4;
        iso.start_allocation_log();
        let m = t.train_step().unwrap();
        let log = iso.take_allocation_log();
        let acc = m.cuda.clone().expect("a CUDA step carries its accounting");
        println!("{}", acc.table());
        let draws = (m.response_len_mean * m.groups as f64 * 4.0).round() as u64 - (m.groups as u64 * 4);
        let decode = acc.phase(Phase::RolloutDecode);
        assert!(decode.launches > 0 && decode.d2h_bytes <= 16 * draws.max(1), "{decode:?} for {draws} draws");
        for p in [Phase::RolloutPrefill, Phase::LmForward, Phase::Loss, Phase::Backward, Phase::Optimizer] {
            assert!(acc.phase(p).launches + acc.phase(p).gemms > 0, "{} did nothing on the device", p.name());
        }
        let (v, hidden) = (vocab as u64, t.model.config.text.hidden_size as u64);
        let weight_shaped = |b: u64| b == v * hidden * 2 || b == v * hidden * 4;
        for &(p, b) in log.iter().filter(|(p, _)| ![Phase::RolloutPrefill, Phase::RolloutDecode].contains(p)) {
            let n = [2u64, 4].into_iter().filter(|e| b.is_multiple_of(v * e)).map(|e| b / (v * e)).max();
            if let Some(n) = n.filter(|_| !weight_shaped(b)) {
                assert!(n <= 4, "{}: a [{n}, {vocab}] buffer ({b} bytes)", p.name());
            }
        }
        // Budget: the update (policy forward, loss, backward, optimizer) sends
        // the host a handful of scalars, whatever the response lengths: four
        // f64 sums of the GRPO loss per micro-batch, and per optimizer step the
        // gradient norm (8 B) and whether the update stayed finite (4 B).
        // (Before: every token's log-prob and entropy, 8 bytes a token.)
        let g = &t.cfg.grpo;
        let per_mini = g.mini_batch_prompts * g.group;
        let minis = (g.prompts_per_step * g.group).div_ceil(per_mini) * g.ppo_epochs;
        let micros = minis * per_mini.div_ceil(t.cfg.grpo_micro_batch());
        let update_d2h: u64 = [Phase::Vision, Phase::LmForward, Phase::Loss, Phase::Backward, Phase::Optimizer]
            .iter()
            .map(|&p| acc.phase(p).d2h_bytes)
            .sum();
        let response_tokens = (m.response_len_mean * m.groups as f64 * g.group as f64).round() as u64;
        println!("update: {update_d2h} B to the host for {response_tokens} response tokens in {micros} micro-batches");
        assert!(
            update_d2h <= 32 * micros as u64 + 12 * minis as u64,
            "the update sent {update_d2h} B to the host ({micros} micro-batches, {minis} optimizer steps)"
        );
        assert!(acc.pool_peak_bytes > 0);
        let line = serde_json::to_value(&m).unwrap();
        assert!(line["cuda"]["phases"]["rollout_decode"]["launches"].as_u64().unwrap() > 0, "{line}");
        let total = t.device_accounting.clone().expect("the run's total");
        assert!(total.total().launches >= acc.total().launches);
        let cpu = crate::common::tiny_grpo_trainer(bf16_model(5), "cpu", 0.05).train_step().unwrap();
        assert!(cpu.cuda.is_none() && serde_json::to_value(&cpu).unwrap().get("cuda").is_none());
    }

    /// Budget: an SFT step never allocates a `[tokens, vocab]` tensor on the
    /// device (the LM head and the loss are fused, chunk by chunk), and it
    /// sends the host only a handful of scalars (the loss sum, the grad norm).
    #[test]
    fn an_sft_step_never_allocates_tokens_by_vocab() {
        use actial::cuda::accounting::Phase;
        let Some(_dev) = gpu() else { return };
        let iso = actial::cuda::device::isolated(0).unwrap();
        let dir = std::env::temp_dir().join(format!("actial-cuda-sft-budget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ex = crate::common::viewpoint_examples(2, &dir);
        let mut c = actial::train::config::SftConfig::tiny_defaults();
        (c.run.global_batch, c.run.micro_batch, c.run.steps) = (4, 4, 2);
        c.run.device = "cuda".into();
        let mut t = actial::train::sft::SftTrainer::new(c, bf16_model(3), ex).unwrap();
        let vocab = t.model.config.text.vocab_size;
        t.model.text.logit_chunk_bytes = 4 * vocab * 32; // 32 rows of logits at a time
        assert_eq!(t.model.text.logit_chunk_rows(), 32);
        iso.reset_accounting();
        iso.start_allocation_log();
        let m = t.train_step().unwrap();
        let log = iso.take_allocation_log();
        let _ = std::fs::remove_dir_all(&dir);
        let acc = m.cuda.clone().expect("a CUDA step carries its accounting");
        println!("{}", acc.table());
        let rows = m.tokens as u64;
        assert!(rows > 32, "the batch must span several chunks ({rows} rows)");
        // A buffer of n rows of the vocabulary (bf16 or f32), n past one chunk,
        // other than the [vocab, hidden] weights and their gradients.
        let (v, hidden) = (vocab as u64, t.model.config.text.hidden_size as u64);
        let weight_shaped = |b: u64| b == v * hidden * 2 || b == v * hidden * 4;
        let vocab_rows = |b: u64| [2u64, 4].into_iter().filter(|e| b.is_multiple_of(v * e)).map(|e| b / (v * e)).max();
        for &(p, b) in &log {
            if let Some(n) = vocab_rows(b).filter(|_| !weight_shaped(b)) {
                assert!(n <= 32, "{}: a [{n}, {vocab}] buffer ({b} bytes) on a {rows}-row batch", p.name());
            }
        }
        assert!(log.iter().any(|&(p, b)| p == Phase::Loss && b == 32 * v * 2), "no [32, vocab] chunk buffer");
        let loss = acc.phase(Phase::Loss);
        assert!(loss.gemms >= 3 * rows.div_ceil(32), "one logits GEMM and two backward GEMMs per chunk: {loss:?}");
        // Out: a handful of scalars, whatever the rows: the loss sum per
        // micro-batch (8 B, summed on the device), the optimizer's grad norm
        // and its finiteness flag. Before: one f32 loss per row (1.66 KiB for
        // this batch).
        let out = acc.total().d2h_bytes;
        assert!(out <= 64, "{out} bytes to the host for a {rows}-row step");
    }

    /// The planner (`actial-train --plan`) predicts the pool's high-water mark
    /// of an SFT step within 15%, full fine-tuning and LoRA, at scaled-down
    /// dims where activations weigh: text width 256, 4 layers, vocabulary
    /// 4096, 8 samples of two photos in one micro-batch.
    #[test]
    fn the_planner_predicts_the_pool_peak_of_an_sft_step() {
        use actial::train::plan::{Workload, step_memory};
        let Some(_dev) = gpu() else { return };
        let dir = std::env::temp_dir().join(format!("actial-cuda-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ex = crate::common::viewpoint_examples(4, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        let tok = tiny_tokenizer().unwrap();
        let mut cfg = tiny_config(&tok);
        (cfg.text.hidden_size, cfg.text.intermediate_size, cfg.text.vocab_size) = (256, 704, 4096);
        (cfg.text.num_attention_heads, cfg.text.num_key_value_heads, cfg.text.mrope_section) = (4, 2, [8, 12, 12]);
        cfg.vision.out_hidden_size = 256;
        for lora in [false, true] {
            let _iso = actial::cuda::device::isolated(0).unwrap();
            let mut model = Qwen25Vl::random(cfg.clone(), 4).unwrap();
            model.to_device(Device::Cpu, DType::BF16).unwrap();
            let mut c = actial::train::config::SftConfig::tiny_defaults();
            (c.run.global_batch, c.run.micro_batch, c.run.steps) = (8, 8, 1);
            c.run.device = "cuda".into();
            c.lora.enabled = lora;
            (c.run.steps, c.optim.warmup_steps) = (2, 1);
            let mut t = actial::train::sft::SftTrainer::new(c.clone(), model, ex.clone()).unwrap();
            // The second step: the cuBLASLt workspace exists (the first GEMM
            // creates it), as in every step after it.
            t.train_step().unwrap();
            let m = t.train_step().unwrap();
            // The pool's high-water mark over the step (the trainer restarts it
            // at the step's start).
            let measured = m.cuda.as_ref().expect("CUDA steps carry their accounting").pool_peak_bytes;
            let idx: Vec<usize> = (8..16).map(|p| t.example_at(p)).collect();
            let patches: usize = idx.iter().map(|&i| t.examples[i].pixels.as_ref().map_or(0, |p| p.dims()[0])).sum();
            let w = Workload { tokens: m.tokens as u64, patches: patches as u64 };
            let plan = step_memory(&cfg, &c, w, false);
            for (name, b) in &plan.items {
                println!("  {name:<60} {b:>12}");
            }
            let err = plan.peak as f64 / measured as f64 - 1.0;
            println!("lora {lora}: {w:?}: planned {} B, measured {measured} B ({:+.1}%)", plan.peak, 100.0 * err);
            assert!(
                err.abs() <= 0.15,
                "lora {lora}: the plan ({}) is {:+.1}% off the pool's peak ({measured})",
                plan.peak,
                100.0 * err
            );
        }
    }

    /// The SFT trainer on CUDA (bf16 frozen weights, f32 masters, the
    /// multi-tensor AdamW launch) follows the CPU's loss curve over 4 steps, for
    /// full fine-tuning and LoRA.
    #[test]
    fn sft_steps_on_cuda_follow_the_cpu() {
        let Some(_dev) = gpu() else { return };
        let dir = std::env::temp_dir().join(format!("actial-cuda-sft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ex = crate::common::viewpoint_examples(2, &dir);
        for lora in [false, true] {
            let mut c = actial::train::config::SftConfig::tiny_defaults();
            c.run.global_batch = 4;
            c.run.micro_batch = 2;
            c.run.steps = 4;
            c.optim.warmup_steps = 1;
            c.lora.enabled = lora;
            c.lora.vision = true;
            c.lora.targets = vec!["q_proj".into(), "v_proj".into(), "qkv".into(), "down_proj".into()];
            let mut on_gpu = c.clone();
            on_gpu.run.device = "cuda".into();
            let mut cpu = actial::train::sft::SftTrainer::new(c, bf16_model(3), ex.clone()).unwrap();
            let mut gpu = actial::train::sft::SftTrainer::new(on_gpu, bf16_model(3), ex.clone()).unwrap();
            assert!(matches!(gpu.model.device(), Device::Cuda(_)));
            let lc: Vec<f64> = (0..4).map(|_| cpu.train_step().unwrap().loss).collect();
            let lg: Vec<f64> = (0..4).map(|_| gpu.train_step().unwrap().loss).collect();
            println!("lora {lora}: cpu losses {lc:?}, cuda losses {lg:?}");
            for (i, (a, b)) in lc.iter().zip(&lg).enumerate() {
                assert!((a - b).abs() <= 2e-2 * a.abs().max(1.0), "lora {lora} step {}: cpu {a} cuda {b}", i + 1);
            }
            assert!(lg[3] < lg[0], "no learning on CUDA in 4 steps: {lg:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// README's "GPU quick start", command by command, as far as a machine without
/// a GPU can take it: `actial-generate` runs as written (on the emulated driver
/// when there is no GPU); each `actial-train` line runs as written plus
/// `--plan` (arguments, model, configuration, the memory plan; the training
/// itself needs the GPU). The other lines are what CI itself runs (the
/// toolchain install, the release build) or scripts this test checks exist.
/// A new command in the block fails here until this test knows how to run it.
#[cfg(actial_cuda)]
mod gpu_quick_start {
    use std::path::Path;
    use std::process::Command;

    /// Splits a shell line into words: spaces separate, double quotes group,
    /// an unquoted `#` starts a comment.
    fn words(line: &str) -> Vec<String> {
        let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        for c in line.chars() {
            match c {
                '"' => (quoted, any) = (!quoted, true),
                '#' if !quoted && cur.is_empty() => break,
                ' ' | '\t' if !quoted => {
                    if any {
                        out.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                _ => (cur, any) = (cur + &c.to_string(), true),
            }
        }
        if any {
            out.push(cur);
        }
        out
    }

    fn quick_start_lines() -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let section = readme.split("## GPU quick start").nth(1).expect("README has a GPU quick start");
        let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a ```sh block");
        block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
    }

    #[test]
    fn the_words_of_a_shell_line() {
        assert_eq!(words(r#"a --p "Describe a cube."  # note"#), ["a", "--p", "Describe a cube."]);
        assert_eq!(words("x && y"), ["x", "&&", "y"]);
    }

    #[test]
    fn every_command_of_the_gpu_quick_start_runs_as_far_as_it_can_without_a_gpu() {
        if let Err(why) = actial::cuda::available() {
            println!("SKIPPED: no CUDA device ({why})");
            return;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tmp = std::env::temp_dir().join(format!("actial-quick-start-{}", std::process::id()));
        let (mut ran, mut planned) = (0, 0);
        for line in quick_start_lines() {
            for cmd in line.split("&&").map(words) {
                let (Some(first), rest) = (cmd.first(), &cmd[1.min(cmd.len())..]) else { continue };
                match first.as_str() {
                    "tools/install-cuda-toolchain.sh" => {
                        let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
                        assert!(
                            ci.contains("tools/install-cuda-toolchain.sh"),
                            "CI must run the install as README says"
                        );
                    }
                    "cargo" if rest.first().map(String::as_str) == Some("build") => {}
                    "cargo" if rest.iter().any(|w| w == "--example") => {
                        let name = &rest[rest.iter().position(|w| w == "--example").unwrap() + 1];
                        assert!(root.join(format!("examples/{name}.rs")).is_file(), "{line}: no example {name}");
                    }
                    "tools/gpu-check.sh" => {
                        assert!(root.join(first).is_file() && matches!(rest[0].as_str(), "build" | "run"), "{line}")
                    }
                    bin if bin.starts_with("target/release/actial-") => {
                        let name = bin.trim_start_matches("target/release/");
                        let exe = match name {
                            "actial-generate" => env!("CARGO_BIN_EXE_actial-generate"),
                            "actial-train" => env!("CARGO_BIN_EXE_actial-train"),
                            "actial-eval" => env!("CARGO_BIN_EXE_actial-eval"),
                            "actial-data" => env!("CARGO_BIN_EXE_actial-data"),
                            other => panic!("{line}: unknown binary {other}"),
                        };
                        let mut args: Vec<String> = rest.to_vec();
                        // Runs go to a scratch directory, not the checkout's runs/.
                        if let Some(i) = args.iter().position(|a| a == "--out") {
                            args[i + 1] = tmp.join(&args[i + 1]).display().to_string();
                        }
                        let train = name == "actial-train";
                        if train {
                            args.push("--plan".into());
                        }
                        let out = Command::new(exe).args(&args).current_dir(root).output().unwrap();
                        let text =
                            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                        assert!(out.status.success(), "{line} {}: {text}", if train { "--plan" } else { "" });
                        if train {
                            assert!(
                                text.contains("peak") && text.contains("H200"),
                                "{line} --plan printed no plan: {text}"
                            );
                            planned += 1;
                        } else {
                            assert!(text.contains("new tokens"), "{line}: {text}");
                            ran += 1;
                        }
                    }
                    other => panic!("README's GPU quick start runs `{other}`, which this test does not know: {line}"),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(ran >= 1 && planned >= 2, "ran {ran} commands, planned {planned}");
    }
}
