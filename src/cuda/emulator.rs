//! Every kernel of `cuda/*.cu`, compiled for the CPU against
//! `cuda/emulator/host_emulator.hpp` (one fiber per CUDA thread, warp-wide
//! shuffles, mma.m16n8k16 and ldmatrix emulated lane by lane) and launched by
//! name, like `cuLaunchKernel`, with host buffers. The attention wrappers here
//! use the same plans as the CUDA ones (`super::attention_plan`); [`launch`]
//! reaches any other kernel.
//!
//! This checks a kernel's index arithmetic, masks, fragment layouts and
//! barriers on any machine: `tests/cuda_emulated.rs` compares it with the CPU
//! twins. It is not a GPU run: the fragment layouts it emulates are written from
//! the PTX ISA, and only `tests/cuda_parity.rs` on a GPU confirms the hardware
//! agrees. Every warp operation is a rendezvous of 32 fibers (a few hundred
//! nanoseconds of context switches): small shapes only. The same kernels also
//! run behind an emulated CUDA driver, [`super::emulated`].

use std::ffi::{CString, c_void};

use half::bf16;

use super::attention_plan::{
    AttentionKernel, DELTA_ROWS_PER_BLOCK, DELTA_THREADS, FORWARD_THREADS, MERGE_ROWS_PER_BLOCK, MERGE_THREADS,
    backward_plan, forward_plan, paged_plan,
};
use super::device::check_len;
use super::device::params::ActialAttentionParams;
use crate::cpu::attention::AttnShape;
use crate::error::Result;
use crate::{arg_err, shape_err};

unsafe extern "C" {
    fn actial_emu_launch(
        name: *const i8,
        gx: u32,
        gy: u32,
        gz: u32,
        threads: u32,
        params: *mut *mut c_void,
        sizes: *const usize,
        count: i32,
        expected: *mut usize,
    ) -> i32;
    fn actial_emu_kernel_count() -> i32;
    fn actial_emu_planted_race(
        schedule: *const i8,
        blocks: u32,
        threads: u32,
        values: *mut f32,
        ticket: *mut i32,
    ) -> i32;
}

/// Kernel arguments, in order, as `cuLaunchKernel` takes them: each slot owns
/// one value and `params` points at each. Push buffers as raw pointers. The
/// sizes travel along, so a launch whose arguments do not match the kernel's C
/// signature fails instead of reading garbage.
#[derive(Default)]
pub struct Args {
    slots: Vec<Box<dyn std::any::Any>>,
    params: Vec<*mut c_void>,
    sizes: Vec<usize>,
}

impl Args {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one argument (a pointer, a scalar or a parameter struct).
    pub fn push<T: 'static>(&mut self, value: T) -> &mut Self {
        let mut b = Box::new(value);
        // The box's heap slot does not move when the box does.
        self.params.push((&mut *b as *mut T).cast());
        self.sizes.push(std::mem::size_of::<T>());
        self.slots.push(b);
        self
    }
}

/// How many kernels the emulator holds (every `extern "C" __global__` of `cuda/*.cu`).
pub fn kernel_count() -> usize {
    // SAFETY: reads a static table.
    unsafe { actial_emu_kernel_count() as usize }
}

/// Runs the emulator's planted-race kernel on `blocks` blocks of `threads`
/// threads under `schedule` (`forward`, `reverse`, `shuffle[:SEED]`, as
/// `ACTIAL_EMULATOR_SCHEDULE` takes it): thread 0 of each block publishes
/// `block + 1` in shared memory, which every thread reads with no barrier in
/// between, and each block takes a ticket from a counter. Returns what each
/// thread read (`[blocks * threads]`) and the order the blocks ran in; the
/// test that the schedules expose races reads both.
pub fn planted_race(schedule: &str, blocks: u32, threads: u32) -> Result<(Vec<f32>, Vec<i32>)> {
    const OP: &str = "emulator::planted_race";
    if blocks == 0 || threads == 0 || !threads.is_multiple_of(32) || threads > 1024 {
        return Err(arg_err!(OP, "{blocks} blocks of {threads} threads"));
    }
    let c = CString::new(schedule).map_err(|_| arg_err!(OP, "schedule {schedule:?} contains a NUL"))?;
    let mut values = vec![f32::NAN; (blocks * threads) as usize];
    let mut ticket = vec![-1i32; blocks as usize];
    // SAFETY: the buffers have the lengths the kernel writes at this geometry.
    let rc = unsafe { actial_emu_planted_race(c.as_ptr(), blocks, threads, values.as_mut_ptr(), ticket.as_mut_ptr()) };
    if rc != 0 {
        return Err(arg_err!(OP, "schedule {schedule:?} is not forward, reverse, shuffle or shuffle:SEED"));
    }
    Ok((values, ticket))
}

