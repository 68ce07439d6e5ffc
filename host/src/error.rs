//! The host's errors: each one names what failed and, where the user can do something
//! about it, says what to do, in one line.

use std::io;
use std::path::PathBuf;

/// Everything the CLI and the daemon can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No control socket at the path.
    #[error("weft is not running (no socket at {}); start it with `weft launch`", .0.display())]
    NotRunning(PathBuf),
    /// A socket file is there but nobody listens.
    #[error("weft is not running (socket {} refuses connections); start it with `weft launch`", .0.display())]
    Refused(PathBuf),
    /// Another router answers on the socket already.
    #[error("weft is already running (socket {} answers); stop it first with `weft stop`", .0.display())]
    AlreadyRunning(PathBuf),
    /// The control socket (or its directory) is closed to this user.
    #[error("permission denied on the weft control socket {}: it serves only root and the router's user; run weft with sudo", .0.display())]
    SocketDenied(PathBuf),
    /// `--cipher aes-256-gcm` on a CPU without AES and carry-less multiply instructions.
    #[error(
        "--cipher aes-256-gcm: this CPU has no AES and carry-less multiply instructions (AES-NI and PCLMULQDQ, or ARMv8 AES and PMULL), so AES-GCM would be slow; use --cipher auto or chacha20-poly1305"
    )]
    CipherUnavailable,
    /// Creating interfaces needs root.
    #[error("the weft router needs root (it creates network interfaces); run it with sudo")]
    NotRoot,
    /// The TCP or UDP port is taken.
    #[error(
        "port {port}/{proto} is already in use (another weft router?); stop it with `weft stop` or pick another with --port"
    )]
    PortInUse {
        /// Which port.
        port: u16,
        /// "tcp" or "udp".
        proto: &'static str,
    },
    /// No TUN/TAP device node.
    #[error(
        "/dev/net/tun is missing, so the sleeve datapath cannot start; load the tun module (`modprobe tun`) or, in a container, pass --device /dev/net/tun"
    )]
    NoTun,
    /// A `--netns` / `--pid` that does not name a network namespace.
    #[error("no network namespace at {}: {reason}; pass an existing --netns path or the --pid of a running process", path.display())]
    UnknownNetns {
        /// The path tried.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The daemon refused a request; the text is its one-line error.
    #[error("{0}")]
    Api(String),
    /// A file or socket operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "write state file".
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A bad reply on the control socket.
    #[error("control socket {}: {detail}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The background router exited before it answered.
    #[error("the router exited during startup ({status}): {last_line} (full log: {})", log.display())]
    LaunchFailed {
        /// How it exited.
        status: String,
        /// The last line it logged.
        last_line: String,
        /// Where its log is.
        log: PathBuf,
    },
    /// A kernel (netlink) operation failed.
    #[error("{0}")]
    Netlink(String),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}

/// The host's result type.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
