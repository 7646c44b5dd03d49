//! GPU benchmark workloads, shared by `benches/cuda_ops.rs` (criterion) and
//! `examples/gpu_report.rs` (the table tools/gpu-check.sh prints): each kernel
//! family at a Qwen2.5-VL-7B-sized shape, next to the baseline the issue names
//! (fused attention vs GEMM + softmax + GEMM, fused LoRA vs the frozen base GEMMs
//! alone and vs PEFT's three GEMMs + add, multi-tensor AdamW vs one launch per
//! tensor, threshold sampling vs a sort-based sampler, chunked vs unchunked linear
//! cross-entropy, fused residual add + RMSNorm vs the two kernels).
//!
//! Timing uses CUDA events around `iters` back-to-back launches after a warm-up,
//! so host overhead between launches is included only as far as it stalls the
//! GPU. Figures: TFLOP/s for compute-bound work, GB/s for memory-bound work, and
//! the fraction of the datasheet peak of the GPU it ran on (dense bf16, HBM; an
//! H100 SXM's for a GPU `GpuSpec::for_device_name` does not know).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, sys};
use half::bf16;

use super::accounting::{Counters, bytes};
use super::attention::{self, AttentionKernel, AttnShape};
use super::device::CudaDevice;
use super::gemm::{self, GemmSpec};
use super::loss::GradScale;
use super::{lora, loss, optim, sampling, small_ops};
use crate::cpu::optim::AdamW;
use crate::cpu::sampling::SamplingParams;
use crate::error::Result;
use crate::rng::Philox;

use crate::cuda::gpus::GpuSpec;

/// `(scale, width)` of a smoke run ([`cases`]): every case at 1/64 of the
/// tokens and 1/16 of the widths, small enough for the emulated driver, so a
/// shape error in the bench code shows in CI instead of on a lent GPU.
pub const SMOKE: (f64, f64) = (1.0 / 64.0, 1.0 / 16.0);

/// What one run of a case must do: FLOPs (compute-bound) or bytes (memory-bound).
#[derive(Clone, Copy, Debug)]
pub enum Work {
    Flops(f64),
    Bytes(f64),
}

type RunFn = Box<dyn FnMut() -> Result<()>>;

/// One timed workload.
pub struct Case {
    pub name: String,
    pub work: Work,
    pub run: RunFn,
}

/// A kernel family's case and the baseline it is compared with.
pub struct Pair {
    pub family: &'static str,
    pub case: Case,
    pub baseline: Option<Case>,
}

fn rand_bf16(dev: &CudaDevice, n: usize, seed: u64, std: f32) -> Result<CudaSlice<bf16>> {
    let host: Vec<bf16> = Philox::new(seed, 0).normal_vec(n, std).into_iter().map(bf16::from_f32).collect();
    dev.upload(&host, "bench inputs")
}

fn case(name: impl Into<String>, work: Work, run: impl FnMut() -> Result<()> + 'static) -> Case {
    Case { name: name.into(), work, run: Box::new(run) }
}

/// Milliseconds per run: `warmup` untimed runs, then `iters` between two events.
pub fn time_ms(dev: &CudaDevice, run: &mut dyn FnMut() -> Result<()>, warmup: usize, iters: usize) -> Result<f64> {
    for _ in 0..warmup {
        run()?;
    }
    let ev = |dev: &CudaDevice| {
        dev.context()
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| dev.error("bench event", None, e))
    };
    let (start, end) = (ev(dev)?, ev(dev)?);
    start.record(dev.stream()).map_err(|e| dev.error("bench event", None, e))?;
    for _ in 0..iters {
        run()?;
    }
    end.record(dev.stream()).map_err(|e| dev.error("bench event", None, e))?;
    end.synchronize().map_err(|e| dev.error("bench run", None, e))?;
    let ms = start.elapsed_ms(&end).map_err(|e| dev.error("bench event", None, e))?;
    Ok(ms as f64 / iters.max(1) as f64)
}