/// Runs kernel `name` on a `grid` of `threads`-thread blocks.
///
/// # Safety
/// `args` must match the kernel's C signature in number, order and type, and
/// every pointer must cover what the kernel reads and writes at this geometry,
/// exactly as for a CUDA launch.
pub unsafe fn launch(name: &str, grid: (u32, u32, u32), threads: u32, args: &mut Args) -> Result<()> {
    const OP: &str = "emulator::launch";
    if threads == 0 || !threads.is_multiple_of(32) || threads > 1024 {
        return Err(arg_err!(OP, "{name}: {threads} threads per block (a multiple of 32, at most 1024)"));
    }
    let c = CString::new(name).map_err(|_| arg_err!(OP, "kernel name {name:?} contains a NUL"))?;
    // SAFETY: the caller vouches for the arguments; the call returns after the
    // emulated launch has finished.
    let mut expected = 0usize;
    let (count, sizes) = (args.sizes.len() as i32, args.sizes.as_ptr());
    let rc = unsafe {
        actial_emu_launch(
            c.as_ptr(),
            grid.0,
            grid.1,
            grid.2,
            threads,
            args.params.as_mut_ptr(),
            sizes,
            count,
            &mut expected,
        )
    };
    match rc {
        0 => Ok(()),
        -1 => Err(arg_err!(OP, "no kernel named {name} in cuda/*.cu")),
        -2 => Err(arg_err!(OP, "{name} takes {expected} arguments, {count} given")),
        1 => Err(arg_err!(
            OP,
            "{name}: {threads} threads per block, but a GPU launches it with at most {expected} (its \
             __launch_bounds__ and registers per thread; CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES on hardware)"
        )),
        r => {
            let i = (-3 - r) as usize;
            Err(arg_err!(OP, "{name}: argument {i} has {} bytes, the kernel takes {expected}", args.sizes[i]))
        }
    }
}

fn attn_params(s: &AttnShape) -> ActialAttentionParams {
    ActialAttentionParams {
        q_heads: s.q_heads as i32,
        kv_heads: s.kv_heads as i32,
        causal: s.causal as i32,
        scale: s.scale,
    }
}

