//! Rung 3 of the verification ladder: every CUDA kernel against its CPU twin on
//! random inputs, sizes including ragged edges (1 row, odd widths, a vocabulary
//! that is not a multiple of the block). The CPU reference runs in f32 on the
//! same bf16-rounded inputs the kernels read; tolerances are a few bf16 ulps.
//!
//! Without a GPU every test prints "SKIPPED: no CUDA device (why)" and passes; a
//! machine that has a GPU but cannot open it fails. Built without nvcc, the one
//! test below says so.

#[cfg(not(actial_cuda))]
#[test]
fn cuda_parity_skipped_without_kernels() {
    assert!(
        std::env::var_os("ACTIAL_REQUIRE_CUDA_BUILD").is_none(),
        "ACTIAL_REQUIRE_CUDA_BUILD is set but the kernels were not built"
    );
    println!("SKIPPED: {}", actial::cuda::build_info::NOT_BUILT);
}

#[cfg(actial_cuda)]
mod parity {
    use std::sync::Arc;

    use actial::cpu;
    use actial::cuda::attention::{self, AttentionKernel, AttnShape};
    use actial::cuda::{CudaDevice, gemm, lora, loss, optim, sampling, small_ops};
    use actial::rng::Philox;
    use cudarc::driver::CudaSlice;
    use half::bf16;

    /// The device, or None (with the SKIPPED line) when this machine has none.
    fn gpu() -> Option<Arc<CudaDevice>> {
        match actial::cuda::available() {
            Err(why) => {
                println!("SKIPPED: no CUDA device ({why})");
                None
            }
            Ok(_) => Some(CudaDevice::open(0).expect("a CUDA device is present, so opening it must work")),
        }
    }

    fn randn(n: usize, seed: u64, std: f32) -> Vec<f32> {
        Philox::new(seed, 0).normal_vec(n, std)
    }

    /// Rounds through bf16: the values a bf16 kernel actually reads.
    fn round(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
    }

    fn up(dev: &CudaDevice, v: &[f32]) -> CudaSlice<bf16> {
        let h: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        dev.upload(&h, "test upload").unwrap()
    }

    fn up32(dev: &CudaDevice, v: &[f32]) -> CudaSlice<f32> {
        dev.upload(v, "test upload").unwrap()
    }

    fn down(dev: &CudaDevice, d: &CudaSlice<bf16>) -> Vec<f32> {
        dev.download(d, "test download").unwrap().iter().map(|x| x.to_f32()).collect()
    }

    fn down32(dev: &CudaDevice, d: &CudaSlice<f32>) -> Vec<f32> {
        dev.download(d, "test download").unwrap()
    }

