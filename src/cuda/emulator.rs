//! The attention kernels of `cuda/attention.cu`, compiled for the CPU against
//! `cuda/emulator/host_emulator.hpp` (one thread per CUDA thread, warp-wide
//! shuffles, mma.m16n8k16 and ldmatrix emulated lane by lane) and launched
//! with the same plans as the CUDA wrappers (`super::attention_plan`).
//!
//! This checks a kernel's index arithmetic, masks, fragment layouts and
//! barriers on any machine: `tests/cuda_emulated.rs` compares it with the CPU
//! twins. It is not a GPU run: the fragment layouts it emulates are written from
//! the PTX ISA, and only `tests/cuda_parity.rs` on a GPU confirms the hardware
//! agrees. Slow (every warp operation is a 32-thread rendezvous): tiny shapes only.

use half::bf16;

use super::attention_plan::{
    AttentionKernel, DELTA_ROWS_PER_BLOCK, DELTA_THREADS, FORWARD_THREADS, MERGE_ROWS_PER_BLOCK, MERGE_THREADS,
    backward_plan, cascade_plan, forward_plan,
};
use crate::cpu::attention::AttnShape;
use crate::error::Result;
use crate::{arg_err, shape_err};

unsafe extern "C" {
    fn actial_emu_attention_forward(
        tensor_cores: i32,
        head_dim: i32,
        q: *const u16,
        k: *const u16,
        v: *const u16,
        cu_q: *const i32,
        cu_k: *const i32,
        tile_seg: *const i32,
        tile_row: *const i32,
        tiles: i32,
        threads: i32,
        q_heads: i32,
        kv_heads: i32,
        causal: i32,
        scale: f32,
        out: *mut u16,
        lse: *mut f32,
    ) -> i32;
    fn actial_emu_attention_merge(
        out_a: *const u16,
        lse_a: *const f32,
        out_b: *const u16,
        lse_b: *const f32,
        out: *mut u16,
        lse: *mut f32,
        rows: i32,
        head_dim: i32,
        blocks: i32,
        threads: i32,
    ) -> i32;
    fn actial_emu_attention_backward(
        tensor_cores: i32,
        head_dim: i32,
        q: *const u16,
        k: *const u16,
        v: *const u16,
        out: *const u16,
        dout: *const u16,
        lse: *const f32,
        cu: *const i32,
        dq_seg: *const i32,
        dq_row: *const i32,
        dq_tiles: i32,
        dkv_seg: *const i32,
        dkv_row: *const i32,
        dkv_tiles: i32,
        tokens: i32,
        q_heads: i32,
        kv_heads: i32,
        causal: i32,
        scale: f32,
        delta_rows_per_block: i32,
        delta_threads: i32,
        dq_threads: i32,
        dkv_threads: i32,
        dq: *mut u16,
        dk: *mut u16,
        dv: *mut u16,
    ) -> i32;
    fn actial_emu_attention_decode_cascade(
        head_dim: i32,
        q: *const u16,
        prefix_k: *const u16,
        prefix_v: *const u16,
        cu_prefix: *const i32,
        suffix_k: *const u16,
        suffix_v: *const u16,
        cu_suffix: *const i32,
        cu_group: *const i32,
        groups: i32,
        threads: i32,
        q_heads: i32,
        kv_heads: i32,
        scale: f32,
        out: *mut u16,
        lse: *mut f32,
    ) -> i32;
}

fn no_kernel(op: &'static str, d: usize) -> crate::error::Error {
    arg_err!(op, "head dim {d} has no kernel (32, 64, 80 and 128 are compiled)")
}