/// The name suffix of a compiled head dim.
fn head_dim_suffix(op: &'static str, d: usize) -> Result<&'static str> {
    Ok(match d {
        32 => "d32",
        64 => "d64",
        80 => "d80",
        128 => "d128",
        _ => return Err(arg_err!(op, "head dim {d} has no kernel (32, 64, 80 and 128 are compiled)")),
    })
}

/// `cuda::attention::attention_forward_with` on the CPU: the same plan, the
/// same kernel source. Returns `(out [Tq, Hq, D], lse [Tq, Hq])`.
pub fn attention_forward(
    kernel: AttentionKernel,
    q: &[bf16],
    k: &[bf16],
    v: &[bf16],
    cu_q: &[usize],
    cu_k: &[usize],
    s: &AttnShape,
) -> Result<(Vec<bf16>, Vec<f32>)> {
    const OP: &str = "emulator::attention_forward";
    let plan = forward_plan(OP, kernel, cu_q, cu_k, s)?;
    let d = s.head_dim;
    check_len(OP, "q", q.len(), plan.tq * s.q_heads * d)?;
    check_len(OP, "k", k.len(), plan.tk * s.kv_heads * d)?;
    check_len(OP, "v", v.len(), plan.tk * s.kv_heads * d)?;
    let mut out = vec![bf16::ZERO; plan.tq * s.q_heads * d];
    let mut lse = vec![0.0f32; plan.tq * s.q_heads];
    if plan.tile_seg.is_empty() {
        return Ok((out, lse));
    }
    let mma = if kernel == AttentionKernel::TensorCore { "mma_" } else { "" };
    let name = format!("attention_forward_{mma}{}", head_dim_suffix(OP, d)?);
    let mut a = Args::new();
    a.push(q.as_ptr()).push(k.as_ptr()).push(v.as_ptr()).push(plan.cu_q.as_ptr()).push(plan.cu_k.as_ptr());
    a.push(plan.tile_seg.as_ptr()).push(plan.tile_row.as_ptr()).push(attn_params(s));
    a.push(out.as_mut_ptr()).push(lse.as_mut_ptr());
    // SAFETY: the arguments follow FWD_ARGS; lengths checked above and by the plan.
    unsafe { launch(&name, (plan.tile_seg.len() as u32, s.q_heads as u32, 1), FORWARD_THREADS, &mut a)? };
    Ok((out, lse))
}

/// `cuda::attention::attention_backward_with` on the CPU (self-attention,
/// `cpu::attention::attention_backward`'s contract). Returns `(dq, dk, dv)`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    kernel: AttentionKernel,
    q: &[bf16],
    k: &[bf16],
    v: &[bf16],
    out: &[bf16],
    lse: &[f32],
    dout: &[bf16],
    cu: &[usize],
    s: &AttnShape,
) -> Result<(Vec<bf16>, Vec<bf16>, Vec<bf16>)> {
    const OP: &str = "emulator::attention_backward";
    let plan = backward_plan(OP, kernel, cu, s)?;
    let (t, d) = (plan.t, s.head_dim);
    for (what, len, heads) in [
        ("q", q.len(), s.q_heads),
        ("k", k.len(), s.kv_heads),
        ("v", v.len(), s.kv_heads),
        ("out", out.len(), s.q_heads),
        ("dout", dout.len(), s.q_heads),
    ] {
        check_len(OP, what, len, t * heads * d)?;
    }
    check_len(OP, "lse", lse.len(), t * s.q_heads)?;
    let mut dq = vec![bf16::ZERO; t * s.q_heads * d];
    let (mut dk, mut dv) = (vec![bf16::ZERO; t * s.kv_heads * d], vec![bf16::ZERO; t * s.kv_heads * d]);
    if t == 0 {
        return Ok((dq, dk, dv));
    }
    let dsuf = head_dim_suffix(OP, d)?;
    let mma = if kernel == AttentionKernel::TensorCore { "mma_" } else { "" };
    let rows = t * s.q_heads;
    let mut delta = vec![0.0f32; rows];
    let mut a = Args::new();
    a.push(out.as_ptr()).push(dout.as_ptr()).push(delta.as_mut_ptr()).push(rows as i32).push(d as i32);
    let blocks = rows.div_ceil(DELTA_ROWS_PER_BLOCK) as u32;
    // SAFETY: attention_backward_delta(out, dout, delta, rows, head_dim), lengths checked above.
    unsafe { launch("attention_backward_delta", (blocks, 1, 1), DELTA_THREADS, &mut a)? };
    let common = |a: &mut Args, seg: &Vec<i32>, row: &Vec<i32>| {
        a.push(q.as_ptr()).push(k.as_ptr()).push(v.as_ptr()).push(dout.as_ptr()).push(lse.as_ptr());
        a.push(delta.as_ptr()).push(plan.cu.as_ptr()).push(seg.as_ptr()).push(row.as_ptr()).push(attn_params(s));
    };
    let mut a = Args::new();
    common(&mut a, &plan.dq_seg, &plan.dq_row);
    a.push(dq.as_mut_ptr());
    let grid = (plan.dq_seg.len() as u32, s.q_heads as u32, 1);
    // SAFETY: BWD_ARGS then dq, as the CUDA wrapper launches it.
    unsafe { launch(&format!("attention_backward_dq_{mma}{dsuf}"), grid, plan.dq_threads, &mut a)? };
    let mut a = Args::new();
    common(&mut a, &plan.dkv_seg, &plan.dkv_row);
    a.push(dk.as_mut_ptr()).push(dv.as_mut_ptr());
    let grid = (plan.dkv_seg.len() as u32, s.kv_heads as u32, 1);
    // SAFETY: BWD_ARGS then dk, dv.
    unsafe { launch(&format!("attention_backward_dkv_{mma}{dsuf}"), grid, plan.dkv_threads, &mut a)? };
    Ok((dq, dk, dv))
}

/// A paged KV cache of one layer as the emulated decode kernel reads it (as
/// `cuda::attention::PagedKv`).
pub struct PagedKv<'a> {
    pub k_pool: &'a [bf16],
    pub v_pool: &'a [bf16],
    pub block_size: usize,
    pub prefix_table: &'a [i32],
    pub prefix_table_width: usize,
    pub suffix_table: &'a [i32],
    pub suffix_table_width: usize,
}

