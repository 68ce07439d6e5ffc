//! The crate's one error type: every variant says which operation, on which
//! interface or namespace, failed and (where the kernel answered) with which errno.

use std::{fmt, io, path::PathBuf};

/// What was being done when an error happened; part of every [`Error`].
///
/// A `&'static str` keeps the error small and lets the Display read like a
/// sentence: "create vxlan vx0: File exists (errno 17)".
pub type Op = &'static str;

/// Errors from [`crate::Netlink`] and the netns helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a netlink request.
    #[error("{op} {target}: {} (errno {errno})", Errno(*errno))]
    Kernel {
        /// The operation, e.g. "create bridge".
        op: Op,
        /// The interface (or address, route, FDB entry) it was about.
        target: String,
        /// The positive errno the kernel answered with.
        errno: i32,
    },
    /// A link looked up by name does not exist (in the handle's namespace).
    #[error("{op}: no link named {name}")]
    LinkNotFound {
        /// The operation that needed the link.
        op: Op,
        /// The name looked up.
        name: String,
    },
    /// The netlink conversation itself failed (socket closed, reply not understood).
    #[error("{op} {target}: netlink: {detail}")]
    Protocol {
        /// The operation.
        op: Op,
        /// What it was about.
        target: String,
        /// What went wrong, from rtnetlink.
        detail: String,
    },
    /// Opening a netlink socket failed.
    #[error("{op}: {source}")]
    Socket {
        /// The operation, e.g. "open rtnetlink socket".
        op: Op,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Opening or entering a network namespace failed.
    #[error("{op} netns {}: {source}", path.display())]
    Netns {
        /// The operation, e.g. "open" or "setns".
        op: Op,
        /// The namespace path (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The call needs a tokio runtime and was made outside one.
    #[error("{op}: must be called from inside a tokio runtime")]
    NoRuntime {
        /// The operation.
        op: Op,
    },
    /// An argument the kernel would reject anyway (bad name, mixed address families).
    #[error("{op}: invalid {what}: {value}")]
    InvalidArgument {
        /// The operation.
        op: Op,
        /// Which argument, e.g. "interface name".
        what: &'static str,
        /// The value given.
        value: String,
    },
}

impl Error {
    /// The errno the kernel (or the OS) answered with, if there was one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Socket { source, .. } | Self::Netns { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True when the object already existed (`EEXIST`): callers making setup
    /// idempotent match on this instead of on strings.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// True when the object was not there (`ENOENT`, `ENODEV`, or a failed lookup by name).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::LinkNotFound { .. })
            || matches!(self.errno(), Some(libc::ENOENT | libc::ENODEV))
    }

    /// Converts an rtnetlink error into ours, keeping the errno when the kernel sent one.
    pub(crate) fn from_rtnl(op: Op, target: impl Into<String>, err: rtnetlink::Error) -> Self {
        let target = target.into();
        match err {
            rtnetlink::Error::NetlinkError(msg) => match msg.code {
                // netlink sends negative errno values.
                Some(code) => Self::Kernel {
                    op,
                    target,
                    errno: code.get().saturating_abs(),
                },
                None => Self::Protocol {
                    op,
                    target,
                    detail: "error message without an error code".into(),
                },
            },
            other => Self::Protocol {
                op,
                target,
                detail: other.to_string(),
            },
        }
    }
}

/// Displays an errno as the C library's text ("File exists").
struct Errno(i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = io::Error::from_raw_os_error(self.0).to_string();
        // io::Error appends " (os error N)"; we print the errno ourselves.
        let text = text.split(" (os error").next().unwrap_or(&text);
        f.write_str(text)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_is_one_line_with_context() {
        let err = Error::Kernel {
            op: "create vxlan",
            target: "vx0".into(),
            errno: libc::EEXIST,
        };
        assert_eq!(err.to_string(), "create vxlan vx0: File exists (errno 17)");
        assert!(err.is_exists());
        assert!(!err.is_not_found());
    }

    #[test]
    fn not_found_covers_lookup_and_errno() {
        let lookup = Error::LinkNotFound {
            op: "set mtu",
            name: "weft".into(),
        };
        assert_eq!(lookup.to_string(), "set mtu: no link named weft");
        assert!(lookup.is_not_found());
        let nodev = Error::Kernel {
            op: "delete link",
            target: "x".into(),
            errno: libc::ENODEV,
        };
        assert!(nodev.is_not_found());
    }

    #[test]
    fn netns_error_names_the_path() {
        let err = Error::Netns {
            op: "open",
            path: "/var/run/netns/nope".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("open netns /var/run/netns/nope: "),
            "{text}"
        );
        assert!(!text.contains('\n'));
        assert_eq!(err.errno(), Some(libc::ENOENT));
    }
}
