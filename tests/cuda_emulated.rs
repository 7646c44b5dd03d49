//! Rung 3, before a GPU: the attention kernels' CUDA sources, compiled for the
//! CPU and run through the warp emulator (`actial::cuda::emulator`,
//! `cuda/emulator/`), against their CPU twins. This tests the kernels' index
//! arithmetic, masks, tile edges, fragment layouts and barriers on any machine;
//! it does not replace `tests/cuda_parity.rs` on a GPU (the emulated mma and
//! ldmatrix layouts are written from the PTX ISA, not measured).
//!
//! The SIMT forward goes through the emulator too: it uses only shuffles and
//! barriers, so its agreement with the CPU checks the emulator itself.

#[cfg(not(actial_emulator))]
#[test]
fn kernel_emulator_skipped_without_a_cpp_compiler() {
    assert!(
        std::env::var_os("ACTIAL_REQUIRE_CUDA_BUILD").is_none(),
        "ACTIAL_REQUIRE_CUDA_BUILD is set but the kernel emulator was not built"
    );
    println!("SKIPPED: the CUDA kernel emulator was not built (no C++20 compiler)");
}

#[cfg(actial_emulator)]
mod emulated {
    use actial::cpu;
    use actial::cuda::attention_plan::{AttentionKernel, AttnShape};
    use actial::cuda::emulator;
    use actial::rng::Philox;
    use half::bf16;

    fn randn(n: usize, seed: u64) -> Vec<f32> {
        Philox::new(seed, 0).normal_vec(n, 1.0)
    }

    fn to_bf16(v: &[f32]) -> Vec<bf16> {
        v.iter().map(|&x| bf16::from_f32(x)).collect()
    }

    fn to_f32(v: &[bf16]) -> Vec<f32> {
        v.iter().map(|x| x.to_f32()).collect()
    }

    /// |got - want| <= atol + rtol |want| everywhere; names the worst element.
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