/// `cuda::attention::attention_decode_paged` on the CPU, with every slot,
/// length and table entry checked first (the device kernel trusts them).
/// `rows` is the packed step ([`super::attention::DecodeRowsLayout`]).
pub fn attention_decode_paged(
    q: &[bf16],
    kv: &PagedKv<'_>,
    rows: &[i32],
    cu_group: &[usize],
    s: &AttnShape,
) -> Result<(Vec<bf16>, Vec<f32>)> {
    const OP: &str = "emulator::attention_decode_paged";
    let plan = paged_plan(OP, cu_group, rows.len(), s)?;
    let (l, d, bs) = (plan.layout, s.head_dim, kv.block_size);
    let row = s.kv_heads * d;
    check_len(OP, "q", q.len(), l.samples * s.q_heads * d)?;
    if bs == 0 || kv.k_pool.len() != kv.v_pool.len() || !kv.k_pool.len().is_multiple_of(row * bs) {
        return Err(arg_err!(
            OP,
            "pools of {} and {} elements in blocks of {bs} rows of {row}",
            kv.k_pool.len(),
            kv.v_pool.len()
        ));
    }
    let blocks = (kv.k_pool.len() / (row * bs)) as i32;
    let check = |table: &[i32], width: usize, slots: &[i32], lens: &[i32], what: &str| -> Result<()> {
        for (&slot, &len) in slots.iter().zip(lens) {
            let n_rows = table.len() / width.max(1);
            if slot < 0 || slot as usize >= n_rows || len < 0 || len as usize > width * bs {
                return Err(arg_err!(OP, "{what}: slot {slot} of {n_rows}, {len} keys"));
            }
            let t = &table[slot as usize * width..][..(len as usize).div_ceil(bs)];
            if let Some(&b) = t.iter().find(|&&b| b < 0 || b >= blocks) {
                return Err(arg_err!(OP, "{what}: block {b} of {blocks}"));
            }
        }
        Ok(())
    };
    check(kv.prefix_table, kv.prefix_table_width, &rows[l.group_slot()], &rows[l.prefix_len()], "prefix")?;
    check(kv.suffix_table, kv.suffix_table_width, &rows[l.sample_slot()], &rows[l.suffix_len()], "suffix")?;
    let mut out = vec![bf16::ZERO; l.samples * s.q_heads * d];
    let mut lse = vec![0.0f32; l.samples * s.q_heads];
    let pkv = super::device::params::ActialPagedKv {
        block_size: bs as i32,
        prefix_table_width: kv.prefix_table_width as i32,
        suffix_table_width: kv.suffix_table_width as i32,
    };
    let mut a = Args::new();
    a.push(q.as_ptr()).push(kv.k_pool.as_ptr()).push(kv.v_pool.as_ptr());
    for r in [l.cu_group(), l.group_slot(), l.prefix_len(), l.sample_slot(), l.suffix_len()] {
        a.push(rows[r].as_ptr());
    }
    a.push(kv.prefix_table.as_ptr()).push(kv.suffix_table.as_ptr()).push(pkv).push(attn_params(s));
    a.push(out.as_mut_ptr()).push(lse.as_mut_ptr());
    let name = format!("attention_decode_paged_{}", head_dim_suffix(OP, d)?);
    // SAFETY: DEC_ARGS; every index the kernel follows was checked above.
    unsafe { launch(&name, (l.groups as u32, s.q_heads as u32, 1), plan.threads, &mut a)? };
    Ok((out, lse))
}

/// `cuda::attention::attention_merge` on the CPU, launched with the same
/// geometry (one warp per row, 8 rows per block).
pub fn attention_merge(
    a: (&[bf16], &[f32]),
    b: (&[bf16], &[f32]),
    rows: usize,
    head_dim: usize,
) -> Result<(Vec<bf16>, Vec<f32>)> {
    const OP: &str = "emulator::attention_merge";
    check_len(OP, "a.out", a.0.len(), rows * head_dim)?;
    check_len(OP, "b.out", b.0.len(), rows * head_dim)?;
    check_len(OP, "a.lse", a.1.len(), rows)?;
    check_len(OP, "b.lse", b.1.len(), rows)?;
    let mut out = vec![bf16::ZERO; rows * head_dim];
    let mut lse = vec![0.0f32; rows];
    if rows == 0 {
        return Ok((out, lse));
    }
    let mut args = Args::new();
    args.push(a.0.as_ptr()).push(a.1.as_ptr()).push(b.0.as_ptr()).push(b.1.as_ptr());
    args.push(out.as_mut_ptr()).push(lse.as_mut_ptr()).push(rows as i32).push(head_dim as i32);
    let blocks = rows.div_ceil(MERGE_ROWS_PER_BLOCK) as u32;
    // SAFETY: attention_merge's signature; lengths checked above.
    unsafe { launch("attention_merge", (blocks, 1, 1), MERGE_THREADS, &mut args)? };
    Ok((out, lse))
}

/// `cuda::sampling::sample_rows` on the CPU: one block of
/// [`super::sampling::SAMPLE_THREADS`] per row, the same parameter struct and
/// banned list. Returns `(tokens, logprobs)`, both `[rows·n]`.
pub fn sample_rows(
    logits: &[bf16],
    v: usize,
    n: usize,
    p: &crate::cpu::sampling::SamplingParams,
    seed: u64,
    streams: &[u64],
    banned: &[u32],
) -> Result<(Vec<u32>, Vec<f32>)> {
    const OP: &str = "emulator::sample_rows";
    let rows = streams.len();
    check_len(OP, "logits", logits.len(), rows * v)?;
    if v == 0 || n == 0 {
        return Err(arg_err!(OP, "vocabulary {v} and samples per row {n} must be positive"));
    }
    super::sampling::check_banned(OP, banned, v)?;
    let ids: Vec<i32> = banned.iter().map(|&b| b as i32).collect();
    let mut params = super::sampling::kernel_params(p, v, rows, n, seed);
    params.n_banned = ids.len() as i32;
    let (mut tokens, mut logp) = (vec![0u32; rows * n], vec![0.0f32; rows * n]);
    let mut a = Args::new();
    a.push(logits.as_ptr()).push(streams.as_ptr()).push(ids.as_ptr()).push(params);
    a.push(tokens.as_mut_ptr()).push(logp.as_mut_ptr());
    // SAFETY: sample_rows(logits, streams, banned, params, tokens, logp), lengths checked above.
    unsafe { launch("sample_rows", (rows.max(1) as u32, 1, 1), super::sampling::SAMPLE_THREADS, &mut a)? };
    Ok((tokens, logp))
}