/// "X TFLOP/s" or "X GB/s", and the percentage of `peak`'s figure.
pub fn rate(work: Work, ms: f64, peak: &GpuSpec) -> (String, f64) {
    match work {
        Work::Flops(f) => {
            let t = f / (ms * 1e-3) / 1e12;
            (format!("{t:8.1} TFLOP/s"), 100.0 * t / peak.bf16_tflops)
        }
        Work::Bytes(b) => {
            let g = b / (ms * 1e-3) / 1e9;
            (format!("{g:8.0} GB/s"), 100.0 * g / (peak.hbm_tbs * 1e3))
        }
    }
}

/// One attention forward (self-attention over `cu`) on a chosen kernel.
fn forward_case(
    dev: &Arc<CudaDevice>,
    kernel: AttentionKernel,
    name: String,
    flops: f64,
    [q, k, v]: [&CudaSlice<bf16>; 3],
    cu: &[usize],
    s: AttnShape,
) -> Case {
    let (dv, q, k, v, cu) = (dev.clone(), q.clone(), k.clone(), v.clone(), cu.to_vec());
    case(name, Work::Flops(flops), move || {
        attention::attention_forward_with(kernel, &dv, &q, &k, &v, &cu, &cu, &s).map(|_| ())
    })
}

/// Every case. `scale` < 1 shrinks the token counts (a quick run), 1 is the
/// full size; `width` shrinks the model widths too (hidden size, vocabulary,
/// MLP width; kept multiples of 32), for [`SMOKE`] runs that check the bench
/// code on the emulated driver. Head dims and head counts never shrink.
pub fn cases(dev: &Arc<CudaDevice>, scale: f64, width: f64) -> Result<Vec<Pair>> {
    let sz = |n: usize| ((n as f64 * scale) as usize).max(1);
    let wd = |n: usize| ((n as f64 * width) as usize / 32 * 32).max(32);
    let mut pairs = Vec::new();

    // Attention: bidirectional D=128 (fused tensor-core vs GEMM + softmax + GEMM
    // per head, and vs the SIMT kernel), causal GQA (the LM), and vision windows
    // at D=80, each tensor-core forward against the SIMT one.
    {
        let (t, h, d) = (sz(4096), 16, 128);
        let s = AttnShape { q_heads: h, kv_heads: h, head_dim: d, scale: 1.0 / (d as f32).sqrt(), causal: false };
        let (q, k, v) = (
            rand_bf16(dev, t * h * d, 1, 1.0)?,
            rand_bf16(dev, t * h * d, 2, 1.0)?,
            rand_bf16(dev, t * h * d, 3, 1.0)?,
        );
        let cu = vec![0, t];
        let flops = 4.0 * (t * t * d * h) as f64;
        let fwd = |kernel, name| forward_case(dev, kernel, name, flops, [&q, &k, &v], &cu, s);
        pairs.push(Pair {
            family: "attention",
            case: fwd(AttentionKernel::TensorCore, format!("attention fwd bidir T={t} H={h} D={d}, tensor cores")),
            baseline: Some(fwd(AttentionKernel::Simt, "the SIMT kernel".into())),
        });
        let fused = fwd(AttentionKernel::TensorCore, format!("attention fwd bidir T={t} H={h} D={d}, tensor cores"));
        // Baseline: per head, S = Q Kᵀ, P = softmax(S), O = P V, on contiguous
        // per-head copies (the GEMM path needs them).
        let heads: Vec<_> = (0..h)
            .map(|i| {
                Ok((
                    rand_bf16(dev, t * d, 10 + i as u64, 1.0)?,
                    rand_bf16(dev, t * d, 40 + i as u64, 1.0)?,
                    rand_bf16(dev, t * d, 70 + i as u64, 1.0)?,
                ))
            })
            .collect::<Result<_>>()?;
        let mut scores = dev.uninit::<bf16>(t * t, "bench")?;
        let mut o = dev.uninit::<bf16>(t * d, "bench")?;
        let dv = dev.clone();
        let baseline = case("GEMM + softmax + GEMM per head", Work::Flops(flops), move || {
            for (qh, kh, vh) in &heads {
                gemm::gemm(
                    &dv,
                    GemmSpec { m: t, n: t, k: d, trans_a: false, trans_b: true, alpha: 1.0, beta: 0.0 },
                    qh,
                    kh,
                    &mut scores,
                    None,
                )?;
                let p = small_ops::softmax_rows(&dv, &scores, t, t, s.scale)?;
                gemm::gemm(
                    &dv,
                    GemmSpec { m: t, n: d, k: t, trans_a: false, trans_b: false, alpha: 1.0, beta: 0.0 },
                    &p,
                    vh,
                    &mut o,
                    None,
                )?;
            }
            Ok(())
        });
        pairs.push(Pair { family: "attention", case: fused, baseline: Some(baseline) });
    }
    {
        let (t, hq, hkv, d) = (sz(4096), 28, 4, 128);
        let s = AttnShape { q_heads: hq, kv_heads: hkv, head_dim: d, scale: 1.0 / (d as f32).sqrt(), causal: true };
        let q = rand_bf16(dev, t * hq * d, 4, 1.0)?;
        let (k, v) = (rand_bf16(dev, t * hkv * d, 5, 1.0)?, rand_bf16(dev, t * hkv * d, 6, 1.0)?);
        let cu = vec![0, t];
        let flops = 2.0 * (t * t * d * hq) as f64; // causal: half of 4·T²·D·H
        let fwd = |kernel, name| forward_case(dev, kernel, name, flops, [&q, &k, &v], &cu, s);
        pairs.push(Pair {
            family: "attention",
            case: fwd(
                AttentionKernel::TensorCore,
                format!("attention fwd causal GQA T={t} H={hq}/{hkv} D={d}, tensor cores"),
            ),
            baseline: Some(fwd(AttentionKernel::Simt, "the SIMT kernel".into())),
        });
        let (q2, k2, v2, cu2) = (q, k, v, cu);
        let (out, lse) = attention::attention_forward(dev, &q2, &k2, &v2, &cu2, &cu2, &s)?;
        let dout = rand_bf16(dev, t * hq * d, 7, 1.0)?;
        let bwd = |kernel, name| {
            let (dv, q, k, v, out, lse, dout, cu) =
                (dev.clone(), q2.clone(), k2.clone(), v2.clone(), out.clone(), lse.clone(), dout.clone(), cu2.clone());
            // Backward: 2.5x the forward's FLOPs (dV, dP, dQ, dK GEMMs + recompute).
            case(name, Work::Flops(2.5 * flops), move || {
                attention::attention_backward_with(kernel, &dv, &q, &k, &v, &out, &lse, &dout, &cu, &s).map(|_| ())
            })
        };
        pairs.push(Pair {
            family: "attention",
            case: bwd(
                AttentionKernel::TensorCore,
                format!("attention bwd causal GQA T={t} H={hq}/{hkv} D={d}, tensor cores"),
            ),
            baseline: Some(bwd(AttentionKernel::Simt, "the SIMT kernels".into())),
        });
    }
    {
        // Vision tower: windows of 64 patches (112 px windows of 14 px patches, merged 2x2 -> 8x8).
        let (t, h, d) = (sz(16384).max(64) / 64 * 64, 16, 80);
        let s = AttnShape { q_heads: h, kv_heads: h, head_dim: d, scale: 1.0 / (d as f32).sqrt(), causal: false };
        let (q, k, v) = (
            rand_bf16(dev, t * h * d, 8, 1.0)?,
            rand_bf16(dev, t * h * d, 9, 1.0)?,
            rand_bf16(dev, t * h * d, 10, 1.0)?,
        );
        let cu: Vec<usize> = (0..=t / 64).map(|i| i * 64).collect();
        let flops = 4.0 * (t * 64 * d * h) as f64;
        let fwd = |kernel, name| forward_case(dev, kernel, name, flops, [&q, &k, &v], &cu, s);
        pairs.push(Pair {
            family: "attention",
            case: fwd(
                AttentionKernel::TensorCore,
                format!("attention fwd vision windows T={t} H={h} D={d}, tensor cores"),
            ),
            baseline: Some(fwd(AttentionKernel::Simt, "the SIMT kernel".into())),
        });
    }

    // LoRA forward + backward at a 7B projection, against the frozen base GEMMs
    // alone (the 1.1x target) and against PEFT's unfused form.
    {
        let (rows, din, dout, r) = (sz(4096), wd(3584), wd(3584), 16);
        let sh = lora::LoraShape { rows, din, dout, rank: r, scale: 2.0 };
        let x = rand_bf16(dev, rows * din, 20, 1.0)?;
        let w = rand_bf16(dev, dout * din, 21, 0.02)?;
        let a = rand_bf16(dev, r * din, 22, 0.02)?;
        let bm = rand_bf16(dev, dout * r, 23, 0.02)?;
        let dy = rand_bf16(dev, rows * dout, 24, 1.0)?;
        let mut da = dev.zeros::<f32>(r * din, "bench")?;
        let mut db = dev.zeros::<f32>(dout * r, "bench")?;
        let base_flops = 2.0 * 2.0 * (rows * din * dout) as f64;
        let dv = dev.clone();
        let (x2, w2, dy2) = (x.clone(), w.clone(), dy.clone());
        let fused =
            case(format!("LoRA fwd+bwd [{rows}, {din}] -> {dout}, r={r}"), Work::Flops(base_flops), move || {
                let (_, xa) = lora::lora_forward(&dv, &x, &w, None, &a, &bm, &sh)?;
                lora::lora_backward(&dv, &x, &w, &a, &bm, &xa, &dy, &sh, &mut da, &mut db).map(|_| ())
            });
        let mut y = dev.uninit::<bf16>(rows * dout, "bench")?;
        let mut dx = dev.uninit::<bf16>(rows * din, "bench")?;
        let dv = dev.clone();
        let base = case("frozen base GEMMs only (y = xWᵀ, dx = dy W)", Work::Flops(base_flops), move || {
            gemm::gemm(
                &dv,
                GemmSpec { m: rows, n: dout, k: din, trans_a: false, trans_b: true, alpha: 1.0, beta: 0.0 },
                &x2,
                &w2,
                &mut y,
                None,
            )?;
            gemm::gemm(
                &dv,
                GemmSpec { m: rows, n: din, k: dout, trans_a: false, trans_b: false, alpha: 1.0, beta: 0.0 },
                &dy2,
                &w2,
                &mut dx,
                None,
            )
        });
        pairs.push(Pair { family: "lora", case: fused, baseline: Some(base) });

        let x = rand_bf16(dev, rows * din, 25, 1.0)?;
        let w = rand_bf16(dev, dout * din, 26, 0.02)?;
        let a = rand_bf16(dev, r * din, 27, 0.02)?;
        let bm = rand_bf16(dev, dout * r, 28, 0.02)?;
        let fwd_flops = 2.0 * (rows * din * dout) as f64;
        let dv = dev.clone();
        let (x2, w2, a2, b2) = (x.clone(), w.clone(), a.clone(), bm.clone());
        let fused = case(format!("LoRA fwd [{rows}, {din}] -> {dout}, r={r}"), Work::Flops(fwd_flops), move || {
            lora::lora_forward(&dv, &x, &w, None, &a, &bm, &sh).map(|_| ())
        });
        let mut y1 = dev.uninit::<bf16>(rows * dout, "bench")?;
        let mut xa = dev.uninit::<bf16>(rows * r, "bench")?;
        let mut y2 = dev.uninit::<bf16>(rows * dout, "bench")?;
        let dv = dev.clone();
        let peft = case("PEFT unfused: 3 GEMMs + add", Work::Flops(fwd_flops), move || {
            gemm::gemm(
                &dv,
                GemmSpec { m: rows, n: dout, k: din, trans_a: false, trans_b: true, alpha: 1.0, beta: 0.0 },
                &x2,
                &w2,
                &mut y1,
                None,
            )?;
            gemm::gemm(
                &dv,
                GemmSpec { m: rows, n: r, k: din, trans_a: false, trans_b: true, alpha: 1.0, beta: 0.0 },
                &x2,
                &a2,
                &mut xa,
                None,
            )?;
            gemm::gemm(
                &dv,
                GemmSpec { m: rows, n: dout, k: r, trans_a: false, trans_b: true, alpha: 2.0, beta: 0.0 },
                &xa,
                &b2,
                &mut y2,
                None,
            )?;
            small_ops::add(&dv, &y1, &y2).map(|_| ())
        });
        pairs.push(Pair { family: "lora", case: fused, baseline: Some(peft) });
    }

    // AdamW over ~7B-like tensor sizes (scaled down): one launch vs one per tensor.
    {
        let sizes: Vec<usize> =
            (0..sz(280)).map(|i| if i % 7 == 0 { wd(3584) } else { sz(wd(3584) * 100) + i }).collect();
        let total: usize = sizes.iter().sum();
        let weights: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.01f32; n]).collect();
        let h = AdamW::default();
        // Bytes per element: read p, g, m, v (16), write p, m, v (12), bf16 copy (2).
        let bytes = 30.0 * total as f64;
        let mut group = optim::AdamWGroup::new(dev, &weights, true)?;
        let dv = dev.clone();
        let mut step = 0u64;
        let fused = case(
            format!("multi-tensor AdamW, {} tensors, {:.0}M params", sizes.len(), total as f64 / 1e6),
            Work::Bytes(bytes),
            move || {
                step += 1;
                group.step(&dv, &h, step, None)
            },
        );
        let mut singles: Vec<optim::AdamWGroup> = weights
            .iter()
            .map(|w| optim::AdamWGroup::new(dev, std::slice::from_ref(w), true))
            .collect::<Result<_>>()?;
        drop(weights);
        let dv = dev.clone();
        let mut step = 0u64;
        let baseline = case("one AdamW launch per tensor", Work::Bytes(bytes), move || {
            step += 1;
            singles.iter_mut().try_for_each(|g| g.step(&dv, &h, step, None))
        });
        pairs.push(Pair { family: "optim", case: fused, baseline: Some(baseline) });
    }

    // Sampling: 4 prompts x G=16 rows of the Qwen2.5 vocabulary, top-k + top-p,
    // the four vision placeholders banned as a rollout bans them (ids 151652..=151655
    // of Qwen2.5, at the same distance from the end of a narrowed vocabulary).
    {
        let (rows, v, n) = (sz(64), wd(151_936), 1);
        let banned: Vec<u32> = (0..4).map(|i| (v - 284 + i) as u32).collect();
        let logits = rand_bf16(dev, rows * v, 30, 3.0)?;
        let streams: Vec<u64> = (0..rows as u64).collect();
        let p = SamplingParams { temperature: 1.0, top_k: 50, top_p: 0.9 };
        let bytes = (rows * v * 2) as f64;
        let dv = dev.clone();
        let (l2, s2) = (logits.clone(), streams.clone());
        let fused =
            case(format!("sampling top-k/top-p [{rows}, {v}] (threshold bisection)"), Work::Bytes(bytes), move || {
                sampling::sample_rows(&dv, &logits, v, n, &p, 7, &streams, &banned).map(|_| ())
            });
        let dv = dev.clone();
        let baseline = case("sort-based sampler (bitonic sort per row)", Work::Bytes(bytes), move || {
            sampling::sample_rows_sorted_baseline(&dv, &l2, v, n, &p, 7, &s2).map(|_| ())
        });
        pairs.push(Pair { family: "sampling", case: fused, baseline: Some(baseline) });
    }

    // Loss: chunked linear + CE against the unchunked path (full logits + CE).
    {
        let (t, d, v) = (sz(4096), wd(3584), wd(151_936));
        let h = rand_bf16(dev, t * d, 40, 1.0)?;
        let w = rand_bf16(dev, v * d, 41, 0.02)?;
        let labels: Vec<i32> = (0..t).map(|i| ((i * 7919) % v) as i32).collect();
        let flops = 3.0 * 2.0 * (t * d * v) as f64;
        let mut dw = dev.zeros::<f32>(v * d, "bench")?;
        let dv = dev.clone();
        let (h2, w2, l2) = (h.clone(), w.clone(), labels.clone());
        let fused =
            case(format!("linear+CE fwd+bwd chunked (1024 rows) [{t}, {d}] x {v}"), Work::Flops(flops), move || {
                loss::linear_cross_entropy(
                    &dv,
                    &h,
                    &w,
                    &labels,
                    d,
                    v,
                    1024,
                    GradScale::Uniform(1.0 / t as f32),
                    Some(&mut dw),
                )
                .map(|_| ())
            });
        let mut dw2 = dev.zeros::<f32>(v * d, "bench")?;
        let dv = dev.clone();
        let baseline = case("unchunked: [T, V] logits, CE, two GEMMs", Work::Flops(flops), move || {
            loss::linear_cross_entropy(&dv, &h2, &w2, &l2, d, v, t, GradScale::Uniform(1.0 / t as f32), Some(&mut dw2))
                .map(|_| ())
        });
        pairs.push(Pair { family: "loss", case: fused, baseline: Some(baseline) });
    }

    // Small ops: memory-bound, bytes read + written.
    {
        let (rows, dim) = (sz(16384), wd(3584));
        let x = rand_bf16(dev, rows * dim, 50, 1.0)?;
        let w = rand_bf16(dev, dim, 51, 1.0)?;
        let dv = dev.clone();
        pairs.push(Pair {
            family: "small ops",
            case: case(format!("RMSNorm fwd [{rows}, {dim}]"), Work::Bytes((rows * dim * 4) as f64), move || {
                small_ops::rms_norm_forward(&dv, &x, &w, rows, dim, 1e-6).map(|_| ())
            }),
            baseline: None,
        });
        let (x1, r1, w1) =
            (rand_bf16(dev, rows * dim, 55, 1.0)?, rand_bf16(dev, rows * dim, 56, 1.0)?, rand_bf16(dev, dim, 57, 1.0)?);
        let (x2, r2, w2) = (x1.clone(), r1.clone(), w1.clone());
        let dv = dev.clone();
        let fused = case(
            format!("residual add + RMSNorm fused [{rows}, {dim}]"),
            Work::Bytes((rows * dim * 8) as f64),
            move || small_ops::add_rms_norm_forward(&dv, &x1, &r1, &w1, rows, dim, 1e-6).map(|_| ()),
        );
        let dv = dev.clone();
        let separate = case("add, then RMSNorm", Work::Bytes((rows * dim * 8) as f64), move || {
            let h = small_ops::add(&dv, &x2, &r2)?;
            small_ops::rms_norm_forward(&dv, &h, &w2, rows, dim, 1e-6).map(|_| ())
        });
        pairs.push(Pair { family: "small ops", case: fused, baseline: Some(separate) });
        let n = rows * wd(18944) / 4;
        let (g, u) = (rand_bf16(dev, n, 52, 1.0)?, rand_bf16(dev, n, 53, 1.0)?);
        let dv = dev.clone();
        pairs.push(Pair {
            family: "small ops",
            case: case(format!("SwiGLU fwd [{n}]"), Work::Bytes((n * 6) as f64), move || {
                small_ops::swiglu_forward(&dv, &g, &u).map(|_| ())
            }),
            baseline: None,
        });
        let (t, hh, d) = (sz(16384), 28, 128);
        let xr = rand_bf16(dev, t * hh * d, 54, 1.0)?;
        let tab: Vec<f32> = (0..t * d).map(|i| (i as f32).cos()).collect();
        let (cos, sin) = (dev.upload(&tab, "bench")?, dev.upload(&tab, "bench")?);
        let dv = dev.clone();
        pairs.push(Pair {
            family: "small ops",
            case: case(format!("RoPE [{t}, {hh}, {d}]"), Work::Bytes((t * hh * d * 4 + t * d * 8) as f64), move || {
                small_ops::rope(&dv, &xr, &cos, &sin, t, hh, d, false).map(|_| ())
            }),
            baseline: None,
        });
    }
    Ok(pairs)
}