fn check_len(op: &'static str, what: &str, len: usize, want: usize) -> Result<()> {
    if len != want {
        return Err(shape_err!(op, "{what} has {len} elements, expected {want}"));
    }
    Ok(())
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
    // SAFETY: every buffer has the length the kernel reads or writes (checked
    // above and by the plan); bf16 and u16 share a layout; the call returns
    // after the emulated launch has finished.
    let rc = unsafe {
        actial_emu_attention_forward(
            (kernel == AttentionKernel::TensorCore) as i32,
            d as i32,
            q.as_ptr().cast(),
            k.as_ptr().cast(),
            v.as_ptr().cast(),
            plan.cu_q.as_ptr(),
            plan.cu_k.as_ptr(),
            plan.tile_seg.as_ptr(),
            plan.tile_row.as_ptr(),
            plan.tile_seg.len() as i32,
            FORWARD_THREADS as i32,
            s.q_heads as i32,
            s.kv_heads as i32,
            s.causal as i32,
            s.scale,
            out.as_mut_ptr().cast(),
            lse.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(no_kernel(OP, d));
    }
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
    // SAFETY: lengths checked above; the tile tables come from the plan.
    let rc = unsafe {
        actial_emu_attention_backward(
            (kernel == AttentionKernel::TensorCore) as i32,
            d as i32,
            q.as_ptr().cast(),
            k.as_ptr().cast(),
            v.as_ptr().cast(),
            out.as_ptr().cast(),
            dout.as_ptr().cast(),
            lse.as_ptr(),
            plan.cu.as_ptr(),
            plan.dq_seg.as_ptr(),
            plan.dq_row.as_ptr(),
            plan.dq_seg.len() as i32,
            plan.dkv_seg.as_ptr(),
            plan.dkv_row.as_ptr(),
            plan.dkv_seg.len() as i32,
            t as i32,
            s.q_heads as i32,
            s.kv_heads as i32,
            s.causal as i32,
            s.scale,
            DELTA_ROWS_PER_BLOCK as i32,
            DELTA_THREADS as i32,
            plan.dq_threads as i32,
            plan.dkv_threads as i32,
            dq.as_mut_ptr().cast(),
            dk.as_mut_ptr().cast(),
            dv.as_mut_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(no_kernel(OP, d));
    }
    Ok((dq, dk, dv))
}

/// Keys and values of one emulated cascade-decode step (as `cuda::attention::CascadeKv`).
pub struct CascadeKv<'a> {
    pub prefix_k: &'a [bf16],
    pub prefix_v: &'a [bf16],
    pub cu_prefix: &'a [usize],
    pub suffix_k: &'a [bf16],
    pub suffix_v: &'a [bf16],
    pub cu_suffix: &'a [usize],
    pub cu_group: &'a [usize],
}

/// `cuda::attention::attention_decode_cascade` on the CPU. Returns `(out, lse)`.
pub fn attention_decode_cascade(q: &[bf16], kv: &CascadeKv<'_>, s: &AttnShape) -> Result<(Vec<bf16>, Vec<f32>)> {
    const OP: &str = "emulator::attention_decode_cascade";
    let plan = cascade_plan(OP, kv.cu_prefix, kv.cu_suffix, kv.cu_group, s)?;
    let (d, row) = (s.head_dim, s.kv_heads * s.head_dim);
    check_len(OP, "q", q.len(), plan.samples * s.q_heads * d)?;
    check_len(OP, "prefix_k", kv.prefix_k.len(), plan.tp * row)?;
    check_len(OP, "prefix_v", kv.prefix_v.len(), plan.tp * row)?;
    check_len(OP, "suffix_k", kv.suffix_k.len(), plan.ts * row)?;
    check_len(OP, "suffix_v", kv.suffix_v.len(), plan.ts * row)?;
    let mut out = vec![bf16::ZERO; plan.samples * s.q_heads * d];
    let mut lse = vec![0.0f32; plan.samples * s.q_heads];
    // SAFETY: lengths checked above and by the plan.
    let rc = unsafe {
        actial_emu_attention_decode_cascade(
            d as i32,
            q.as_ptr().cast(),
            kv.prefix_k.as_ptr().cast(),
            kv.prefix_v.as_ptr().cast(),
            plan.cu_prefix.as_ptr(),
            kv.suffix_k.as_ptr().cast(),
            kv.suffix_v.as_ptr().cast(),
            plan.cu_suffix.as_ptr(),
            plan.cu_group.as_ptr(),
            plan.groups as i32,
            plan.threads as i32,
            s.q_heads as i32,
            s.kv_heads as i32,
            s.scale,
            out.as_mut_ptr().cast(),
            lse.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(no_kernel(OP, d));
    }
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
    // SAFETY: as above; the kernel bound-checks rows.
    unsafe {
        actial_emu_attention_merge(
            a.0.as_ptr().cast(),
            a.1.as_ptr(),
            b.0.as_ptr().cast(),
            b.1.as_ptr(),
            out.as_mut_ptr().cast(),
            lse.as_mut_ptr(),
            rows as i32,
            head_dim as i32,
            rows.div_ceil(MERGE_ROWS_PER_BLOCK) as i32,
            MERGE_THREADS as i32,
        )
    };
    Ok((out, lse))
}
