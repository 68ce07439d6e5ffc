//! The threads, atomics and cells the crew is built from: `std`'s, or loom's under
//! `--cfg loom`, so that the crew's loom model (`crew::model`) checks the code that runs.
//!
//! Only the crew uses these; the rest of the crate has no shared-memory hand-offs.

#[cfg(loom)]
pub(crate) use loom::{
    hint,
    sync::{Arc, atomic},
    thread,
};
#[cfg(not(loom))]
pub(crate) use std::{
    hint,
    sync::{Arc, atomic},
    thread,
};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std::cell::UnsafeCell` with loom's API: every access is a closure, which loom tracks
/// (and reports when two threads' accesses are not ordered).
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Reads through a pointer that `f` must not keep.
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Writes through a pointer that `f` must not keep.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