/// One timed row of the report: a case, or the baseline of the case above it.
#[derive(Clone, Debug)]
pub struct Timing {
    pub family: &'static str,
    pub name: String,
    pub ms: f64,
    /// "X TFLOP/s" or "X GB/s".
    pub rate: String,
    /// Percent of the H100 peak.
    pub percent_of_peak: f64,
    /// For a baseline: its time over the case's (how much faster the case is).
    pub case_speedup: Option<f64>,
    /// What one run did on the device (one extra, untimed run), all phases.
    pub per_run: Counters,
    /// The pool's high-water mark during that run.
    pub pool_peak_bytes: u64,
}

/// Counts of one untimed run: launches, copies, allocations, pool peak.
fn account_one(dev: &CudaDevice, run: &mut dyn FnMut() -> Result<()>) -> Result<(Counters, u64)> {
    dev.reset_accounting();
    run()?;
    dev.synchronize("bench accounting run")?;
    let a = dev.take_accounting();
    Ok((a.total(), a.pool_peak_bytes))
}

/// Runs every case and baseline: `warmup` untimed runs, then `iters` timed.
pub fn measure(dev: &CudaDevice, pairs: &mut [Pair], warmup: usize, iters: usize) -> Result<Vec<Timing>> {
    let peak = GpuSpec::for_device_name(dev.name());
    let mut rows = Vec::new();
    for p in pairs.iter_mut() {
        let ms = time_ms(dev, &mut p.case.run, warmup, iters)?;
        let (r, percent_of_peak) = rate(p.case.work, ms, &peak);
        let (per_run, pool_peak_bytes) = account_one(dev, &mut p.case.run)?;
        rows.push(Timing {
            family: p.family,
            name: p.case.name.clone(),
            ms,
            rate: r,
            percent_of_peak,
            case_speedup: None,
            per_run,
            pool_peak_bytes,
        });
        if let Some(b) = p.baseline.as_mut() {
            let bms = time_ms(dev, &mut b.run, warmup, iters)?;
            let (r, percent_of_peak) = rate(b.work, bms, &peak);
            let (per_run, pool_peak_bytes) = account_one(dev, &mut b.run)?;
            rows.push(Timing {
                family: p.family,
                name: format!("  baseline: {}", b.name),
                ms: bms,
                rate: r,
                percent_of_peak,
                case_speedup: Some(bms / ms),
                per_run,
                pool_peak_bytes,
            });
        }
    }
    Ok(rows)
}