/// `cross_entropy_forward_backward` on the CPU, one block of
/// [`super::loss::THREADS`] per row: `(loss, lse, dlogits)` of `logits: [rows, v]`.
/// With `in_place` the kernel writes dlogits over its own input, as the chunked
/// linear + cross-entropy does.
pub fn cross_entropy(
    logits: &[bf16],
    labels: &[i32],
    v: usize,
    grad_scale: f32,
    in_place: bool,
) -> Result<(Vec<f32>, Vec<f32>, Vec<bf16>)> {
    const OP: &str = "emulator::cross_entropy";
    let rows = labels.len();
    check_len(OP, "logits", logits.len(), rows * v)?;
    let (mut loss, mut lse) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    let mut buf = logits.to_vec();
    let mut separate = vec![bf16::ZERO; if in_place { 0 } else { rows * v }];
    let input = buf.as_mut_ptr();
    let dlogits = if in_place { input } else { separate.as_mut_ptr() };
    let mut a = Args::new();
    a.push(input.cast_const()).push(labels.as_ptr()).push(loss.as_mut_ptr()).push(lse.as_mut_ptr());
    a.push(dlogits).push(rows as i32).push(v as i32).push(grad_scale);
    // SAFETY: cross_entropy_forward_backward's signature; every buffer is [rows] or [rows, v].
    unsafe { launch("cross_entropy_forward_backward", (rows.max(1) as u32, 1, 1), super::loss::THREADS, &mut a)? };
    Ok((loss, lse, if in_place { buf } else { separate }))
}

/// `token_logprobs_forward` then `token_logprobs_backward` on the CPU (the
/// backward in place over a copy of the logits, as the chunked linear path
/// runs it): `(logp, lse, dlogits)` for scale `s` and upstream `dlogp`.
pub fn token_logprobs(
    logits: &[bf16],
    ids: &[i32],
    v: usize,
    s: f32,
    dlogp: &[f32],
) -> Result<(Vec<f32>, Vec<f32>, Vec<bf16>)> {
    const OP: &str = "emulator::token_logprobs";
    let rows = ids.len();
    check_len(OP, "logits", logits.len(), rows * v)?;
    check_len(OP, "dlogp", dlogp.len(), rows)?;
    let (mut logp, mut lse) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    let grid = (rows.max(1) as u32, 1, 1);
    let mut a = Args::new();
    a.push(logits.as_ptr()).push(ids.as_ptr()).push(logp.as_mut_ptr()).push(lse.as_mut_ptr());
    a.push(rows as i32).push(v as i32).push(s);
    // SAFETY: token_logprobs_forward's signature; buffers are [rows] or [rows, v].
    unsafe { launch("token_logprobs_forward", grid, super::loss::THREADS, &mut a)? };
    let mut buf = logits.to_vec();
    let p = buf.as_mut_ptr();
    let mut a = Args::new();
    a.push(p.cast_const()).push(ids.as_ptr()).push(lse.as_ptr()).push(dlogp.as_ptr()).push(p);
    a.push(rows as i32).push(v as i32).push(s);
    // SAFETY: token_logprobs_backward's signature, logits and dlogits aliased on purpose.
    unsafe { launch("token_logprobs_backward", grid, super::loss::THREADS, &mut a)? };
    Ok((logp, lse, buf))
}

/// One tensor's optimizer state for [`adamw_step`].
pub struct AdamWTensor {
    pub param: Vec<f32>,
    pub grad: Vec<f32>,
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
}

