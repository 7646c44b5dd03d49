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

use super::attention_plan::{FORWARD_THREADS, ForwardKernel, MERGE_ROWS_PER_BLOCK, MERGE_THREADS, forward_plan};
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
    kernel: ForwardKernel,
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
            (kernel == ForwardKernel::TensorCore) as i32,
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
        return Err(arg_err!(OP, "head dim {d} has no kernel (32, 64, 80 and 128 are compiled)"));
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