    fn shape(q_heads: usize, kv_heads: usize, head_dim: usize, causal: bool) -> AttnShape {
        AttnShape { q_heads, kv_heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), causal }
    }

    /// One forward through the emulator against `cpu::attention::attention_forward_kv`.
    fn check_forward(kernel: AttentionKernel, cu_q: &[usize], cu_k: &[usize], s: &AttnShape, seed: u64) {
        let (tq, tk, d) = (*cu_q.last().unwrap(), *cu_k.last().unwrap(), s.head_dim);
        let q = to_bf16(&randn(tq * s.q_heads * d, seed));
        let k = to_bf16(&randn(tk * s.kv_heads * d, seed + 1));
        let v = to_bf16(&randn(tk * s.kv_heads * d, seed + 2));
        let (out_ref, lse_ref) =
            cpu::attention::attention_forward_kv(&to_f32(&q), &to_f32(&k), &to_f32(&v), cu_q, cu_k, s);
        let (out, lse) = emulator::attention_forward(kernel, &q, &k, &v, cu_q, cu_k, s).unwrap();
        let what =
            format!("{kernel:?} q {cu_q:?} k {cu_k:?} heads {}/{} d {d} causal {}", s.q_heads, s.kv_heads, s.causal);
        assert_close(&format!("{what}: out"), &to_f32(&out), &out_ref, 1e-2, 2e-2);
        assert_close(&format!("{what}: lse"), &lse, &lse_ref, 1e-3, 1e-4);
    }

    /// Segments around the tensor-core kernel's tiles (64 query rows per block,
    /// 64 keys per shared tile): 1, 15, 64 and 65 tokens, and 130 (three key
    /// tiles, the last partial), every head dim, GQA, both masks.
    #[test]
    fn tensor_core_forward_matches_the_cpu_across_tile_edges() {
        let cu = [0usize, 1, 16, 80, 145, 275];
        for (hq, hkv, d) in [(2, 1, 32), (1, 1, 64), (2, 2, 80), (2, 1, 128)] {
            for causal in [false, true] {
                check_forward(AttentionKernel::TensorCore, &cu, &cu, &shape(hq, hkv, d, causal), 10 + d as u64);
            }
        }
    }

    /// Decoding against a cache: queries are the last positions of longer key
    /// segments, so the causal mask aligns bottom-right and crosses key tiles
    /// at other offsets than in self-attention; one query segment is empty.
    #[test]
    fn tensor_core_forward_against_a_cache_aligns_causal_masks_bottom_right() {
        let (cu_q, cu_k) = ([0usize, 1, 71, 71, 101], [0usize, 1, 151, 160, 290]);
        for causal in [true, false] {
            check_forward(AttentionKernel::TensorCore, &cu_q, &cu_k, &shape(4, 2, 64, causal), 40);
        }
    }

    /// The SIMT reference kernel through the same emulator: shuffles and
    /// barriers only, so this checks the emulator as much as the kernel.
    #[test]
    fn simt_forward_matches_the_cpu_through_the_emulator() {
        let cu = [0usize, 1, 18, 50];
        for (hq, hkv, d) in [(2, 1, 32), (3, 3, 80)] {
            for causal in [false, true] {
                check_forward(AttentionKernel::Simt, &cu, &cu, &shape(hq, hkv, d, causal), 60);
            }
        }
        check_forward(AttentionKernel::Simt, &[0, 2, 5], &[0, 40, 47], &shape(2, 1, 64, true), 70);
    }

    /// One backward through the emulator against `cpu::attention::attention_backward`,
    /// from the CPU's own forward outputs rounded as the GPU stores them.
    fn check_backward(kernel: AttentionKernel, cu: &[usize], configs: &[(usize, usize, usize)]) {
        let t = *cu.last().unwrap();
        for &(hq, hkv, d) in configs {
            for causal in [false, true] {
                let s = shape(hq, hkv, d, causal);
                let q = to_bf16(&randn(t * hq * d, 90));
                let k = to_bf16(&randn(t * hkv * d, 91));
                let v = to_bf16(&randn(t * hkv * d, 92));
                let dout = to_bf16(&randn(t * hq * d, 93));
                let (qf, kf, vf) = (to_f32(&q), to_f32(&k), to_f32(&v));
                let (out_ref, lse) = cpu::attention::attention_forward(&qf, &kf, &vf, cu, &s);
                let out = to_bf16(&out_ref);
                let (dq_ref, dk_ref, dv_ref) =
                    cpu::attention::attention_backward(&qf, &kf, &vf, &to_f32(&out), &lse, &to_f32(&dout), cu, &s);
                let (dq, dk, dv) = emulator::attention_backward(kernel, &q, &k, &v, &out, &lse, &dout, cu, &s).unwrap();
                let what = format!("{kernel:?} backward {cu:?} heads {hq}/{hkv} d {d} causal {causal}");
                assert_close(&format!("{what}: dq"), &to_f32(&dq), &dq_ref, 2e-2, 3e-2);
                assert_close(&format!("{what}: dk"), &to_f32(&dk), &dk_ref, 2e-2, 3e-2);
                assert_close(&format!("{what}: dv"), &to_f32(&dv), &dv_ref, 2e-2, 3e-2);
            }
        }
    }

    /// The SIMT backward: 1 token, a partial dQ tile (8 rows), several dK/dV
    /// tiles (32 keys each).
    #[test]
    fn simt_backward_matches_the_cpu_through_the_emulator() {
        check_backward(AttentionKernel::Simt, &[0, 1, 12, 77], &[(4, 2, 32), (3, 1, 80)]);
    }

    /// The tensor-core backward around its tiles: 64-row dQ blocks over 32-key
    /// tiles, 64-key dK/dV blocks over 16-query tiles; segments of 1, 17 and
    /// 130 tokens, every head dim, GQA.
    #[test]
    fn tensor_core_backward_matches_the_cpu_across_tile_edges() {
        check_backward(
            AttentionKernel::TensorCore,
            &[0, 1, 18, 148],
            &[(2, 1, 32), (1, 1, 64), (2, 2, 80), (2, 1, 128)],
        );
    }

    /// The paged decode kernel on the emulator: one group of two samples over
    /// a prefix in blocks 2 and 0 and suffixes in blocks 1 and 3 (blocks of 4
    /// rows), against attention over each sample's gathered cache; then a
    /// table entry, a slot and a length out of range are refused before the
    /// kernel runs (the device kernel trusts them).
    #[test]
    fn paged_decode_reads_through_the_tables_and_refuses_bad_ones() {
        let (hq, hkv, d, bs) = (4, 2, 64, 4);
        let s = shape(hq, hkv, d, true);
        let row = hkv * d;
        let (kp, vp) = (to_bf16(&randn(4 * bs * row, 100)), to_bf16(&randn(4 * bs * row, 101)));
        let q = to_bf16(&randn(2 * hq * d, 104));
        // The prefix table (one slot of 2 blocks) is [2, 0]; the suffixes' (2 slots of 1 block):
        let stab = [3i32, 1];
        // Prefix keys 0..5 at rows 8..12 then 0; sample 0 (slot 1) keys at rows 4..7, sample 1 (slot 0) at 12.
        let rows_of = [[8usize, 9, 10, 11, 0, 4, 5, 6], [8, 9, 10, 11, 0, 12, 13, 14]];
        let lens = [3usize, 1];
        let (mut k_all, mut v_all, mut cu_k) = (Vec::new(), Vec::new(), vec![0usize]);
        for (i, rows) in rows_of.iter().enumerate() {
            for &r in &rows[..5 + lens[i]] {
                k_all.extend_from_slice(&to_f32(&kp[r * row..(r + 1) * row]));
                v_all.extend_from_slice(&to_f32(&vp[r * row..(r + 1) * row]));
            }
            cu_k.push(k_all.len() / row);
        }
        let (out_ref, lse_ref) =
            cpu::attention::attention_forward_kv(&to_f32(&q), &k_all, &v_all, &[0, 1, 2], &cu_k, &s);
        // cu_group | group_slot | prefix_len | sample_slot | suffix_len | store_row
        let packed = [0, 2, 0, 5, 1, 0, 3, 1, 0, 0];
        let kv = |ptab: &'static [i32]| emulator::PagedKv {
            k_pool: &kp,
            v_pool: &vp,
            block_size: bs,
            prefix_table: ptab,
            prefix_table_width: 2,
            suffix_table: &stab,
            suffix_table_width: 1,
        };
        let (out, lse) = emulator::attention_decode_paged(&q, &kv(&[2, 0]), &packed, &[0, 2], &s).unwrap();
        assert_close("paged out", &to_f32(&out), &out_ref, 1e-2, 2e-2);
        assert_close("paged lse", &lse, &lse_ref, 1e-3, 1e-4);
        let err = |packed: &[i32], ptab: &'static [i32]| {
            emulator::attention_decode_paged(&q, &kv(ptab), packed, &[0, 2], &s).unwrap_err().to_string()
        };
        assert!(err(&packed, &[2, 4]).contains("block 4 of 4"), "{}", err(&packed, &[2, 4]));
        assert!(err(&[0, 2, 0, 5, 2, 0, 3, 1, 0, 0], &[2, 0]).contains("slot 2"));
        assert!(err(&[0, 2, 0, 9, 1, 0, 3, 1, 0, 0], &[2, 0]).contains("9 keys"));
    }

    #[test]
    fn emulated_forward_rejects_what_the_cuda_wrapper_rejects() {
        let z = vec![bf16::ZERO; 64 * 4];
        let s = shape(2, 2, 64, true);
        let err = emulator::attention_forward(AttentionKernel::TensorCore, &z, &z, &z, &[0, 2], &[0, 1], &s);
        assert!(err.unwrap_err().to_string().contains("more queries than keys"));
        let z48 = vec![bf16::ZERO; 48 * 2];
        let err = emulator::attention_forward(
            AttentionKernel::TensorCore,
            &z48,
            &z48,
            &z48,
            &[0, 1],
            &[0, 1],
            &AttnShape { head_dim: 48, ..s },
        );
        assert!(err.unwrap_err().to_string().contains("head dim 48"));
    }

    #[test]
    fn attention_merge_matches_the_cpu_including_empty_sides() {
        let (rows, d) = (21usize, 80usize);
        let (oa, ob) = (to_bf16(&randn(rows * d, 80)), to_bf16(&randn(rows * d, 81)));
        let (mut la, mut lb) = (randn(rows, 82), randn(rows, 83));
        // Row 0: side b saw no keys; row 1: side a saw none; row 2: neither did.
        lb[0] = f32::NEG_INFINITY;
        la[1] = f32::NEG_INFINITY;
        la[2] = f32::NEG_INFINITY;
        lb[2] = f32::NEG_INFINITY;
        let cpu_side = |o: &[bf16], l: &[f32]| actial::ops::AttnOut {
            out: actial::Tensor::from_f32(to_f32(o), [rows, 1, d], actial::Device::Cpu).unwrap(),
            lse: actial::Tensor::from_f32(l.to_vec(), [rows, 1], actial::Device::Cpu).unwrap(),
        };
        let want = actial::ops::merge_attention(&cpu_side(&oa, &la), &cpu_side(&ob, &lb)).unwrap();
        let (out_ref, lse_ref) = (want.out.to_vec_f32().unwrap(), want.lse.to_vec_f32().unwrap());
        let (out, lse) = emulator::attention_merge((&oa, &la), (&ob, &lb), rows, d).unwrap();
        assert_close("merge out", &to_f32(&out), &out_ref, 1e-2, 1e-2);
        assert!(to_f32(&out)[2 * d..3 * d].iter().all(|&x| x == 0.0), "no keys on either side: out 0");
        assert_eq!((lse[2], lse_ref[2]), (f32::NEG_INFINITY, f32::NEG_INFINITY));
        assert_close("merge lse, one side empty", &lse[..2], &lse_ref[..2], 1e-5, 1e-5);
        assert_close("merge lse", &lse[3..], &lse_ref[3..], 1e-5, 1e-5);
    }

    /// Philox on the CPU and in the kernel are bit-identical, so with the same
    /// streams the kernel's bisected threshold must draw the CPU's tokens.
    #[test]
    fn sampling_draws_the_cpu_tokens() {
        let (rows, v, n) = (3usize, 517usize, 8usize);
        let logits = to_bf16(&Philox::new(61, 0).normal_vec(rows * v, 2.0));
        let lf = to_f32(&logits);
        let streams: Vec<u64> = (0..rows as u64).map(|r| 1000 + r * n as u64).collect();
        use actial::cpu::sampling::SamplingParams;
        for p in [
            SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 },
            SamplingParams { temperature: 0.7, top_k: 50, top_p: 1.0 },
            SamplingParams { temperature: 1.3, top_k: 0, top_p: 0.9 },
            SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 },
        ] {
            for banned in [vec![], most_likely_ids(&lf, v, 3)] {
                let (tok, logp) = emulator::sample_rows(&logits, v, n, &p, 7, &streams, &banned).unwrap();
                let (tok_ref, _) = cpu::sampling::sample_rows_streams(&lf, v, n, &p, 7, &streams, &banned);
                let same = tok.iter().zip(&tok_ref).filter(|(a, b)| a == b).count();
                println!("{p:?}, banned {banned:?}: {same} of {} draws equal the CPU's", tok.len());
                // The emulator's exp is the CPU's, so no uniform can fall on a bucket
                // edge differently: every draw is the CPU's.
                assert_eq!(same, tok.len(), "{p:?}: only {same} of {} draws match the CPU", tok.len());
                for (i, (&t, &lp)) in tok.iter().zip(&logp).enumerate() {
                    assert!(!banned.contains(&t), "{p:?}: drew banned token {t}");
                    let row = &lf[(i / n) * v..(i / n + 1) * v];
                    let dist = cpu::sampling::RowDistribution::new(row, &p, &banned);
                    assert!(dist.tokens.contains(&(t as usize)), "{p:?}: token {t} is outside the CPU's kept set");
                    // The full row's log-prob, banned tokens included in the normaliser.
                    let full = cpu::sampling::RowDistribution::new(row, &p, &[]);
                    assert!((lp - full.logprob(row, t as usize)).abs() < 1e-3, "{p:?}: logprob of draw {i}");
                }
            }
        }
        let err = emulator::sample_rows(&logits, v, n, &Default::default(), 7, &streams, &[v as u32]).unwrap_err();
        assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    }

    /// The `k` most likely ids of every row (so banning them changes the draws,
    /// greedy ones included).
    fn most_likely_ids(lf: &[f32], v: usize, k: usize) -> Vec<u32> {
        let mut ids = Vec::new();
        for row in lf.chunks(v) {
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            ids.extend(order[..k].iter().map(|&i| i as u32));
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// bf16 logits take few distinct values, so the top-k / top-p cut often falls
    /// inside a run of equal logits. The kernel finds the cut by a threshold, the
    /// CPU by a stable sort; both must keep the first tied tokens in vocabulary
    /// order, so every draw is the CPU's (before the tie rule, 7 of 96 differed in
    /// tests/cuda_parity.rs). Rows of 7 distinct values make every cut a tie.
    #[test]
    fn sampling_breaks_ties_at_the_cut_as_the_cpu_does() {
        let (rows, v, n) = (2usize, 700usize, 16usize);
        let lf: Vec<f32> = (0..rows * v).map(|i| ((i * 5 + i / v) % 7) as f32 * 0.5).collect();
        let logits = to_bf16(&lf);
        let streams: Vec<u64> = (0..rows as u64).map(|r| 50 + r * n as u64).collect();
        use actial::cpu::sampling::SamplingParams;
        for p in [
            SamplingParams { temperature: 1.0, top_k: 10, top_p: 1.0 },
            SamplingParams { temperature: 0.8, top_k: 150, top_p: 1.0 },
            SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.3 },
            SamplingParams { temperature: 1.0, top_k: 130, top_p: 0.6 },
        ] {
            let (tok, _) = emulator::sample_rows(&logits, v, n, &p, 3, &streams, &[]).unwrap();
            let (tok_ref, _) = cpu::sampling::sample_rows_streams(&lf, v, n, &p, 3, &streams, &[]);
            assert_eq!(tok, tok_ref, "{p:?}");
            // Banning some of the top tied tokens moves the cut to the next ones.
            let banned = [1u32, 3, 5];
            let (tok, _) = emulator::sample_rows(&logits, v, n, &p, 3, &streams, &banned).unwrap();
            let (tok_ref, _) = cpu::sampling::sample_rows_streams(&lf, v, n, &p, 3, &streams, &banned);
            assert_eq!(tok, tok_ref, "{p:?}, banned {banned:?}");
        }
    }

    /// The kernel table holds every `extern "C" __global__` entry point of cuda/*.cu.
    #[test]
    fn the_emulator_holds_every_kernel() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "cu") {
                n += std::fs::read_to_string(&p).unwrap().matches("extern \"C\" __global__ void").count();
            }
        }
        assert!(n > 50, "found only {n} kernels in {}", dir.display());
        assert_eq!(emulator::kernel_count(), n);
        let mut none = emulator::Args::new();
        // SAFETY: the name does not exist, so nothing runs.
        let err = unsafe { emulator::launch("no_such_kernel", (1, 1, 1), 32, &mut none) }.unwrap_err();
        assert!(err.to_string().contains("no kernel named no_such_kernel"), "{err}");
        // A wrong argument list is refused before anything runs: swiglu_forward
        // takes an int64_t n, not an int.
        let (x, mut y) = (vec![bf16::ZERO; 4], vec![bf16::ZERO; 4]);
        let mut a = emulator::Args::new();
        a.push(x.as_ptr()).push(x.as_ptr()).push(y.as_mut_ptr()).push(4i32);
        // SAFETY: refused by the size check, nothing runs.
        let err = unsafe { emulator::launch("swiglu_forward", (1, 1, 1), 32, &mut a) }.unwrap_err().to_string();
        assert!(err.contains("argument 3 has 4 bytes, the kernel takes 8"), "{err}");
        let mut a = emulator::Args::new();
        a.push(x.as_ptr());
        // SAFETY: refused by the count check.
        let err = unsafe { emulator::launch("swiglu_forward", (1, 1, 1), 32, &mut a) }.unwrap_err().to_string();
        assert!(err.contains("takes 4 arguments, 1 given"), "{err}");
        // A block bigger than the kernel's __launch_bounds__ (lora_project_r16:
        // LORA_WARPS * 32 = 256) fails as it would on a GPU, before anything runs.
        let null = std::ptr::null::<bf16>();
        let mut a = emulator::Args::new();
        a.push(null).push(null).push(null.cast_mut()).push(0i32).push(0i32).push(0i32).push(0i32);
        // SAFETY: refused by the block-size check, nothing runs.
        let err = unsafe { emulator::launch("lora_project_r16", (1, 1, 1), 512, &mut a) }.unwrap_err().to_string();
        assert!(err.contains("512 threads per block, but a GPU launches it with at most 256"), "{err}");
    }

    /// ACTIAL_EMULATOR_SCHEDULE changes the order threads and blocks take
    /// their turns, so a race that ascending order hides shows in another
    /// (CI runs the emulated tests under `reverse` too). A kernel with a
    /// missing barrier (thread 0 publishes, all read) passes in forward order
    /// and reads stale values in the others.
    #[test]
    fn emulator_schedules_expose_a_missing_barrier_and_block_order() {
        let (blocks, threads) = (8u32, 64u32);
        let per_block = |v: &[f32], b: usize| v[b * threads as usize..(b + 1) * threads as usize].to_vec();

        let (v, ticket) = emulator::planted_race("forward", blocks, threads).unwrap();
        assert_eq!(ticket, (0..blocks as i32).collect::<Vec<_>>());
        for b in 0..blocks as usize {
            assert!(
                per_block(&v, b).iter().all(|&x| x == b as f32 + 1.0),
                "forward, block {b}: {:?}",
                per_block(&v, b)
            );
        }

        // Reverse: blocks run last to first and thread 0 runs last, so threads
        // 1.. read what the previously run block (b + 1) published, or the
        // launch's initial 0 in the first block to run.
        let (v, ticket) = emulator::planted_race("reverse", blocks, threads).unwrap();
        assert_eq!(ticket, (0..blocks as i32).rev().collect::<Vec<_>>());
        for b in 0..blocks as usize {
            let stale = if b + 1 == blocks as usize { 0.0 } else { b as f32 + 2.0 };
            let got = per_block(&v, b);
            assert_eq!(got[0], b as f32 + 1.0, "reverse, block {b}, thread 0");
            assert!(got[1..].iter().all(|&x| x == stale), "reverse, block {b}: {got:?}");
        }

        // Shuffle: some other permutation of blocks, and stale reads.
        let (v, ticket) = emulator::planted_race("shuffle:5", blocks, threads).unwrap();
        let mut sorted = ticket.clone();
        sorted.sort();
        assert_eq!(sorted, (0..blocks as i32).collect::<Vec<_>>(), "tickets {ticket:?}");
        assert_ne!(ticket, sorted, "shuffle ran the blocks in ascending order");
        let stale = (0..blocks as usize).flat_map(|b| per_block(&v, b).into_iter().map(move |x| x != b as f32 + 1.0));
        assert!(stale.filter(|&s| s).count() > threads as usize, "shuffle hid the missing barrier: {v:?}");

        let err = emulator::planted_race("backwards", blocks, threads).unwrap_err().to_string();
        assert!(err.contains("not forward, reverse, shuffle or shuffle:SEED"), "{err}");
    }

    /// The fused cross-entropy (loss, lse, dlogits in one pass per row) with an
    /// ignored row and a vocabulary that is no multiple of the block, written
    /// to a separate buffer and over its own input.
    #[test]
    fn cross_entropy_matches_the_cpu_in_place_or_not() {
        let (v, labels) = (1031usize, vec![3i32, -100, 1030, 0, 517]);
        let rows = labels.len();
        let logits = to_bf16(&Philox::new(70, 0).normal_vec(rows * v, 3.0));
        let lf = to_f32(&logits);
        let (lse_ref, loss_ref) = cpu::loss::cross_entropy_forward(&lf, &labels, v);
        let d_ref = cpu::loss::cross_entropy_backward(&lf, &labels, &lse_ref, v, 0.25);
        for in_place in [false, true] {
            let (loss, lse, d) = emulator::cross_entropy(&logits, &labels, v, 0.25, in_place).unwrap();
            assert_close(&format!("ce loss, in place {in_place}"), &loss, &loss_ref, 1e-4, 1e-4);
            assert_close(&format!("ce lse, in place {in_place}"), &lse, &lse_ref, 1e-4, 1e-4);
            assert_close(&format!("ce dlogits, in place {in_place}"), &to_f32(&d), &d_ref, 1e-4, 1e-2);
        }
    }

    /// Selected-token log-probs at a temperature scale, and their backward
    /// written over the logits.
    #[test]
    fn token_logprobs_match_the_cpu() {
        let (v, ids) = (700usize, vec![5i32, 699, 0]);
        let rows = ids.len();
        let logits = to_bf16(&Philox::new(71, 0).normal_vec(rows * v, 2.0));
        let lf = to_f32(&logits);
        let dlogp = vec![1.0f32, -0.5, 2.0];
        let (logp_ref, lse_ref) = cpu::loss::token_logprobs_forward(&lf, &ids, v, 0.8);
        let d_ref = cpu::loss::token_logprobs_backward(&lf, &ids, &lse_ref, &dlogp, v, 0.8);
        let (logp, lse, d) = emulator::token_logprobs(&logits, &ids, v, 0.8, &dlogp).unwrap();
        assert_close("logp", &logp, &logp_ref, 1e-4, 1e-4);
        assert_close("lse", &lse, &lse_ref, 1e-4, 1e-4);
        assert_close("dlogits", &to_f32(&d), &d_ref, 1e-4, 1e-2);
    }

    /// Multi-tensor AdamW with the clip coefficient computed and read on the
    /// device, over tensors of 1, CHUNK + 1 and 300 elements (a block boundary
    /// inside a tensor), against the CPU twin with torch's clipping.
    #[test]
    fn clipped_multi_tensor_adamw_matches_the_cpu() {
        let sizes = [1usize, 4097, 300];
        let h = actial::cpu::optim::AdamW { lr: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1 };
        let mut tensors: Vec<emulator::AdamWTensor> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| emulator::AdamWTensor {
                param: randn(n, 200 + i as u64),
                grad: Philox::new(300 + i as u64, 0).normal_vec(n, 3.0),
                exp_avg: Philox::new(400 + i as u64, 0).normal_vec(n, 0.1),
                exp_avg_sq: randn(n, 500 + i as u64).iter().map(|x| x * x).collect(),
            })
            .collect();
        let mut want: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> =
            tensors.iter().map(|t| (t.param.clone(), t.exp_avg.clone(), t.exp_avg_sq.clone())).collect();
        let norm_ref = tensors.iter().map(|t| cpu::optim::sum_squares(&t.grad)).sum::<f64>().sqrt();
        let coef = cpu::optim::clip_coef(norm_ref, 1.0);
        assert!(coef < 0.1, "the gradients must actually be clipped (coefficient {coef})");
        for (t, (p, m, v)) in tensors.iter().zip(&mut want) {
            cpu::optim::adamw_step(p, &t.grad, m, v, &h, 3, coef);
        }
        let (norm, finite) = emulator::adamw_step(&mut tensors, &h, 3, 1.0).unwrap();
        assert!((norm as f64 - norm_ref).abs() < 1e-3 * norm_ref, "norm {norm} vs {norm_ref}");
        assert!(finite, "a finite update flagged as non-finite");
        for (i, (t, (p, m, v))) in tensors.iter().zip(&want).enumerate() {
            assert_close(&format!("tensor {i} param"), &t.param, p, 1e-6, 1e-5);
            assert_close(&format!("tensor {i} exp_avg"), &t.exp_avg, m, 1e-6, 1e-5);
            assert_close(&format!("tensor {i} exp_avg_sq"), &t.exp_avg_sq, v, 1e-6, 1e-5);
        }
        // One infinite weight in the middle of the second tensor's second
        // block: the kernel flags it, as the CPU twin does.
        tensors[1].param[4000] = f32::INFINITY;
        let (p, m, v) = &mut want[1];
        p[4000] = f32::INFINITY;
        assert!(!cpu::optim::adamw_step(p, &tensors[1].grad, m, v, &h, 4, 1.0));
        let (_, finite) = emulator::adamw_step(&mut tensors, &h, 4, 0.0).unwrap();
        assert!(!finite, "an infinite weight went unflagged");
    }

    /// RMSNorm forward (plain and fused with the residual add) and backward
    /// with the deterministic dw (partial rows per block, then a column sum).
    #[test]
    fn rms_norm_forward_fused_add_and_backward_match_the_cpu() {
        for (rows, dim) in [(1usize, 128usize), (37, 80), (300, 72)] {
            let x = to_bf16(&randn(rows * dim, 1));
            let res = to_bf16(&randn(rows * dim, 2));
            let w = to_bf16(&Philox::new(3, 0).normal_vec(dim, 0.5));
            let dy = to_bf16(&randn(rows * dim, 4));
            let (xf, wf, dyf) = (to_f32(&x), to_f32(&w), to_f32(&dy));
            let (y_ref, rstd_ref) = cpu::norm::rms_norm_forward(&xf, &wf, 1e-6);
            let (_, y, rstd) = emulator::rms_norm_forward(&x, None, &w, rows, dim, 1e-6).unwrap();
            assert_close("rms_norm y", &to_f32(&y), &y_ref, 1e-2, 1e-2);
            assert_close("rms_norm rstd", &rstd, &rstd_ref, 1e-5, 1e-4);
            // Fused: h is the bf16-rounded sum, y normalises exactly that h.
            let h_ref = to_bf16(&xf.iter().zip(to_f32(&res)).map(|(a, b)| a + b).collect::<Vec<_>>());
            let (h, y, _) = emulator::rms_norm_forward(&x, Some(&res), &w, rows, dim, 1e-6).unwrap();
            assert_eq!(to_f32(&h), to_f32(&h_ref), "h is the bf16-rounded sum");
            let (y_ref, _) = cpu::norm::rms_norm_forward(&to_f32(&h_ref), &wf, 1e-6);
            assert_close("add+rms_norm y", &to_f32(&y), &y_ref, 1e-2, 1e-2);
            // Backward, accumulating into a dw that already holds a value.
            let mut dw_ref = vec![0.25f32; dim];
            let dx_ref = cpu::norm::rms_norm_backward(&xf, &wf, &rstd_ref, &dyf, Some(&mut dw_ref));
            let mut dw = vec![0.25f32; dim];
            let dx = emulator::rms_norm_backward(&x, &w, &rstd_ref, &dy, rows, dim, &mut dw).unwrap();
            assert_close("rms_norm dx", &to_f32(&dx), &dx_ref, 1e-2, 1e-2);
            assert_close("rms_norm dw", &dw, &dw_ref, 1e-3, 1e-3);
        }
    }

    #[test]
    fn rope_swiglu_gelu_and_scatter_add_match_the_cpu() {
        for (t, h, d) in [(1usize, 1usize, 2usize), (17, 3, 80)] {
            let x = to_bf16(&randn(t * h * d, 5));
            let cos: Vec<f32> = (0..t * d).map(|i| (i as f32 * 0.37).cos()).collect();
            let sin: Vec<f32> = (0..t * d).map(|i| (i as f32 * 0.53).sin()).collect();
            let xf = to_f32(&x);
            let y = emulator::rope(&x, &cos, &sin, t, h, d, false).unwrap();
            assert_close("rope", &to_f32(&y), &cpu::rope::rope_forward(&xf, &cos, &sin, h, d), 1e-2, 1e-2);
            let dx = emulator::rope(&x, &cos, &sin, t, h, d, true).unwrap();
            assert_close("rope backward", &to_f32(&dx), &cpu::rope::rope_backward(&xf, &cos, &sin, h, d), 1e-2, 1e-2);
        }
        for n in [1usize, 1000, 4099] {
            let g = to_bf16(&Philox::new(6, 0).normal_vec(n, 2.0));
            let u = to_bf16(&randn(n, 7));
            let dy = to_bf16(&randn(n, 8));
            let (gf, uf, dyf) = (to_f32(&g), to_f32(&u), to_f32(&dy));
            let (y, dg, du) = emulator::swiglu(&g, &u, &dy).unwrap();
            let (dg_ref, du_ref) = cpu::activation::swiglu_backward(&gf, &uf, &dyf);
            assert_close("swiglu", &to_f32(&y), &cpu::activation::swiglu_forward(&gf, &uf), 1e-2, 1e-2);
            assert_close("swiglu d_gate", &to_f32(&dg), &dg_ref, 1e-2, 1e-2);
            assert_close("swiglu d_up", &to_f32(&du), &du_ref, 1e-2, 1e-2);
            let (y, dx) = emulator::gelu(&g, &dy).unwrap();
            assert_close("gelu", &to_f32(&y), &cpu::activation::gelu_forward(&gf), 1e-2, 1e-2);
            assert_close("gelu backward", &to_f32(&dx), &cpu::activation::gelu_backward(&gf, &dyf), 1e-2, 1e-2);
        }
        // Repeated indices add up (atomics), flagged rows are skipped.
        let (rows, dim) = (50usize, 72usize);
        let idx = [3i32, 0, 49, 3, 3, 17];
        let skip = [false, false, true, false, false, false];
        let src = to_bf16(&randn(idx.len() * dim, 9));
        let base = randn(rows * dim, 10);
        let mut dst = base.clone();
        emulator::scatter_add_rows(&mut dst, dim, &idx, &src, Some(&skip)).unwrap();
        let mut want = base;
        let idx_u: Vec<usize> = idx.iter().map(|&i| i as usize).collect();
        cpu::embedding::scatter_add_rows(&mut want, dim, &idx_u, &to_f32(&src), Some(&skip));
        assert_close("scatter_add_rows (repeated index 3)", &dst, &want, 1e-5, 1e-5);
        assert!(emulator::scatter_add_rows(&mut dst, dim, &[50], &src[..dim], None).is_err());
    }

    /// LoRA's projections at both compiled rank bounds, x·Aᵀ and dy·B, with a
    /// row count that leaves the last block's warps partly idle.
    #[test]
    fn lora_projections_match_a_naive_product() {
        for (rows, n, r) in [(1usize, 64usize, 1usize), (13, 96, 16), (9, 40, 17), (5, 33, 64)] {
            let x = to_bf16(&randn(rows * n, 20));
            let m = to_bf16(&Philox::new(21, 0).normal_vec(n * r, 0.1));
            let (xf, mf) = (to_f32(&x), to_f32(&m));
            for m_is_a in [true, false] {
                let want: Vec<f32> = (0..rows * r)
                    .map(|e| {
                        let (row, j) = (e / r, e % r);
                        (0..n).map(|i| xf[row * n + i] * if m_is_a { mf[j * n + i] } else { mf[i * r + j] }).sum()
                    })
                    .collect();
                let got = emulator::lora_project(&x, &m, rows, n, r, m_is_a).unwrap();
                assert_close(&format!("lora project {rows}x{n} rank {r} a {m_is_a}"), &to_f32(&got), &want, 1e-2, 1e-2);
            }
        }
        assert!(emulator::lora_project(&[], &[], 0, 4, 65, true).is_err());
    }

    #[test]
    fn softmax_gathers_overwrites_and_strided_copies_match_the_cpu() {
        let (rows, cols) = (3usize, 1000usize);
        let x = to_bf16(&Philox::new(30, 0).normal_vec(rows * cols, 3.0));
        let xf = to_f32(&x);
        let y = to_f32(&emulator::softmax_rows(&x, rows, cols, 0.5).unwrap());
        for r in 0..rows {
            let row = &xf[r * cols..(r + 1) * cols];
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * 0.5));
            let z: f32 = row.iter().map(|&v| (v * 0.5 - m).exp()).sum();
            let want: Vec<f32> = row.iter().map(|&v| (v * 0.5 - m).exp() / z).collect();
            assert_close(&format!("softmax row {r}"), &y[r * cols..(r + 1) * cols], &want, 1e-3, 1e-2);
        }
        // Gather (repeated indices) and overwrite are copies: bit-exact.
        let (n, dim) = (50usize, 72usize);
        let src = to_bf16(&randn(n * dim, 31));
        let idx = [3i32, 0, 49, 3];
        let got = emulator::gather_rows(&src, dim, &idx).unwrap();
        let want: Vec<bf16> =
            idx.iter().flat_map(|&i| src[i as usize * dim..(i as usize + 1) * dim].to_vec()).collect();
        assert_eq!(got, want, "gather_rows");
        assert!(emulator::gather_rows(&src, dim, &[50]).is_err());
        let mut x2 = src.clone();
        let new_rows = to_bf16(&randn(2 * dim, 32));
        emulator::overwrite_rows(&mut x2, dim, &[1, 40], &new_rows).unwrap();
        let mut want = src.clone();
        want[dim..2 * dim].copy_from_slice(&new_rows[..dim]);
        want[40 * dim..41 * dim].copy_from_slice(&new_rows[dim..]);
        assert_eq!(x2, want, "overwrite_rows");
        // The strided copy behind permute and narrow, against its plan's host loop.
        use actial::cuda::strided;
        let dims = [4usize, 3, 5, 6];
        let t = to_bf16(&randn(dims.iter().product(), 33));
        for plan in [strided::permute(&dims, &[2, 0, 3, 1]), strided::narrow(&dims, 2, 1, 3)] {
            let numel: usize = plan.dims.iter().product();
            let (mut got, mut want) = (vec![bf16::ZERO; numel], vec![bf16::ZERO; numel]);
            emulator::strided_copy(&t, &mut got, &plan).unwrap();
            strided::emulate(&t, &mut want, &plan);
            assert_eq!(got, want, "strided copy {plan:?}");
        }
        let bad = strided::permute(&dims, &[2, 0, 3, 1]);
        assert!(emulator::strided_copy(&t[..10], &mut vec![bf16::ZERO; 360], &bad).is_err(), "a plan past the source");
    }

    /// The remaining elementwise kernels through the generic launcher, with the
    /// geometry `cuda::small_ops` uses (grid-stride over n elements).
    #[test]
    fn casts_adds_axpy_and_row_scaling_match_the_cpu() {
        use actial::cuda::{device::grid_blocks, small_ops::THREADS};
        let n = 1000usize;
        let grid = (grid_blocks(n, THREADS), 1, 1);
        let raw = Philox::new(40, 0).normal_vec(n, 3.0);
        let mut b = vec![bf16::ZERO; n];
        let mut a = emulator::Args::new();
        a.push(raw.as_ptr()).push(b.as_mut_ptr()).push(n as i64);
        // SAFETY: cast_f32_to_bf16(x, y, n) over n elements; the same for each launch below.
        unsafe { emulator::launch("cast_f32_to_bf16", grid, THREADS, &mut a) }.unwrap();
        assert_eq!(b, to_bf16(&raw), "cast to bf16 rounds to nearest even, as half does");
        let mut f = vec![0.0f32; n];
        let mut a = emulator::Args::new();
        a.push(b.as_ptr()).push(f.as_mut_ptr()).push(n as i64);
        unsafe { emulator::launch("cast_bf16_to_f32", grid, THREADS, &mut a) }.unwrap();
        assert_eq!(f, to_f32(&b));
        let c = to_bf16(&randn(n, 41));
        let mut sum = vec![bf16::ZERO; n];
        let mut a = emulator::Args::new();
        a.push(b.as_ptr()).push(c.as_ptr()).push(sum.as_mut_ptr()).push(n as i64);
        unsafe { emulator::launch("add_bf16", grid, THREADS, &mut a) }.unwrap();
        let want: Vec<f32> = to_f32(&b).iter().zip(to_f32(&c)).map(|(x, y)| x + y).collect();
        assert_eq!(sum, to_bf16(&want), "the residual add rounds once");
        let (mut acc, g) = (randn(n, 42), randn(n, 43));
        let mut want = acc.clone();
        cpu::activation::axpy(&mut want, &g, -0.5);
        let mut a = emulator::Args::new();
        a.push(acc.as_mut_ptr()).push(g.as_ptr()).push(-0.5f32).push(n as i64);
        unsafe { emulator::launch("axpy_f32", grid, THREADS, &mut a) }.unwrap();
        assert_close("axpy", &acc, &want, 1e-6, 1e-6);
        // The kernels are built with --use_fast_math, so f32 arithmetic on the
        // GPU flushes denormal operands and results to zero; the emulator runs
        // launches in that mode too, and gives the caller's mode back after.
        let tiny = f32::MIN_POSITIVE / 4.0;
        let (mut acc, g) = (vec![0.0f32, 1.0], vec![tiny, tiny]);
        let mut a = emulator::Args::new();
        a.push(acc.as_mut_ptr()).push(g.as_ptr()).push(1.0f32).push(2i64);
        unsafe { emulator::launch("axpy_f32", (1, 1, 1), THREADS, &mut a) }.unwrap();
        assert_eq!(acc, vec![0.0, 1.0], "a denormal operand is flushed to zero, as on the GPU");
        assert!(std::hint::black_box(tiny) * 1.0 > 0.0, "the host's denormal mode is restored after the launch");
        // Per-row scaling of [4, 250] and the f32 row gather.
        let scale = [0.5f32, -1.0, 2.0, 0.0];
        let mut x = b.clone();
        let mut a = emulator::Args::new();
        a.push(x.as_mut_ptr()).push(scale.as_ptr()).push(4i32).push(250i32);
        unsafe { emulator::launch("scale_rows_bf16", grid, THREADS, &mut a) }.unwrap();
        let want: Vec<f32> = to_f32(&b).iter().enumerate().map(|(e, v)| v * scale[e / 250]).collect();
        assert_eq!(x, to_bf16(&want));
        let idx = [3i32, 0, 3];
        let mut rows = vec![0.0f32; 3 * 250];
        let mut a = emulator::Args::new();
        a.push(raw.as_ptr()).push(idx.as_ptr()).push(rows.as_mut_ptr()).push(3i32).push(250i32);
        unsafe { emulator::launch("gather_rows_f32", (grid_blocks(750, THREADS), 1, 1), THREADS, &mut a) }.unwrap();
        let want: Vec<f32> = idx.iter().flat_map(|&i| raw[i as usize * 250..(i as usize + 1) * 250].to_vec()).collect();
        assert_eq!(rows, want, "gather_rows_f32");
    }

    /// The sort-based sampler of the benches: a different walk order than
    /// `sample_rows`, so not the same tokens, but always inside the CPU's kept
    /// set with the CPU's log-prob.
    #[test]
    fn the_sort_based_baseline_sampler_stays_in_the_kept_set() {
        use actial::cpu::sampling::SamplingParams;
        use actial::cuda::sampling::{SAMPLE_THREADS, kernel_params};
        let (rows, v, n) = (2usize, 300usize, 8usize);
        let logits = to_bf16(&Philox::new(62, 0).normal_vec(rows * v, 2.0));
        let lf = to_f32(&logits);
        let streams: Vec<u64> = vec![5, 500];
        let p = SamplingParams { temperature: 0.9, top_k: 40, top_p: 0.8 };
        let padded = v.next_power_of_two();
        let (mut val, mut idx) = (vec![0.0f32; rows * padded], vec![0i32; rows * padded]);
        let (mut tok, mut logp) = (vec![0u32; rows * n], vec![0.0f32; rows * n]);
        let mut a = emulator::Args::new();
        a.push(logits.as_ptr()).push(streams.as_ptr()).push(kernel_params(&p, v, rows, n, 9));
        a.push(val.as_mut_ptr())
            .push(idx.as_mut_ptr())
            .push(padded as i32)
            .push(tok.as_mut_ptr())
            .push(logp.as_mut_ptr());
        // SAFETY: sample_rows_sorted_baseline's signature with [rows, padded] scratch.
        unsafe { emulator::launch("sample_rows_sorted_baseline", (rows as u32, 1, 1), SAMPLE_THREADS, &mut a) }
            .unwrap();
        for (i, (&t, &lp)) in tok.iter().zip(&logp).enumerate() {
            let row = &lf[(i / n) * v..(i / n + 1) * v];
            let dist = cpu::sampling::RowDistribution::new(row, &p, &[]);
            assert!(dist.tokens.contains(&(t as usize)), "draw {i}: token {t} is outside the CPU's kept set");
            assert!((lp - dist.logprob(row, t as usize)).abs() < 1e-3, "draw {i}: logprob");
        }
    }
}