    /// |got - want| <= atol + rtol |want| everywhere; the message names the worst
    /// element.
    fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let mut worst = (0usize, 0.0f32);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(g.is_finite(), "{what}[{i}] = {g} is not finite (want {w})");
            let excess = (g - w).abs() - (atol + rtol * w.abs());
            if excess > worst.1 {
                worst = (i, excess);
            }
        }
        let i = worst.0;
        assert!(worst.1 <= 0.0, "{what}[{i}]: got {} want {} (atol {atol}, rtol {rtol})", got[i], want[i]);
    }

    #[test]
    fn rms_norm_forward_and_backward() {
        let Some(dev) = gpu() else { return };
        for (rows, dim) in [(1, 128), (37, 80), (300, 1280), (5, 3584)] {
            let x = round(&randn(rows * dim, 1, 1.0));
            let w = round(&randn(dim, 2, 0.5));
            let dy = round(&randn(rows * dim, 3, 1.0));
            let (y_ref, rstd_ref) = cpu::norm::rms_norm_forward(&x, &w, 1e-6);
            let mut dw_ref = vec![0.25f32; dim];
            let dx_ref = cpu::norm::rms_norm_backward(&x, &w, &rstd_ref, &dy, Some(&mut dw_ref));

            let (dx_, dw_, dy_) = (up(&dev, &x), up(&dev, &w), up(&dev, &dy));
            let (y, rstd) = small_ops::rms_norm_forward(&dev, &dx_, &dw_, rows, dim, 1e-6).unwrap();
            assert_close("rms_norm y", &down(&dev, &y), &y_ref, 1e-2, 1e-2);
            assert_close("rms_norm rstd", &down32(&dev, &rstd), &rstd_ref, 1e-5, 1e-4);
            let mut dw = up32(&dev, &vec![0.25f32; dim]);
            let dx = small_ops::rms_norm_backward(&dev, &dx_, &dw_, &rstd, &dy_, rows, dim, Some(&mut dw)).unwrap();
            assert_close("rms_norm dx", &down(&dev, &dx), &dx_ref, 2e-2, 2e-2);
            assert_close("rms_norm dw", &down32(&dev, &dw), &dw_ref, 1e-3 * rows as f32, 1e-3);
            let dx_frozen = small_ops::rms_norm_backward(&dev, &dx_, &dw_, &rstd, &dy_, rows, dim, None).unwrap();
            assert_eq!(down(&dev, &dx_frozen), down(&dev, &dx), "dx must not depend on whether dw is wanted");
        }
    }

    #[test]
    fn fused_residual_add_and_rms_norm() {
        let Some(dev) = gpu() else { return };
        for (rows, dim) in [(1, 32), (19, 3584)] {
            let x = round(&randn(rows * dim, 13, 1.0));
            let res = round(&randn(rows * dim, 14, 1.0));
            let w = round(&randn(dim, 15, 0.5));
            let h_ref = round(&x.iter().zip(&res).map(|(a, b)| a + b).collect::<Vec<_>>());
            let (y_ref, rstd_ref) = cpu::norm::rms_norm_forward(&h_ref, &w, 1e-6);
            let (h, y, rstd) =
                small_ops::add_rms_norm_forward(&dev, &up(&dev, &x), &up(&dev, &res), &up(&dev, &w), rows, dim, 1e-6)
                    .unwrap();
            assert_eq!(down(&dev, &h), h_ref, "h is the bf16-rounded sum");
            assert_close("add+rms_norm y", &down(&dev, &y), &y_ref, 1e-2, 1e-2);
            assert_close("add+rms_norm rstd", &down32(&dev, &rstd), &rstd_ref, 1e-5, 1e-4);
        }
    }

    #[test]
    fn rope_forward_and_backward() {
        let Some(dev) = gpu() else { return };
        for (t, h, d) in [(1, 1, 2), (17, 3, 80), (64, 16, 128)] {
            let x = round(&randn(t * h * d, 4, 1.0));
            let cos: Vec<f32> = (0..t * d).map(|i| (i as f32 * 0.37).cos()).collect();
            let sin: Vec<f32> = (0..t * d).map(|i| (i as f32 * 0.53).sin()).collect();
            let (cx, cc, cs) = (up(&dev, &x), up32(&dev, &cos), up32(&dev, &sin));
            let y = small_ops::rope(&dev, &cx, &cc, &cs, t, h, d, false).unwrap();
            assert_close("rope", &down(&dev, &y), &cpu::rope::rope_forward(&x, &cos, &sin, h, d), 1e-2, 1e-2);
            let dx = small_ops::rope(&dev, &cx, &cc, &cs, t, h, d, true).unwrap();
            assert_close(
                "rope backward",
                &down(&dev, &dx),
                &cpu::rope::rope_backward(&x, &cos, &sin, h, d),
                1e-2,
                1e-2,
            );
        }
        assert!(
            small_ops::rope(&dev, &up(&dev, &[0.0; 3]), &up32(&dev, &[0.0; 3]), &up32(&dev, &[0.0; 3]), 1, 1, 3, false)
                .unwrap_err()
                .to_string()
                .contains("even")
        );
    }

    #[test]
    fn activations_and_elementwise() {
        let Some(dev) = gpu() else { return };
        for n in [1usize, 1000, 65537] {
            let g = round(&randn(n, 5, 2.0));
            let u = round(&randn(n, 6, 1.0));
            let dy = round(&randn(n, 7, 1.0));
            let (cg, cu, cdy) = (up(&dev, &g), up(&dev, &u), up(&dev, &dy));
            let y = small_ops::swiglu_forward(&dev, &cg, &cu).unwrap();
            assert_close("swiglu", &down(&dev, &y), &cpu::activation::swiglu_forward(&g, &u), 1e-2, 1e-2);
            let (dg, du) = small_ops::swiglu_backward(&dev, &cg, &cu, &cdy).unwrap();
            let (dg_ref, du_ref) = cpu::activation::swiglu_backward(&g, &u, &dy);
            assert_close("swiglu d_gate", &down(&dev, &dg), &dg_ref, 1e-2, 1e-2);
            assert_close("swiglu d_up", &down(&dev, &du), &du_ref, 1e-2, 1e-2);
            let y = small_ops::gelu_forward(&dev, &cg).unwrap();
            assert_close("gelu", &down(&dev, &y), &cpu::activation::gelu_forward(&g), 1e-2, 1e-2);
            let dx = small_ops::gelu_backward(&dev, &cg, &cdy).unwrap();
            assert_close("gelu backward", &down(&dev, &dx), &cpu::activation::gelu_backward(&g, &dy), 1e-2, 1e-2);
            let s = small_ops::add(&dev, &cg, &cu).unwrap();
            let s_ref: Vec<f32> = g.iter().zip(&u).map(|(a, b)| a + b).collect();
            assert_close("add", &down(&dev, &s), &s_ref, 1e-2, 1e-2);

            let mut a = up32(&dev, &u);
            small_ops::axpy(&dev, &mut a, &up32(&dev, &g), -0.5).unwrap();
            let mut a_ref = u.clone();
            cpu::activation::axpy(&mut a_ref, &g, -0.5);
            assert_close("axpy", &down32(&dev, &a), &a_ref, 1e-6, 1e-6);

            let raw = randn(n, 8, 3.0);
            let b = small_ops::cast_to_bf16(&dev, &up32(&dev, &raw)).unwrap();
            assert_eq!(down(&dev, &b), round(&raw), "cast to bf16 rounds to nearest even, as half does");
            let f = small_ops::cast_to_f32(&dev, &b).unwrap();
            assert_eq!(down32(&dev, &f), round(&raw));
        }
        assert!(small_ops::add(&dev, &up(&dev, &[1.0; 3]), &up(&dev, &[1.0; 4])).is_err());
    }

    #[test]
    fn gathers_and_scatters() {
        let Some(dev) = gpu() else { return };
        let (rows, dim) = (50, 72);
        let src = round(&randn(rows * dim, 9, 1.0));
        let idx: Vec<i32> = vec![3, 0, 49, 3, 3, 17];
        let csrc = up(&dev, &src);
        let out = small_ops::gather_rows(&dev, &csrc, rows, dim, &idx).unwrap();
        let idx_u: Vec<usize> = idx.iter().map(|&i| i as usize).collect();
        assert_eq!(down(&dev, &out), cpu::embedding::gather_rows(&src, dim, &idx_u), "gather is a copy");

        let g = round(&randn(idx.len() * dim, 10, 1.0));
        let skip = [false, false, true, false, false, false];
        let base = randn(rows * dim, 11, 1.0);
        let mut dst = up32(&dev, &base);
        small_ops::scatter_add_rows(&dev, &mut dst, rows, dim, &idx, &up(&dev, &g), Some(&skip)).unwrap();
        let mut want = base.clone();
        cpu::embedding::scatter_add_rows(&mut want, dim, &idx_u, &g, Some(&skip));
        assert_close("scatter_add_rows (repeated index 3)", &down32(&dev, &dst), &want, 1e-5, 1e-5);

        let pos = [1i32, 40];
        let mut x = up(&dev, &src);
        let new_rows = round(&randn(2 * dim, 12, 1.0));
        small_ops::overwrite_rows(&dev, &mut x, rows, dim, &pos, &up(&dev, &new_rows)).unwrap();
        let mut want = src.clone();
        cpu::embedding::overwrite_rows(&mut want, dim, &[1, 40], &new_rows);
        assert_eq!(down(&dev, &x), want);

        let err = small_ops::gather_rows(&dev, &csrc, rows, dim, &[0, 50]).unwrap_err().to_string();
        assert!(err.contains("index[1] = 50"), "{err}");
    }

    #[test]
    fn multi_tensor_adamw_with_clipping() {
        let Some(dev) = gpu() else { return };
        let sizes = [1usize, 4097, 10_000, 3];
        let weights: Vec<Vec<f32>> = sizes.iter().enumerate().map(|(i, &n)| randn(n, 20 + i as u64, 0.1)).collect();
        let h = cpu::optim::AdamW { lr: 1e-2, weight_decay: 0.1, ..Default::default() };
        let mut group = optim::AdamWGroup::new(&dev, &weights, true).unwrap();
        let mut cpu_w = weights.clone();
        let mut cpu_m: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
        let mut cpu_v = cpu_m.clone();
        for step in 1..=3u64 {
            let grads: Vec<Vec<f32>> =
                sizes.iter().enumerate().map(|(i, &n)| randn(n, 100 * step + i as u64, 1.0)).collect();
            for (g, d) in grads.iter().zip(group.grads.iter_mut()) {
                dev.stream().memcpy_htod(g, d).unwrap();
            }
            let norm = group.grad_norm(&dev).unwrap();
            let ss: f64 = grads.iter().map(|g| cpu::optim::sum_squares(g)).sum();
            assert!((norm as f64 - ss.sqrt()).abs() < 1e-4 * ss.sqrt(), "norm {norm} vs {}", ss.sqrt());
            let max_norm = 5.0;
            let coef = cpu::optim::clip_coef(ss.sqrt(), max_norm);
            group.step(&dev, &h, step, Some(max_norm as f32)).unwrap();
            for i in 0..sizes.len() {
                let g: Vec<f32> = grads[i].iter().map(|x| x * coef).collect();
                cpu::optim::adamw_step(&mut cpu_w[i], &g, &mut cpu_m[i], &mut cpu_v[i], &h, step, 1.0);
            }
        }
        for i in 0..sizes.len() {
            assert_close("adamw param", &down32(&dev, &group.params[i]), &cpu_w[i], 1e-6, 1e-5);
            assert_close("adamw exp_avg", &down32(&dev, &group.exp_avg[i]), &cpu_m[i], 1e-6, 1e-5);
            assert_close("adamw exp_avg_sq", &down32(&dev, &group.exp_avg_sq[i]), &cpu_v[i], 1e-7, 1e-5);
            let copy = down(&dev, group.bf16_copies[i].as_ref().unwrap());
            assert_eq!(copy, round(&down32(&dev, &group.params[i])), "the bf16 copy is the rounded master weight");
        }
    }

    #[test]
    fn cross_entropy_and_token_logprobs() {
        let Some(dev) = gpu() else { return };
        for (rows, v) in [(1usize, 7usize), (9, 1000), (4, 151_936)] {
            let logits = round(&randn(rows * v, 30, 3.0));
            let mut labels: Vec<i32> = (0..rows).map(|r| ((r * 7919) % v) as i32).collect();
            if rows > 2 {
                labels[1] = cpu::loss::IGNORE_INDEX;
            }
            let cl = up(&dev, &logits);
            let (loss, lse, d) = loss::cross_entropy(&dev, &cl, &labels, v, Some(0.125)).unwrap();
            let (lse_ref, loss_ref) = cpu::loss::cross_entropy_forward(&logits, &labels, v);
            let d_ref = cpu::loss::cross_entropy_backward(&logits, &labels, &lse_ref, v, 0.125);
            assert_close("ce loss", &down32(&dev, &loss), &loss_ref, 1e-3, 1e-4);
            assert_close("ce lse", &down32(&dev, &lse), &lse_ref, 1e-3, 1e-4);
            assert_close("ce dlogits", &down(&dev, &d.unwrap()), &d_ref, 1e-4, 1e-2);

            let ids: Vec<i32> = (0..rows).map(|r| ((r * 31 + 5) % v) as i32).collect();
            let s = 1.0 / 0.7;
            let (logp, lse) = loss::token_logprobs_forward(&dev, &cl, &ids, v, s).unwrap();
            let (logp_ref, lse_ref) = cpu::loss::token_logprobs_forward(&logits, &ids, v, s);
            assert_close("logp", &down32(&dev, &logp), &logp_ref, 1e-3, 1e-4);
            let dlogp = randn(rows, 31, 1.0);
            let d = loss::token_logprobs_backward(&dev, &cl, &ids, &lse, &up32(&dev, &dlogp), v, s).unwrap();
            let d_ref = cpu::loss::token_logprobs_backward(&logits, &ids, &lse_ref, &dlogp, v, s);
            assert_close("logp dlogits", &down(&dev, &d), &d_ref, 1e-4, 1e-2);
        }
        let err = loss::cross_entropy(&dev, &up(&dev, &[0.0; 6]), &[0, 3], 3, None).unwrap_err().to_string();
        assert!(err.contains("label[1] = 3"), "{err}");
    }

    /// GRPO's per-token objective on the device (`grpo_token_loss`) equals its
    /// CPU twin: the gradient per token and the four sums the host reads, with
    /// ratios on both sides of the clip range, both advantage signs, the k3
    /// term and entropies, over more tokens than the block has threads.
    #[test]
    fn grpo_token_loss_matches_the_cpu() {
        let Some(dev) = gpu() else { return };
        for (n, beta) in [(1usize, 0.0f32), (3000, 0.04)] {
            let logp: Vec<f32> = randn(n, 40, 1.0).iter().map(|x| -x.abs()).collect();
            // Old log-probs up to ±0.5 away: ratios from 0.6 to 1.6, so both
            // clip bounds act.
            let old: Vec<f32> = logp.iter().zip(randn(n, 41, 0.25)).map(|(l, d)| l + d.clamp(-0.5, 0.5)).collect();
            let reference: Vec<f32> = logp.iter().zip(randn(n, 42, 0.3)).map(|(l, d)| l + d).collect();
            let advantage: Vec<f32> = randn(n, 43, 1.0);
            let den: Vec<f32> = (0..n).map(|t| (n + 7 * (t % 5)) as f32).collect();
            let entropy: Vec<f32> = randn(n, 44, 1.0).iter().map(|x| x.abs()).collect();
            // A dual-clip of 1.3 and a k3 clamp of 0.05 act on some tokens too.
            let p =
                cpu::loss::PolicyLossParams { eps_low: 0.2, eps_high: 0.28, beta, clip_ratio_c: 1.3, kl_clamp: 0.05 };
            let (d_ref, s_ref) = cpu::loss::policy_loss(&logp, &old, &reference, &advantage, &den, Some(&entropy), &p);
            let packed: Vec<f32> = [&old[..], &reference, &advantage, &den].concat();
            let (d, s) = loss::policy_loss(&dev, &up32(&dev, &logp), &packed, Some(&up32(&dev, &entropy)), &p).unwrap();
            assert_close("dlogp", &down32(&dev, &d), &d_ref, 1e-9, 1e-5);
            println!("n {n}: cpu {s_ref:?}, cuda {s:?}");
            assert!(n < 2 || s_ref.clipped > 0.05 * n as f64, "the clip must act: {s_ref:?}");
            assert_eq!(s.clipped, s_ref.clipped);
            for (what, a, b) in
                [("loss", s.loss, s_ref.loss), ("kl", s.kl, s_ref.kl), ("entropy", s.entropy, s_ref.entropy)]
            {
                assert!((a - b).abs() <= 1e-9 * b.abs().max(1e-3), "{what}: cuda {a} cpu {b}");
            }
        }
    }

    #[test]
    fn linear_cross_entropy_matches_the_unchunked_loss() {
        let Some(dev) = gpu() else { return };
        let (t, d, v) = (37usize, 64usize, 1001usize);
        let h = round(&randn(t * d, 40, 1.0));
        let w = round(&randn(v * d, 41, 0.1));
        let mut labels: Vec<i32> = (0..t).map(|i| ((i * 13) % v) as i32).collect();
        labels[5] = cpu::loss::IGNORE_INDEX;
        let logits = cpu::matmul::linear_forward(&h, &w, None, t, d, v);
        let (lse_ref, loss_ref) = cpu::loss::cross_entropy_forward(&logits, &labels, v);
        // One scale for all rows, and one per row (per-sample loss weights).
        let per_row: Vec<f32> = (0..t).map(|i| (i % 3 + 1) as f32 / 36.0).collect();
        for scale in [loss::GradScale::Uniform(1.0 / 36.0), loss::GradScale::PerRow(&per_row)] {
            let dlogits = cpu::loss::cross_entropy_backward_rows(&logits, &labels, &lse_ref, v, &|r| match scale {
                loss::GradScale::Uniform(s) => s,
                loss::GradScale::PerRow(p) => p[r],
            });
            let mut dh_ref = vec![0.0f32; t * d];
            cpu::matmul::matmul(1, t, d, v, &dlogits, 0, false, &w, 0, false, &mut dh_ref, false, 1.0);
            let mut dw_ref = vec![0.0f32; v * d];
            cpu::matmul::matmul(1, v, d, t, &dlogits, 0, true, &h, 0, false, &mut dw_ref, false, 1.0);
            for chunk in [1usize, 8, 64] {
                let mut dw = dev.zeros::<f32>(v * d, "test").unwrap();
                let (hd, wd) = (up(&dev, &h), up(&dev, &w));
                let out =
                    loss::linear_cross_entropy(&dev, &hd, &wd, &labels, d, v, chunk, scale, Some(&mut dw)).unwrap();
                // Logits are rounded to bf16 before the softmax, so the loss carries
                // a bf16 rounding of each logit.
                assert_close("linear CE loss", &down32(&dev, &out.loss), &loss_ref, 5e-2, 1e-2);
                assert_close("linear CE dh", &down(&dev, &out.dh), &dh_ref, 2e-3, 3e-2);
                assert_close("linear CE dW", &down32(&dev, &dw), &dw_ref, 2e-4, 3e-2);
            }
        }
    }

    #[test]
    fn gemm_linear_with_bias_and_f32_accumulation() {
        let Some(dev) = gpu() else { return };
        for (rows, din, dout) in [(1usize, 16usize, 8usize), (33, 80, 130), (256, 1280, 3420)] {
            let x = round(&randn(rows * din, 50, 1.0));
            let w = round(&randn(dout * din, 51, 0.05));
            let b = round(&randn(dout, 52, 1.0));
            let y = gemm::linear(&dev, &up(&dev, &x), &up(&dev, &w), Some(&up(&dev, &b)), rows, din, dout).unwrap();
            let y_ref = cpu::matmul::linear_forward(&x, &w, Some(&b), rows, din, dout);
            assert_close("linear", &down(&dev, &y), &y_ref, 2e-2, 1e-2);
            // dW += dyᵀ·x accumulated in f32 on top of existing values.
            let dy = round(&randn(rows * dout, 53, 1.0));
            let start = randn(dout * din, 54, 1.0);
            let mut dw = up32(&dev, &start);
            let spec =
                gemm::GemmSpec { m: dout, n: din, k: rows, trans_a: true, trans_b: false, alpha: 0.5, beta: 1.0 };
            gemm::gemm_f32_out(&dev, spec, &up(&dev, &dy), &up(&dev, &x), &mut dw).unwrap();
            let mut want = start.clone();
            cpu::matmul::matmul(1, dout, din, rows, &dy, 0, true, &x, 0, false, &mut want, true, 0.5);
            assert_close("gemm dW accumulate", &down32(&dev, &dw), &want, 1e-3 * (rows as f32).sqrt(), 1e-3);
        }
    }

    #[test]
    fn sampling_matches_the_cpu_draws() {
        let Some(dev) = gpu() else { return };
        let v = 5003;
        let rows = 6;
        let n = 16;
        let logits = round(&randn(rows * v, 60, 2.0));
        let streams: Vec<u64> = (0..rows as u64).map(|r| 1000 + r * n as u64).collect();
        let cl = up(&dev, &logits);
        let cases = [
            cpu::sampling::SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 },
            cpu::sampling::SamplingParams { temperature: 0.7, top_k: 50, top_p: 1.0 },
            cpu::sampling::SamplingParams { temperature: 1.3, top_k: 0, top_p: 0.9 },
            cpu::sampling::SamplingParams { temperature: 1.0, top_k: 20, top_p: 0.5 },
            cpu::sampling::SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 },
        ];
        // The two most likely ids of every row banned: greedy and top-k draws move.
        let mut top2 = Vec::new();
        for row in logits.chunks(v) {
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            top2.extend(order[..2].iter().map(|&i| i as u32));
        }
        for p in cases {
            for banned in [vec![], top2.clone()] {
                let (tok, logp) = sampling::sample_rows(&dev, &cl, v, n, &p, 7, &streams, &banned).unwrap();
                let tok = dev.download(&tok, "test").unwrap();
                let logp = down32(&dev, &logp);
                let (tok_ref, _) = cpu::sampling::sample_rows_streams(&logits, v, n, &p, 7, &streams, &banned);
                // Same uniforms, same kept set, same walk order: the same token, except
                // where a uniform lands within float rounding of a bucket edge.
                let same = tok.iter().zip(&tok_ref).filter(|(a, b)| a == b).count();
                println!("{p:?}, {} banned: {same} of {} draws equal the CPU's", banned.len(), tok.len());
                assert!(same * 100 >= tok.len() * 98, "{p:?}: only {same} of {} draws match the CPU", tok.len());
                for (i, (&t, &lp)) in tok.iter().zip(&logp).enumerate() {
                    assert!(!banned.contains(&t), "{p:?}: drew banned token {t}");
                    let row = &logits[(i / n) * v..(i / n + 1) * v];
                    let dist = cpu::sampling::RowDistribution::new(row, &p, &banned);
                    assert!(dist.tokens.contains(&(t as usize)), "{p:?}: token {t} is outside the CPU's kept set");
                    assert!((lp - dist.logprob(row, t as usize)).abs() < 1e-3, "{p:?}: logprob of draw {i}");
                }
            }
        }
    }

    #[test]
    fn out_of_memory_says_what_was_asked() {
        let Some(dev) = gpu() else { return };
        let err = dev.zeros::<f32>(1 << 45, "huge buffer").unwrap_err().to_string();
        assert!(err.contains("huge buffer") && err.contains("out of GPU memory") && err.contains("requested"), "{err}");
    }

    /// Every case of the GPU report (and its baseline) runs at smoke size and
    /// the table holds a timing for each: a shape or setup error in the bench
    /// code fails here, on the emulated driver in CI, not in a scarce GPU run.
    #[test]
    fn every_bench_case_runs_at_smoke_size() {
        use actial::cuda::bench;
        let Some(dev) = gpu() else { return };
        let (scale, width) = bench::SMOKE;
        let mut pairs = bench::cases(&dev, scale, width).unwrap();
        let baselines = pairs.iter().filter(|p| p.baseline.is_some()).count();
        let rows = bench::measure(&dev, &mut pairs, 0, 1).unwrap();
        for r in &rows {
            println!("{:<10} {:<70} {:>10.3} ms", r.family, r.name, r.ms);
        }
        for family in ["attention", "lora", "optim", "sampling", "loss", "small ops"] {
            assert!(rows.iter().any(|r| r.family == family), "no {family} case");
        }
        assert_eq!(rows.len(), pairs.len() + baselines, "one timed row per case and baseline");
        assert_eq!(rows.iter().filter(|r| r.case_speedup.is_some()).count(), baselines);
        let timed: Vec<f64> = rows.iter().map(|r| r.ms).collect();
        assert!(timed.iter().all(|ms| ms.is_finite() && *ms > 0.0), "{timed:?}");
        for r in &rows {
            let c = &r.per_run;
            assert!(c.launches + c.gemms > 0, "{}: one run launched nothing: {c:?}", r.name);
            assert!(r.pool_peak_bytes > 0, "{}: no pool peak", r.name);
        }
    }

    /// A block bigger than a kernel's `__launch_bounds__` does not launch (on a
    /// GPU, and on the emulated driver, which knows each kernel's bounds and
    /// registers from build.rs), and the device still works after the refusal.
    #[test]
    fn a_block_past_the_launch_bounds_does_not_launch() {
        use cudarc::driver::{LaunchConfig, PushKernelArg as _};
        let Some(dev) = gpu() else { return };
        let f = dev.function("lora_project_r16").unwrap();
        let (null, zero) = (0u64, 0i32);
        let launch = |threads: u32| {
            let mut b = dev.stream().launch_builder(&f);
            b.arg(&null).arg(&null).arg(&null).arg(&zero).arg(&zero).arg(&zero).arg(&zero);
            let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: seven arguments as the kernel declares them; rows = 0, so a
            // launch that runs returns before touching a pointer.
            unsafe { b.launch(cfg) }.map(|_| ())
        };
        // lora_project_r16 is declared __launch_bounds__(LORA_WARPS * 32) = 256.
        assert!(launch(512).is_err(), "a 512-thread block of a 256-thread kernel launched");
        launch(256).expect("a block within the bounds launches");
        dev.synchronize("after a refused launch").unwrap();
    }

    /// Zero-length buffers are legal (a batch without images, a step without CoT
    /// samples): allocation, zeroing, upload and download of 0 elements succeed
    /// and free cleanly, whatever `cuMemAllocAsync(0)` does on this driver.
    #[test]
    fn zero_length_buffers_allocate_copy_and_free() {
        let Some(dev) = gpu() else { return };
        let z = dev.zeros::<f32>(0, "empty zeros").unwrap();
        let u = dev.uninit::<bf16>(0, "empty uninit").unwrap();
        let h = dev.upload::<i32>(&[], "empty upload").unwrap();
        assert_eq!((z.len(), u.len(), h.len()), (0, 0, 0));
        assert!(dev.download(&z, "empty download").unwrap().is_empty());
        assert!(dev.download(&h, "empty download").unwrap().is_empty());
        drop((z, u, h));
        dev.synchronize("after freeing empty buffers").unwrap();
        // A real buffer after them still works.
        let one = up32(&dev, &[1.5, -2.0]);
        assert_eq!(down32(&dev, &one), vec![1.5, -2.0]);
    }

    /// The pool statistics are this handle's own (`CudaDevice::open` makes a
    /// pool per handle), so the figures are exact even while other tests
    /// allocate and free on the same device in parallel.
    #[test]
    fn memory_statistics_track_the_pool() {
        let Some(dev) = gpu() else { return };
        dev.reset_peak();
        let before = dev.memory();
        let buf = dev.zeros::<f32>(1 << 24, "stats").unwrap();
        dev.synchronize("stats").unwrap();
        let during = dev.memory();
        assert_eq!(during.in_use - before.in_use, 4 << 24, "{before:?} -> {during:?}");
        assert_eq!(during.peak, during.in_use, "{during:?}");
        drop(buf);
        dev.synchronize("stats").unwrap();
        let after = dev.memory();
        assert_eq!(after.in_use, before.in_use, "freed memory leaves in_use: {during:?} -> {after:?}");
        assert_eq!(after.peak, during.peak, "the high-water mark stays until reset");
        assert!(after.reserved >= during.in_use, "the pool keeps the freed block cached: {after:?}");
        dev.reset_peak();
        assert_eq!(dev.memory().peak, after.in_use, "a reset restarts the mark from what is in use");
    }

    /// A block may outlive its handle (an optimizer's state dropped after the
    /// model's last tensor): closing the handle keeps the block valid, and
    /// freeing it later is fine. Then many handles open and close in a row,
    /// with cuBLASLt work in each, on the one primary context. The first run
    /// on an H200 crashed or hung after the third such handle.
    #[test]
    fn handles_close_cleanly_even_with_blocks_still_out() {
        let Some(_) = gpu() else { return };
        let dev = CudaDevice::open(0).unwrap();
        let kept = dev.upload(&[3.0f32; 257], "outlives its handle").unwrap();
        let stream = dev.stream().clone();
        drop(dev);
        assert_eq!(stream.clone_dtoh(&kept).unwrap(), vec![3.0f32; 257], "the block is still valid");
        drop(kept);
        stream.synchronize().unwrap();
        let spec = gemm::GemmSpec { m: 8, n: 4, k: 16, trans_a: false, trans_b: true, alpha: 1.0, beta: 0.0 };
        for round in 0..6 {
            let dev = CudaDevice::open(0).unwrap();
            let (a, w) = (up(&dev, &[0.5; 8 * 16]), up(&dev, &[0.25; 4 * 16]));
            let mut c = dev.zeros::<bf16>(32, "c").unwrap();
            gemm::gemm(&dev, spec, &a, &w, &mut c, None).unwrap();
            let got: Vec<f32> = dev.download(&c, "c").unwrap().iter().map(|v| v.to_f32()).collect();
            assert_eq!(got, vec![2.0; 32], "round {round}");
            if round % 2 == 0 {
                // Every other round, one block outlives the handle.
                drop(dev);
                drop(a);
            }
        }
    }

    /// Two handles of one device share nothing they report: memory and counts
    /// of one never move with the other's work. An isolated handle is what
    /// tensors on `Device::Cuda(0)` use on this thread until its guard drops,
    /// and only there.
    #[test]
    fn handles_report_only_their_own_memory_and_work() {
        use actial::cuda::device::{isolated, shared};
        use actial::tensor::{DType, Device, Tensor};
        let Some(a) = gpu() else { return };
        let b = CudaDevice::open(0).unwrap();
        let (mem_a, acc_a) = (a.memory(), a.accounting());
        let kept = b.upload(&[1.0f32; 1000], "on b").unwrap();
        let _ = b.download(&kept, "on b").unwrap();
        assert_eq!(b.memory().in_use, 4000);
        assert_eq!((a.memory(), a.accounting()), (mem_a, acc_a), "b's work moved a's figures");

        let iso = isolated(0).unwrap();
        assert!(Arc::ptr_eq(&shared(0).unwrap(), iso.device()), "shared(0) is the isolated handle on this thread");
        let other_thread = std::thread::spawn(|| shared(0).unwrap()).join().unwrap();
        assert!(!Arc::ptr_eq(&other_thread, iso.device()), "other threads keep the process-wide handle");
        let t = Tensor::zeros([256, 4], DType::F32, Device::Cuda(0)).unwrap();
        let acc = iso.accounting().total();
        assert_eq!((acc.allocs, acc.alloc_bytes, acc.memsets), (1, 4096, 1), "{acc:?}");
        assert_eq!(iso.memory().in_use, 4096);
        let iso_dev = iso.device().clone();
        drop(iso);
        assert!(!Arc::ptr_eq(&shared(0).unwrap(), &iso_dev), "the guard's drop ends the isolation");
        assert_eq!(t.to_vec_f32().unwrap(), vec![0.0; 1024], "a tensor outlives its isolated handle's guard");
    }

    /// Copies, waits, launches, GEMMs and allocations are counted, each under
    /// the outermost phase open on the calling thread.
    #[test]
    fn the_device_counts_copies_launches_and_allocations_per_phase() {
        use actial::cuda::nvtx::{self, Phase};
        let Some(dev) = gpu() else { return };
        let spec = gemm::GemmSpec { m: 8, n: 4, k: 16, trans_a: false, trans_b: true, alpha: 1.0, beta: 0.0 };
        // The first GEMM creates the cuBLASLt handle and its workspace (one
        // allocation, counted where it happens); measure from after it.
        let (a0, w0, mut c0) =
            (up(&dev, &[0.0; 8 * 16]), up(&dev, &[0.0; 4 * 16]), dev.zeros::<bf16>(32, "c").unwrap());
        gemm::gemm(&dev, spec, &a0, &w0, &mut c0, None).unwrap();
        dev.reset_accounting();
        let x = up32(&dev, &[1.0; 300]);
        let loss = {
            let _outer = nvtx::range(Phase::Loss);
            let _inner = nvtx::range(Phase::Backward);
            let mut y = dev.zeros::<f32>(300, "y").unwrap();
            small_ops::axpy(&dev, &mut y, &x, 2.0).unwrap();
            down32(&dev, &y)
        };
        assert_eq!(loss, vec![2.0; 300]);
        let a = up(&dev, &[0.5; 8 * 16]);
        let w = up(&dev, &[0.25; 4 * 16]);
        {
            let _r = nvtx::range(Phase::LmForward);
            let mut c = dev.zeros::<bf16>(8 * 4, "c").unwrap();
            gemm::gemm(&dev, spec, &a, &w, &mut c, None).unwrap();
            dev.synchronize("gemm").unwrap();
        }
        let acc = dev.take_accounting();
        let other = acc.phase(Phase::Other);
        assert_eq!((other.h2d_copies, other.h2d_bytes), (3, 1200 + 256 + 128), "{other:?}");
        assert_eq!((other.launches, other.d2h_bytes, other.allocs), (0, 0, 3));
        let l = acc.phase(Phase::Loss);
        assert_eq!((l.launches, l.memsets, l.allocs, l.alloc_bytes), (1, 1, 1, 1200), "{l:?}");
        assert_eq!((l.d2h_copies, l.d2h_bytes, l.syncs), (1, 1200, 1));
        assert!(acc.phase(Phase::Backward).is_empty(), "nested ranges count under the outermost");
        let f = acc.phase(Phase::LmForward);
        assert_eq!((f.gemms, f.launches, f.syncs, f.largest_alloc), (1, 0, 1, 64), "{f:?}");
        assert_eq!(acc.total().allocs, 5);
        assert!(acc.pool_peak_bytes >= 1200 + 1200 + 256 + 128 + 64 + (32 << 20), "the workspace is still held");
        assert!(dev.accounting().total().is_empty(), "take_accounting resets");
    }

    fn shape(q_heads: usize, kv_heads: usize, head_dim: usize, causal: bool) -> AttnShape {
        AttnShape { q_heads, kv_heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), causal }
    }

    #[test]
    fn attention_forward_and_backward_match_the_cpu() {
        let Some(dev) = gpu() else { return };
        // Ragged segments (1 token, a partial tile, several tiles of both
        // kernels: 130 tokens), GQA, odd head counts, every compiled head dim,
        // both masks; the backward on both kernels.
        let cu = [0usize, 1, 18, 50, 83, 213];
        let t = *cu.last().unwrap();
        for (hq, hkv, d) in [(4, 2, 32), (3, 1, 64), (5, 5, 80), (2, 1, 128)] {
            for causal in [false, true] {
                let s = shape(hq, hkv, d, causal);
                let q = round(&randn(t * hq * d, 70, 1.0));
                let k = round(&randn(t * hkv * d, 71, 1.0));
                let v = round(&randn(t * hkv * d, 72, 1.0));
                let dout = round(&randn(t * hq * d, 73, 1.0));
                let (out_ref, lse_ref) = cpu::attention::attention_forward(&q, &k, &v, &cu, &s);
                let (cq, ck, cv) = (up(&dev, &q), up(&dev, &k), up(&dev, &v));
                let (out, lse) = attention::attention_forward(&dev, &cq, &ck, &cv, &cu, &cu, &s).unwrap();
                let what = format!("attention hq {hq} hkv {hkv} d {d} causal {causal}");
                assert_close(&format!("{what}: out"), &down(&dev, &out), &out_ref, 1e-2, 2e-2);
                assert_close(&format!("{what}: lse"), &down32(&dev, &lse), &lse_ref, 1e-3, 1e-4);
                // The backward from the CPU's own forward outputs (rounded as the
                // GPU stores them), so only the backward is compared.
                let out_r = round(&out_ref);
                let (dq_ref, dk_ref, dv_ref) =
                    cpu::attention::attention_backward(&q, &k, &v, &out_r, &lse_ref, &dout, &cu, &s);
                for kernel in [AttentionKernel::Simt, AttentionKernel::TensorCore] {
                    let (dq, dk, dv) = attention::attention_backward_with(
                        kernel,
                        &dev,
                        &cq,
                        &ck,
                        &cv,
                        &up(&dev, &out_r),
                        &up32(&dev, &lse_ref),
                        &up(&dev, &dout),
                        &cu,
                        &s,
                    )
                    .unwrap();
                    let what = format!("{what} {kernel:?}");
                    assert_close(&format!("{what}: dq"), &down(&dev, &dq), &dq_ref, 2e-2, 3e-2);
                    assert_close(&format!("{what}: dk"), &down(&dev, &dk), &dk_ref, 2e-2, 3e-2);
                    assert_close(&format!("{what}: dv"), &down(&dev, &dv), &dv_ref, 2e-2, 3e-2);
                }
            }
        }
    }

    /// Both forward kernels on segments around the tensor-core kernel's tiles
    /// (64 query rows per block, 64 keys per shared tile): 1, 15, 63, 64, 65
    /// and 200 tokens, every head dim, GQA, both masks; and against a cache,
    /// where causal masks align bottom-right across several key tiles.
    #[test]
    fn both_forward_kernels_match_the_cpu_across_tile_edges() {
        let Some(dev) = gpu() else { return };
        let lens = [1usize, 15, 63, 64, 65, 200];
        let mut cu = vec![0usize];
        for l in lens {
            cu.push(cu.last().unwrap() + l);
        }
        let t = *cu.last().unwrap();
        for kernel in [AttentionKernel::Simt, AttentionKernel::TensorCore] {
            for (hq, hkv, d) in [(2, 1, 32), (3, 3, 64), (4, 2, 80), (6, 2, 128)] {
                for causal in [false, true] {
                    let s = shape(hq, hkv, d, causal);
                    let q = round(&randn(t * hq * d, 170, 1.0));
                    let k = round(&randn(t * hkv * d, 171, 1.0));
                    let v = round(&randn(t * hkv * d, 172, 1.0));
                    let (out_ref, lse_ref) = cpu::attention::attention_forward(&q, &k, &v, &cu, &s);
                    let (out, lse) = attention::attention_forward_with(
                        kernel,
                        &dev,
                        &up(&dev, &q),
                        &up(&dev, &k),
                        &up(&dev, &v),
                        &cu,
                        &cu,
                        &s,
                    )
                    .unwrap();
                    let what = format!("{kernel:?} hq {hq} hkv {hkv} d {d} causal {causal}");
                    assert_close(&format!("{what}: out"), &down(&dev, &out), &out_ref, 1e-2, 2e-2);
                    assert_close(&format!("{what}: lse"), &down32(&dev, &lse), &lse_ref, 1e-3, 1e-4);
                }
            }
            // Against a cache: 1, 70 and 130 queries at the end of 1, 150 and 300 keys.
            let (cu_q, cu_k) = ([0usize, 1, 71, 201], [0usize, 1, 151, 451]);
            let (tq, tk) = (201, 451);
            for causal in [true, false] {
                let s = shape(4, 1, 128, causal);
                let q = round(&randn(tq * 4 * 128, 180, 1.0));
                let k = round(&randn(tk * 128, 181, 1.0));
                let v = round(&randn(tk * 128, 182, 1.0));
                let (out_ref, lse_ref) = cpu::attention::attention_forward_kv(&q, &k, &v, &cu_q, &cu_k, &s);
                let (out, lse) = attention::attention_forward_with(
                    kernel,
                    &dev,
                    &up(&dev, &q),
                    &up(&dev, &k),
                    &up(&dev, &v),
                    &cu_q,
                    &cu_k,
                    &s,
                )
                .unwrap();
                let what = format!("{kernel:?} against a cache, causal {causal}");
                assert_close(&format!("{what}: out"), &down(&dev, &out), &out_ref, 1e-2, 2e-2);
                assert_close(&format!("{what}: lse"), &down32(&dev, &lse), &lse_ref, 1e-3, 1e-4);
            }
        }
    }

    #[test]
    fn attention_merge_matches_the_cpu_including_empty_sides() {
        let Some(dev) = gpu() else { return };
        let (rows, d) = (37usize, 80usize);
        let oa = round(&randn(rows * d, 190, 1.0));
        let ob = round(&randn(rows * d, 191, 1.0));
        let mut la = randn(rows, 192, 3.0);
        let mut lb = randn(rows, 193, 3.0);
        // Row 0: side b saw no keys; row 1: side a saw none; row 2: neither did.
        lb[0] = f32::NEG_INFINITY;
        la[1] = f32::NEG_INFINITY;
        la[2] = f32::NEG_INFINITY;
        lb[2] = f32::NEG_INFINITY;
        let cpu_out =
            |v: &[f32], dims: &[usize]| actial::Tensor::from_f32(v.to_vec(), dims.to_vec(), actial::Device::Cpu);
        let a =
            actial::ops::AttnOut { out: cpu_out(&oa, &[rows, 1, d]).unwrap(), lse: cpu_out(&la, &[rows, 1]).unwrap() };
        let b =
            actial::ops::AttnOut { out: cpu_out(&ob, &[rows, 1, d]).unwrap(), lse: cpu_out(&lb, &[rows, 1]).unwrap() };
        let want = actial::ops::merge_attention(&a, &b).unwrap();
        let (out_ref, lse_ref) = (want.out.to_vec_f32().unwrap(), want.lse.to_vec_f32().unwrap());
        assert!(out_ref[2 * d..3 * d].iter().all(|&x| x == 0.0) && lse_ref[2] == f32::NEG_INFINITY);
        let (out, lse) = attention::attention_merge(
            &dev,
            (&up(&dev, &oa), &up32(&dev, &la)),
            (&up(&dev, &ob), &up32(&dev, &lb)),
            rows,
            d,
        )
        .unwrap();
        assert_close("merge out", &down(&dev, &out), &out_ref, 1e-2, 1e-2);
        let lse = down32(&dev, &lse);
        assert_eq!(lse[2], f32::NEG_INFINITY, "no keys on either side");
        assert_close("merge lse", &lse[3..], &lse_ref[3..], 1e-4, 1e-5);
        assert_close("merge lse, one side empty", &lse[..2], &lse_ref[..2], 1e-4, 1e-5);
    }

    #[test]
    fn attention_against_a_cache_aligns_causal_masks_bottom_right() {
        let Some(dev) = gpu() else { return };
        let (cu_q, cu_k) = ([0usize, 1, 2, 5, 5], [0usize, 10, 30, 37, 40]);
        let (tq, tk) = (5, 40);
        for causal in [true, false] {
            let s = shape(4, 2, 64, causal);
            let q = round(&randn(tq * 4 * 64, 80, 1.0));
            let k = round(&randn(tk * 2 * 64, 81, 1.0));
            let v = round(&randn(tk * 2 * 64, 82, 1.0));
            let (out_ref, lse_ref) = cpu::attention::attention_forward_kv(&q, &k, &v, &cu_q, &cu_k, &s);
            let (out, lse) =
                attention::attention_forward(&dev, &up(&dev, &q), &up(&dev, &k), &up(&dev, &v), &cu_q, &cu_k, &s)
                    .unwrap();
            assert_close("kv attention out", &down(&dev, &out), &out_ref, 1e-2, 2e-2);
            assert_close("kv attention lse", &down32(&dev, &lse), &lse_ref, 1e-3, 1e-4);
        }
        let s = shape(4, 2, 64, true);
        let z = up(&dev, &[0.0; 64 * 4]);
        let err = attention::attention_forward(&dev, &z, &z, &z, &[0, 2], &[0, 1], &shape(2, 2, 64, true));
        assert!(err.unwrap_err().to_string().contains("more queries than keys"));
        let err = attention::attention_forward(&dev, &z, &z, &z, &[0, 1], &[0, 1], &AttnShape { head_dim: 48, ..s });
        assert!(err.unwrap_err().to_string().contains("head dim 48"));
    }

    /// The paged cascade decode against attention over each sample's own
    /// prefix + suffix, gathered through the block tables on the host. Blocks
    /// of 4 rows (a 32-key tile spans 8), handed out in a shuffled order, and
    /// slots that are not the rows' order, so every indirection is exercised;
    /// two groups (3 and 16 samples), suffixes of 1 to 10 keys.
    #[test]
    fn paged_decode_equals_attention_over_prefix_plus_suffix() {
        let Some(dev) = gpu() else { return };
        let bs = 4usize;
        let (cu_group, prefix_len) = ([0usize, 3, 19], [40usize, 7]);
        let samples = 19;
        let suffix_len: Vec<usize> = (0..samples).map(|i| 1 + (i * 7) % 10).collect();
        let (pw, sw) = (10usize, 3usize);
        let group_slot = [1usize, 0];
        let sample_slot: Vec<usize> = (0..samples).rev().collect();
        let needed = prefix_len.iter().map(|l| l.div_ceil(bs)).sum::<usize>()
            + suffix_len.iter().map(|l| l.div_ceil(bs)).sum::<usize>();
        let blocks = needed + 5;
        let mut order: Vec<i32> = (0..blocks as i32).collect();
        let mut rng = Philox::new(7, 0);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next_u32() as usize % (i + 1));
        }
        let mut next = order.into_iter();
        let (mut ptab, mut stab) = (vec![-1i32; 2 * pw], vec![-1i32; samples * sw]);
        for g in 0..2 {
            for b in 0..prefix_len[g].div_ceil(bs) {
                ptab[group_slot[g] * pw + b] = next.next().unwrap();
            }
        }
        for i in 0..samples {
            for b in 0..suffix_len[i].div_ceil(bs) {
                stab[sample_slot[i] * sw + b] = next.next().unwrap();
            }
        }
        let row_of = |tab: &[i32], r: usize| tab[r / bs] as usize * bs + r % bs;
        for (hq, hkv, d) in [(4, 2, 32), (2, 2, 128), (6, 2, 80)] {
            let s = shape(hq, hkv, d, true);
            let row = hkv * d;
            let kp = round(&randn(blocks * bs * row, 90, 1.0));
            let vp = round(&randn(blocks * bs * row, 91, 1.0));
            let q = round(&randn(samples * hq * d, 94, 1.0));
            // CPU: each sample's cache is its group's prefix followed by its suffix.
            let (mut k_all, mut v_all, mut cu_k) = (Vec::new(), Vec::new(), vec![0usize]);
            for i in 0..samples {
                let g = if i < 3 { 0 } else { 1 };
                let rows: Vec<usize> = (0..prefix_len[g])
                    .map(|r| row_of(&ptab[group_slot[g] * pw..], r))
                    .chain((0..suffix_len[i]).map(|r| row_of(&stab[sample_slot[i] * sw..], r)))
                    .collect();
                for r in rows {
                    k_all.extend_from_slice(&kp[r * row..(r + 1) * row]);
                    v_all.extend_from_slice(&vp[r * row..(r + 1) * row]);
                }
                cu_k.push(k_all.len() / row);
            }
            let cu_q: Vec<usize> = (0..=samples).collect();
            let (out_ref, lse_ref) = cpu::attention::attention_forward_kv(&q, &k_all, &v_all, &cu_q, &cu_k, &s);
            let mut packed: Vec<i32> = cu_group.iter().map(|&c| c as i32).collect();
            packed.extend(group_slot.iter().map(|&x| x as i32));
            packed.extend(prefix_len.iter().map(|&x| x as i32));
            packed.extend(sample_slot.iter().map(|&x| x as i32));
            packed.extend(suffix_len.iter().map(|&x| x as i32));
            packed.extend(std::iter::repeat_n(0, samples)); // store rows: unused by the kernel
            let (dkp, dvp) = (up(&dev, &kp), up(&dev, &vp));
            let (dpt, dst) = (dev.upload(&ptab, "ptab").unwrap(), dev.upload(&stab, "stab").unwrap());
            let kv = attention::PagedKv {
                k_pool: &dkp,
                v_pool: &dvp,
                pool_rows: blocks * bs,
                block_size: bs,
                prefix_table: &dpt,
                prefix_table_width: pw,
                suffix_table: &dst,
                suffix_table_width: sw,
            };
            let rows = dev.upload(&packed, "rows").unwrap();
            let (out, lse) = attention::attention_decode_paged(&dev, &up(&dev, &q), &kv, &rows, &cu_group, &s).unwrap();
            assert_close(&format!("paged d {d}: out"), &down(&dev, &out), &out_ref, 1e-2, 2e-2);
            assert_close(&format!("paged d {d}: lse"), &down32(&dev, &lse), &lse_ref, 1e-3, 1e-4);
        }
    }

    #[test]
    fn lora_forward_and_backward_match_the_cpu() {
        let Some(dev) = gpu() else { return };
        for (rows, din, dout, rank) in
            [(1usize, 64usize, 32usize, 1usize), (37, 128, 96, 5), (200, 640, 384, 16), (64, 256, 128, 64)]
        {
            let sh = lora::LoraShape { rows, din, dout, rank, scale: 2.0 };
            let x = round(&randn(rows * din, 100, 1.0));
            let w = round(&randn(dout * din, 101, 0.05));
            let b = round(&randn(dout, 102, 1.0));
            let a = round(&randn(rank * din, 103, 0.05));
            let bm = round(&randn(dout * rank, 104, 0.05));
            let dy = round(&randn(rows * dout, 105, 1.0));
            let (y_ref, xa_ref) = cpu::lora::lora_forward(&x, &w, Some(&b), &a, &bm, 2.0, rows, din, dout, rank);
            let (cx, cw, ca, cb) = (up(&dev, &x), up(&dev, &w), up(&dev, &a), up(&dev, &bm));
            let (y, xa) = lora::lora_forward(&dev, &cx, &cw, Some(&up(&dev, &b)), &ca, &cb, &sh).unwrap();
            let what = format!("lora [{rows}, {din}] -> {dout}, rank {rank}");
            assert_close(&format!("{what}: y"), &down(&dev, &y), &y_ref, 2e-2, 2e-2);
            assert_close(&format!("{what}: xa"), &down(&dev, &xa), &xa_ref, 1e-2, 2e-2);
            let (mut da_ref, mut db_ref) = (vec![0.5f32; rank * din], vec![-0.5f32; dout * rank]);
            let xa_r = round(&xa_ref);
            // The CPU twin's terms, with `dyb = dy·B` rounded to bf16 as the device
            // stores it for its GEMMs: dA sums `rows` terms that cancel (|sum| is
            // 1% of the sum of |terms| at dA[191] of the [37, 128] case), so the
            // f32 reference differs from the bf16 pipeline by 12% there.
            use cpu::matmul::matmul;
            let mut dyb = vec![0.0f32; rows * rank];
            matmul(1, rows, rank, dout, &dy, 0, false, &bm, 0, false, &mut dyb, false, 1.0);
            let dyb = round(&dyb);
            let mut dx_ref = vec![0.0f32; rows * din];
            matmul(1, rows, din, dout, &dy, 0, false, &w, 0, false, &mut dx_ref, false, 1.0);
            matmul(1, rows, din, rank, &dyb, 0, false, &a, 0, false, &mut dx_ref, true, 2.0);
            matmul(1, rank, din, rows, &dyb, 0, true, &x, 0, false, &mut da_ref, true, 2.0);
            matmul(1, dout, rank, rows, &dy, 0, true, &xa_r, 0, false, &mut db_ref, true, 2.0);
            let (mut da, mut db) = (up32(&dev, &vec![0.5f32; rank * din]), up32(&dev, &vec![-0.5f32; dout * rank]));
            let dx =
                lora::lora_backward(&dev, &cx, &cw, &ca, &cb, &up(&dev, &xa_r), &up(&dev, &dy), &sh, &mut da, &mut db)
                    .unwrap();
            assert_close(&format!("{what}: dx"), &down(&dev, &dx), &dx_ref, 2e-2, 2e-2);
            assert_close(&format!("{what}: dA"), &down32(&dev, &da), &da_ref, 2e-2, 2e-2);
            assert_close(&format!("{what}: dB"), &down32(&dev, &db), &db_ref, 2e-2, 2e-2);
        }
    }

    #[test]
    fn linear_token_logprobs_match_the_unchunked_path() {
        let Some(dev) = gpu() else { return };
        let (t, d, v) = (29usize, 64usize, 999usize);
        let s = 1.0 / 0.8;
        let h = round(&randn(t * d, 110, 1.0));
        let w = round(&randn(v * d, 111, 0.1));
        let ids: Vec<i32> = (0..t).map(|i| ((i * 37 + 3) % v) as i32).collect();
        let dlogp = randn(t, 112, 1.0);
        // The device keeps each chunk's logits and dlogits in bf16 (the GEMMs read
        // bf16); the reference rounds at the same two places. dW sums 29 terms that
        // largely cancel, so an f32 reference differs from it by 7.5% at one element.
        let logits = round(&cpu::matmul::linear_forward(&h, &w, None, t, d, v));
        let (logp_ref, lse_ref) = cpu::loss::token_logprobs_forward(&logits, &ids, v, s);
        let dlogits = round(&cpu::loss::token_logprobs_backward(&logits, &ids, &lse_ref, &dlogp, v, s));
        let mut dh_ref = vec![0.0f32; t * d];
        cpu::matmul::matmul(1, t, d, v, &dlogits, 0, false, &w, 0, false, &mut dh_ref, false, 1.0);
        let mut dw_ref = vec![0.0f32; v * d];
        cpu::matmul::matmul(1, v, d, t, &dlogits, 0, true, &h, 0, false, &mut dw_ref, false, 1.0);
        let (ch, cw) = (up(&dev, &h), up(&dev, &w));
        let entropy_ref = cpu::loss::row_entropy(&logits, v, s);
        for chunk in [1usize, 7, 64] {
            let mut entropy = dev.zeros::<f32>(t, "test").unwrap();
            let (logp, lse) =
                loss::linear_token_logprobs_forward(&dev, &ch, &cw, &ids, d, v, s, chunk, Some(&mut entropy)).unwrap();
            assert_close("linear logp", &down32(&dev, &logp), &logp_ref, 5e-2, 1e-2);
            assert_close("linear logp entropy", &down32(&dev, &entropy), &entropy_ref, 1e-3, 1e-3);
            let mut dw = dev.zeros::<f32>(v * d, "test").unwrap();
            let dh = loss::linear_token_logprobs_backward(
                &dev,
                &ch,
                &cw,
                &ids,
                &lse,
                &up32(&dev, &dlogp),
                d,
                v,
                s,
                chunk,
                Some(&mut dw),
            )
            .unwrap();
            assert_close("linear logp dh", &down(&dev, &dh), &dh_ref, 2e-3, 3e-2);
            assert_close("linear logp dW", &down32(&dev, &dw), &dw_ref, 2e-4, 3e-2);
        }
    }
}
