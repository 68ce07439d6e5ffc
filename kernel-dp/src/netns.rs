//! Entering another network namespace, safely.
//!
//! ## Approach
//! A netlink (or any) socket belongs for life to the network namespace of the
//! thread that created it, whichever thread uses it later. So to talk to the
//! kernel *inside* namespace N we:
//!
//! 1. open N's file (`/var/run/netns/NAME` or `/proc/PID/ns/net`) on the caller's thread,
//! 2. spawn a fresh, dedicated OS thread that calls `setns(fd, CLONE_NEWNET)`,
//! 3. run one closure there (typically: create a socket), return its result,
//! 4. let that thread exit.
//!
//! ## Why this is safe
//! * `setns(CLONE_NEWNET)` changes only the calling *thread's* namespace, never
//!   the process's; the thread is ours and runs nothing but the closure, so no
//!   tokio worker, no other task and no library code ever runs in the wrong
//!   namespace by accident.
//! * The thread is never switched back: it dies, so there is no "forgot to
//!   restore" path (a failed restore is the classic bug of the switch-and-back
//!   approach on a shared thread).
//! * Joining network namespaces does not require a single-threaded process
//!   (unlike user or mount namespaces), and needs `CAP_SYS_ADMIN` only, which the
//!   host daemon has.
//! * The fd stays open until `setns` has returned, so it cannot be reused under us.
#![allow(unsafe_code)]

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    thread,
};

use crate::{Error, Result};

/// An open handle on a network namespace file; keeps the namespace alive and
/// can be passed to the kernel (e.g. `IFLA_NET_NS_FD`) while it lives.
#[derive(Debug)]
pub struct NetnsFile {
    file: File,
    path: PathBuf,
}

impl NetnsFile {
    /// Opens `/var/run/netns/NAME`, `/proc/PID/ns/net` or any other nsfs path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Netns {
            op: "open",
            path: path.clone(),
            source,
        })?;
        Ok(Self { file, path })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's descriptor (valid while `self` lives).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a new thread that has joined this namespace; returns what `f`
    /// returns. A panic in `f` is resumed on the caller's thread.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.fd();
        let outcome = thread::scope(|scope| {
            let worker = thread::Builder::new()
                .name("weft-netns".into())
                .spawn_scoped(scope, move || {
                    // SAFETY: `fd` is an open descriptor owned by `self.file`, which
                    // outlives this scoped thread; setns reads no memory of ours and
                    // changes only this thread's namespace, and this thread exits
                    // right after `f` without ever running other code.
                    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .map_err(|source| Error::Netns {
                    op: "spawn thread for",
                    path: self.path.clone(),
                    source,
                })?;
            match worker.join() {
                Ok(result) => Ok(result),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })?;
        outcome.map_err(|source| Error::Netns {
            op: "setns into",
            path: self.path.clone(),
            source,
        })
    }
}

/// Runs `f` inside the network namespace at `path` (see the module docs for
/// how, and why that is safe). Use it to create sockets that must live in a
/// container's or test host's namespace.
pub fn run_in_netns<T, F>(path: impl AsRef<Path>, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    NetnsFile::open(path)?.run(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_a_netns_error() {
        let err = run_in_netns("/var/run/netns/weft-does-not-exist", || ()).unwrap_err();
        assert!(matches!(err, Error::Netns { op: "open", .. }), "{err}");
        assert!(err.is_not_found());
    }

    #[test]
    fn own_namespace_round_trips_a_value() {
        // Joining the namespace we are already in needs CAP_SYS_ADMIN; without it
        // the error must still be a clean Netns error, never a panic.
        match run_in_netns("/proc/self/ns/net", || 41 + 1) {
            Ok(v) => assert_eq!(v, 42),
            Err(err) => assert!(
                matches!(
                    err,
                    Error::Netns {
                        op: "setns into",
                        ..
                    }
                ),
                "{err}"
            ),
        }
    }
}