/// One clipped multi-tensor AdamW step on the CPU, launched as
/// `cuda::optim::AdamWGroup::step` launches it: `sum_squares_multi`,
/// `clip_coefficient` (which leaves `[norm, coefficient]` where AdamW reads it),
/// `adamw_multi_tensor`. Returns the gradient norm and whether every updated
/// weight and moment is finite.
pub fn adamw_step(
    tensors: &mut [AdamWTensor],
    h: &crate::cpu::optim::AdamW,
    step: u64,
    max_norm: f32,
) -> Result<(f32, bool)> {
    use super::optim::{CLIP_THREADS, SlotAddrs, THREADS, adamw_params, slot_table};
    let addrs: Vec<SlotAddrs> = tensors
        .iter_mut()
        .map(|t| SlotAddrs {
            param: t.param.as_mut_ptr() as u64,
            grad: t.grad.as_ptr() as u64,
            exp_avg: t.exp_avg.as_mut_ptr() as u64,
            exp_avg_sq: t.exp_avg_sq.as_mut_ptr() as u64,
            numel: t.param.len(),
        })
        .collect();
    let (slots, blocks) = slot_table(&addrs);
    if blocks == 0 {
        return Ok((0.0, true));
    }
    let (mut partials, mut norm, mut nonfinite) = (vec![0.0f32; blocks], [0.0f32; 2], 0i32);
    let n = tensors.len();
    let mut a = Args::new();
    a.push(slots.as_ptr()).push(n as i32).push(partials.as_mut_ptr());
    // SAFETY: sum_squares_multi(slots, num_tensors, partials); the slots point at live host buffers.
    unsafe { launch("sum_squares_multi", (blocks as u32, 1, 1), THREADS, &mut a)? };
    let mut a = Args::new();
    a.push(partials.as_ptr()).push(blocks as i32).push(max_norm).push(norm.as_mut_ptr());
    // SAFETY: clip_coefficient(partials, n, max_norm, out[2]).
    unsafe { launch("clip_coefficient", (1, 1, 1), CLIP_THREADS, &mut a)? };
    let mut a = Args::new();
    a.push(slots.as_ptr()).push(adamw_params(h, step, n, norm[1..].as_ptr(), &mut nonfinite));
    // SAFETY: adamw_multi_tensor(slots, params); grad_scale points at norm[1],
    // nonfinite at a live i32.
    unsafe { launch("adamw_multi_tensor", (blocks as u32, 1, 1), THREADS, &mut a)? };
    Ok((norm[0], nonfinite == 0))
}

// ---- small ops -------------------------------------------------------------------

/// A grid-stride kernel over `n` elements, launched as `cuda::small_ops` does.
fn grid_stride(name: &str, n: usize, args: &mut Args) -> Result<()> {
    use super::small_ops::THREADS;
    // SAFETY: the callers below pass each kernel's signature with buffers of n elements.
    unsafe { launch(name, (super::device::grid_blocks(n, THREADS), 1, 1), THREADS, args) }
}

/// `rms_norm_forward`, or with a residual `add_rms_norm_forward`:
/// `(h, y, rstd)` for `x: [rows, dim]` (`h = x + residual`, or `x`).
pub fn rms_norm_forward(
    x: &[bf16],
    residual: Option<&[bf16]>,
    w: &[bf16],
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(Vec<bf16>, Vec<bf16>, Vec<f32>)> {
    const OP: &str = "emulator::rms_norm_forward";
    check_len(OP, "x", x.len(), rows * dim)?;
    check_len(OP, "w", w.len(), dim)?;
    let (mut h, mut y, mut rstd) = (x.to_vec(), vec![bf16::ZERO; rows * dim], vec![0.0f32; rows]);
    let mut a = Args::new();
    let name = match residual {
        Some(r) => {
            check_len(OP, "residual", r.len(), rows * dim)?;
            a.push(x.as_ptr()).push(r.as_ptr()).push(w.as_ptr()).push(h.as_mut_ptr());
            "add_rms_norm_forward"
        }
        None => {
            a.push(x.as_ptr()).push(w.as_ptr());
            "rms_norm_forward"
        }
    };
    a.push(y.as_mut_ptr()).push(rstd.as_mut_ptr()).push(rows as i32).push(dim as i32).push(eps);
    // SAFETY: the kernel's signature; one block of THREADS per row.
    unsafe { launch(name, (rows.max(1) as u32, 1, 1), super::small_ops::THREADS, &mut a)? };
    Ok((h, y, rstd))
}

/// `rms_norm_backward` with its deterministic dw (per-block partial rows, then
/// `column_sum_accumulate` into `dw`), launched as `cuda::small_ops` does.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_backward(
    x: &[bf16],
    w: &[bf16],
    rstd: &[f32],
    dy: &[bf16],
    rows: usize,
    dim: usize,
    dw: &mut [f32],
) -> Result<Vec<bf16>> {
    use super::small_ops::{RMS_BWD_BLOCKS, THREADS};
    const OP: &str = "emulator::rms_norm_backward";
    check_len(OP, "x", x.len(), rows * dim)?;
    check_len(OP, "dy", dy.len(), rows * dim)?;
    check_len(OP, "rstd", rstd.len(), rows)?;
    check_len(OP, "dw", dw.len(), dim)?;
    let blocks = rows.clamp(1, RMS_BWD_BLOCKS);
    // Poisoned, as uninitialised device memory may be: the kernel must write every partial.
    let (mut dx, mut partial) = (vec![bf16::NAN; rows * dim], vec![f32::NAN; blocks * dim]);
    let mut a = Args::new();
    a.push(x.as_ptr()).push(w.as_ptr()).push(rstd.as_ptr()).push(dy.as_ptr()).push(dx.as_mut_ptr());
    a.push(partial.as_mut_ptr()).push(rows as i32).push(dim as i32);
    // SAFETY: rms_norm_backward's signature; `blocks` partial rows.
    unsafe { launch("rms_norm_backward", (blocks as u32, 1, 1), THREADS, &mut a)? };
    let mut a = Args::new();
    a.push(partial.as_ptr()).push(blocks as i32).push(dim as i32).push(dw.as_mut_ptr());
    grid_stride("column_sum_accumulate", dim, &mut a)?;
    Ok(dx)
}