/// Runs every case (and baseline) and formats the report table.
pub fn report(dev: &CudaDevice, pairs: &mut [Pair], warmup: usize, iters: usize) -> Result<String> {
    let rows = measure(dev, pairs, warmup, iters)?;
    let peak = GpuSpec::for_device_name(dev.name());
    let mut out = format!(
        "GPU: {} (sm_{}{}); peaks used: {} TFLOP/s bf16 dense, {} TB/s ({} datasheet)\n\n",
        dev.name(),
        dev.compute_capability().0,
        dev.compute_capability().1,
        peak.bf16_tflops,
        peak.hbm_tbs,
        peak.name
    );
    out.push_str(&format!(
        "{:<10} {:<62} {:>10} {:>16} {:>7} {:>9} {:>8} {:>5} {:>11} {:>11} {:>11}\n",
        "family", "case", "ms", "rate", "%peak", "vs case", "launches", "gemms", "H2D", "D2H", "pool peak"
    ));
    for r in &rows {
        let (family, vs) = match r.case_speedup {
            None => (r.family, String::new()),
            Some(x) => ("", format!("{x:.2}x")),
        };
        let c = &r.per_run;
        out.push_str(&format!(
            "{:<10} {:<62} {:>10.3} {:>16} {:>6.1}% {:>9} {:>8} {:>5} {:>11} {:>11} {:>11}\n",
            family,
            r.name,
            r.ms,
            r.rate,
            r.percent_of_peak,
            vs,
            c.launches,
            c.gemms,
            bytes(c.h2d_bytes),
            bytes(c.d2h_bytes),
            bytes(r.pool_peak_bytes)
        ));
    }
    out.push_str("(launches ... pool peak: one extra untimed run of the case, counted by the device layer)\n");
    let m = dev.memory();
    out.push_str(&format!(
        "\npool: peak {:.2} GiB in use, {:.2} GiB reserved\n",
        m.peak as f64 / (1u64 << 30) as f64,
        m.reserved as f64 / (1u64 << 30) as f64
    ));
    Ok(out)
}
