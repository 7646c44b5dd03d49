//! Training phases: NVTX ranges (vision, LM forward, loss, backward, optimizer,
//! rollout prefill / decode) visible in Nsight Systems (docs/PROFILING.md), and
//! the phase the device's accounting files each copy, launch and allocation
//! under ([`super::accounting`]).
//!
//! The NVTX calls go to NVTX3's header-only implementation
//! (`cuda/nvtx_shim.c`), which does nothing unless a profiler injected itself;
//! in a build without the CUDA toolchain they compile to nothing. The phase
//! stack is per thread and exists in every build.
//!
//! Ranges nest; accounting uses the *outermost* open phase, so the model
//! forward inside a rollout decode step counts as `rollout_decode`, not as
//! `lm_forward`.

use std::cell::RefCell;
use std::ffi::CStr;
use std::marker::PhantomData;

/// A phase of training or generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Work outside every phase range (batch preparation, checkpoints...).
    Other,
    Vision,
    LmForward,
    Loss,
    Backward,
    Optimizer,
    RolloutPrefill,
    RolloutDecode,
}

impl Phase {
    pub const COUNT: usize = 8;
    pub const ALL: [Phase; Phase::COUNT] = [
        Phase::Other,
        Phase::Vision,
        Phase::LmForward,
        Phase::Loss,
        Phase::Backward,
        Phase::Optimizer,
        Phase::RolloutPrefill,
        Phase::RolloutDecode,
    ];

    /// The range's name in Nsight and in reports.
    pub fn name(self) -> &'static str {
        let c = self.c_name().to_str();
        c.expect("phase names are ASCII")
    }

    fn c_name(self) -> &'static CStr {
        match self {
            Phase::Other => c"other",
            Phase::Vision => c"vision",
            Phase::LmForward => c"lm_forward",
            Phase::Loss => c"loss",
            Phase::Backward => c"backward",
            Phase::Optimizer => c"optimizer",
            Phase::RolloutPrefill => c"rollout_prefill",
            Phase::RolloutDecode => c"rollout_decode",
        }
    }

    /// Position in [`Phase::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

thread_local! {
    static OPEN: RefCell<Vec<Phase>> = const { RefCell::new(Vec::new()) };
}

/// The outermost phase open on this thread ([`Phase::Other`] when none is).
pub fn current_phase() -> Phase {
    OPEN.with(|s| s.borrow().first().copied().unwrap_or(Phase::Other))
}

/// An open range; it closes when dropped, on the thread that opened it.
#[must_use = "the range closes when this guard drops"]
pub struct Range {
    _same_thread: PhantomData<*const ()>,
}

#[cfg(actial_cuda)]
unsafe extern "C" {
    fn actial_nvtx_push(name: *const std::ffi::c_char);
    fn actial_nvtx_pop();
}

/// Opens a range for `phase`.
pub fn range(phase: Phase) -> Range {
    OPEN.with(|s| s.borrow_mut().push(phase));
    #[cfg(actial_cuda)]
    // SAFETY: the name is a valid NUL-terminated static string.
    unsafe {
        actial_nvtx_push(phase.c_name().as_ptr())
    };
    Range { _same_thread: PhantomData }
}

impl Drop for Range {
    fn drop(&mut self) {
        OPEN.with(|s| s.borrow_mut().pop());
        #[cfg(actial_cuda)]
        // SAFETY: pops the range this guard pushed (ranges nest per thread).
        unsafe {
            actial_nvtx_pop()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outermost_open_range_is_the_phase() {
        assert_eq!(current_phase(), Phase::Other);
        let decode = range(Phase::RolloutDecode);
        {
            let _inner = range(Phase::LmForward);
            assert_eq!(current_phase(), Phase::RolloutDecode);
        }
        drop(decode);
        assert_eq!(current_phase(), Phase::Other);
        let _loss = range(Phase::Loss);
        assert_eq!(current_phase(), Phase::Loss);
        // Another thread has its own stack.
        assert_eq!(std::thread::spawn(current_phase).join().unwrap(), Phase::Other);
    }

    #[test]
    fn names_are_distinct_and_index_matches_all() {
        for (i, p) in Phase::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
            assert_eq!(Phase::ALL.iter().filter(|q| q.name() == p.name()).count(), 1);
        }
    }
}