/// `rope_apply` on `x: [tokens, heads, head_dim]` with f32 tables `[tokens, head_dim]`.
pub fn rope(
    x: &[bf16],
    cos: &[f32],
    sin: &[f32],
    tokens: usize,
    heads: usize,
    head_dim: usize,
    backward: bool,
) -> Result<Vec<bf16>> {
    const OP: &str = "emulator::rope";
    check_len(OP, "x", x.len(), tokens * heads * head_dim)?;
    check_len(OP, "cos", cos.len(), tokens * head_dim)?;
    check_len(OP, "sin", sin.len(), tokens * head_dim)?;
    let mut y = vec![bf16::ZERO; x.len()];
    let mut a = Args::new();
    a.push(x.as_ptr()).push(cos.as_ptr()).push(sin.as_ptr()).push(y.as_mut_ptr());
    a.push(tokens as i32).push(heads as i32).push(head_dim as i32).push(backward as i32);
    grid_stride("rope_apply", tokens * heads * head_dim / 2, &mut a)?;
    Ok(y)
}

/// SwiGLU forward and backward: `(y, d_gate, d_up)`.
pub fn swiglu(gate: &[bf16], up: &[bf16], dy: &[bf16]) -> Result<(Vec<bf16>, Vec<bf16>, Vec<bf16>)> {
    const OP: &str = "emulator::swiglu";
    let n = gate.len();
    check_len(OP, "up", up.len(), n)?;
    check_len(OP, "dy", dy.len(), n)?;
    let (mut y, mut dg, mut du) = (vec![bf16::ZERO; n], vec![bf16::ZERO; n], vec![bf16::ZERO; n]);
    let mut a = Args::new();
    a.push(gate.as_ptr()).push(up.as_ptr()).push(y.as_mut_ptr()).push(n as i64);
    grid_stride("swiglu_forward", n, &mut a)?;
    let mut a = Args::new();
    a.push(gate.as_ptr()).push(up.as_ptr()).push(dy.as_ptr()).push(dg.as_mut_ptr()).push(du.as_mut_ptr());
    a.push(n as i64);
    grid_stride("swiglu_backward", n, &mut a)?;
    Ok((y, dg, du))
}

/// erf GELU forward and backward: `(y, dx)`.
pub fn gelu(x: &[bf16], dy: &[bf16]) -> Result<(Vec<bf16>, Vec<bf16>)> {
    const OP: &str = "emulator::gelu";
    let n = x.len();
    check_len(OP, "dy", dy.len(), n)?;
    let (mut y, mut dx) = (vec![bf16::ZERO; n], vec![bf16::ZERO; n]);
    let mut a = Args::new();
    a.push(x.as_ptr()).push(y.as_mut_ptr()).push(n as i64);
    grid_stride("gelu_forward", n, &mut a)?;
    let mut a = Args::new();
    a.push(x.as_ptr()).push(dy.as_ptr()).push(dx.as_mut_ptr()).push(n as i64);
    grid_stride("gelu_backward", n, &mut a)?;
    Ok((y, dx))
}

/// `scatter_add_rows`: `dst[idx[i]] += src[i]` (f32, atomics), skipping flagged rows.
pub fn scatter_add_rows(dst: &mut [f32], dim: usize, idx: &[i32], src: &[bf16], skip: Option<&[bool]>) -> Result<()> {
    const OP: &str = "emulator::scatter_add_rows";
    check_len(OP, "src", src.len(), idx.len() * dim)?;
    let rows = dst.len() / dim.max(1);
    if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i as usize >= rows) {
        return Err(arg_err!(OP, "index {bad} is outside 0..{rows}"));
    }
    let flags: Option<Vec<u8>> = skip.map(|s| s.iter().map(|&b| b as u8).collect());
    let mut a = Args::new();
    a.push(dst.as_mut_ptr()).push(idx.as_ptr()).push(src.as_ptr());
    a.push(flags.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()));
    a.push(idx.len() as i32).push(dim as i32);
    grid_stride("scatter_add_rows", idx.len() * dim, &mut a)
}

/// LoRA's rank-r projection `x[rows, n] · M` (`M = Aᵀ` from `m: [r, n]` when
/// `m_is_a`, else `M = B` from `m: [n, r]`), launched as `cuda::lora` does.
pub fn lora_project(x: &[bf16], m: &[bf16], rows: usize, n: usize, r: usize, m_is_a: bool) -> Result<Vec<bf16>> {
    use super::lora::{MAX_RANK, PROJECT_ROWS_PER_BLOCK, PROJECT_THREADS, project_kernel};
    const OP: &str = "emulator::lora_project";
    check_len(OP, "x", x.len(), rows * n)?;
    check_len(OP, "factor", m.len(), n * r)?;
    if r == 0 || r > MAX_RANK {
        return Err(arg_err!(OP, "rank {r} must be in 1..={MAX_RANK}"));
    }
    let mut out = vec![bf16::NAN; rows * r];
    let mut a = Args::new();
    a.push(x.as_ptr()).push(m.as_ptr()).push(out.as_mut_ptr());
    a.push(rows as i32).push(n as i32).push(r as i32).push(m_is_a as i32);
    let blocks = rows.div_ceil(PROJECT_ROWS_PER_BLOCK).max(1) as u32;
    // SAFETY: LORA_ARGS; x is [rows, n], m [n·r], out [rows, r].
    unsafe { launch(project_kernel(r), (blocks, 1, 1), PROJECT_THREADS, &mut a)? };
    Ok(out)
}

/// `softmax_rows`: `softmax(scale·x)` per row of `x: [rows, cols]`.
pub fn softmax_rows(x: &[bf16], rows: usize, cols: usize, scale: f32) -> Result<Vec<bf16>> {
    check_len("emulator::softmax_rows", "x", x.len(), rows * cols)?;
    let mut y = vec![bf16::NAN; rows * cols];
    let mut a = Args::new();
    a.push(x.as_ptr()).push(y.as_mut_ptr()).push(rows as i32).push(cols as i32).push(scale);
    // SAFETY: softmax_rows's signature; one block per row.
    unsafe { launch("softmax_rows", (rows.max(1) as u32, 1, 1), super::small_ops::SOFTMAX_THREADS, &mut a)? };
    Ok(y)
}

/// `gather_rows`: `src[idx[i]]` for `src: [_, dim]` (indices range-checked here, as the wrapper does).
pub fn gather_rows(src: &[bf16], dim: usize, idx: &[i32]) -> Result<Vec<bf16>> {
    let rows = src.len() / dim.max(1);
    if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i as usize >= rows) {
        return Err(arg_err!("emulator::gather_rows", "index {bad} is outside 0..{rows}"));
    }
    let mut out = vec![bf16::NAN; idx.len() * dim];
    let mut a = Args::new();
    a.push(src.as_ptr()).push(idx.as_ptr()).push(out.as_mut_ptr()).push(idx.len() as i32).push(dim as i32);
    grid_stride("gather_rows", idx.len() * dim, &mut a)?;
    Ok(out)
}

/// `overwrite_rows`: `x[pos[i]] = rows[i]` in place.
pub fn overwrite_rows(x: &mut [bf16], dim: usize, pos: &[i32], rows: &[bf16]) -> Result<()> {
    check_len("emulator::overwrite_rows", "rows", rows.len(), pos.len() * dim)?;
    let n = x.len() / dim.max(1);
    if let Some(&bad) = pos.iter().find(|&&i| i < 0 || i as usize >= n) {
        return Err(arg_err!("emulator::overwrite_rows", "position {bad} is outside 0..{n}"));
    }
    let mut a = Args::new();
    a.push(x.as_mut_ptr()).push(pos.as_ptr()).push(rows.as_ptr()).push(pos.len() as i32).push(dim as i32);
    grid_stride("overwrite_rows", pos.len() * dim, &mut a)
}

/// `strided_copy_u16` for a bf16 copy plan (permute, narrow, a part of a cat).
pub fn strided_copy(src: &[bf16], dst: &mut [bf16], plan: &super::strided::CopyPlan) -> Result<()> {
    const OP: &str = "emulator::strided_copy";
    let p = super::tensor::copy_params(OP, plan)?;
    let n = p.numel as usize;
    // The last element each side touches must lie inside its buffer.
    let reach = |strides: &[usize], offset: usize| {
        offset + plan.dims.iter().zip(strides).map(|(&d, &s)| d.saturating_sub(1) * s).sum::<usize>()
    };
    if n > 0
        && (reach(&plan.src_strides, plan.src_offset) >= src.len()
            || reach(&plan.dst_strides, plan.dst_offset) >= dst.len())
    {
        return Err(shape_err!(OP, "plan {plan:?} reaches past a buffer ({} and {} elements)", src.len(), dst.len()));
    }
    if n == 0 {
        return Ok(());
    }
    let mut a = Args::new();
    a.push(src[plan.src_offset..].as_ptr().cast::<u16>()).push(dst[plan.dst_offset..].as_mut_ptr().cast::<u16>());
    a.push(p);
    // SAFETY: strided_copy_u16(src, dst, params); the plan stays inside both buffers (checked above).
    unsafe {
        launch(
            "strided_copy_u16",
            (super::device::grid_blocks(n, super::tensor::COPY_THREADS), 1, 1),
            super::tensor::COPY_THREADS,
            &mut a,
        )
    }
}
