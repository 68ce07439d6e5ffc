//! The [`Netlink`] handle: one rtnetlink connection bound to one network
//! namespace, and the request plumbing the op files (`link`, `addr`, `fdb`) share.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;

use crate::{Error, Result, error::Op, netns::NetnsFile};

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const IFNAME_LEN_MAX: usize = 15;

/// An async rtnetlink connection to the kernel of one network namespace.
///
/// Every operation is a method (`create_bridge`, `add_address`, `fdb_add`, ...)
/// that names links by their name in *this* handle's namespace. Cheap to keep
/// open; dropping it closes the socket and stops its background task.
/// Needs a tokio runtime (any flavour) to be created and used.
#[derive(Debug)]
pub struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
    conn_task: tokio::task::JoinHandle<()>,
    netns: Option<PathBuf>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn_task.abort();
    }
}

impl Netlink {
    /// Opens a connection in the caller's current network namespace (for the
    /// host daemon: the host's). Call from inside a tokio runtime.
    pub fn new() -> Result<Self> {
        const OP: Op = "open rtnetlink socket";
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime { op: OP })?;
        let (conn, handle, _multicast) =
            rtnetlink::new_connection().map_err(|source| Error::Socket { op: OP, source })?;
        Ok(Self {
            handle,
            conn_task: rt.spawn(conn),
            netns: None,
        })
    }

    /// Opens a connection whose socket lives inside the network namespace at
    /// `netns` (`/var/run/netns/NAME` or `/proc/PID/ns/net`): every op on the
    /// returned handle acts inside that namespace, while the caller's threads
    /// stay where they are. The socket is created on a short-lived dedicated
    /// thread that joined the namespace (see [`crate::netns`]); this blocks for
    /// that thread's life, well under a millisecond.
    pub fn in_netns(netns: impl AsRef<Path>) -> Result<Self> {
        const OP: Op = "open rtnetlink socket in netns";
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime { op: OP })?;
        let ns = NetnsFile::open(netns)?;
        let rt_for_thread = rt.clone();
        let (conn, handle, _multicast) = ns
            .run(move || {
                // Registering the fd with the runtime's reactor works from any
                // thread that entered the runtime; the socket's namespace is
                // fixed at creation, i.e. here.
                let _entered = rt_for_thread.enter();
                rtnetlink::new_connection()
            })?
            .map_err(|source| Error::Socket { op: OP, source })?;
        Ok(Self {
            handle,
            conn_task: rt.spawn(conn),
            netns: Some(ns.path().to_path_buf()),
        })
    }

    /// The namespace this handle was opened in, `None` for the caller's own.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// The underlying rtnetlink handle, for requests this crate does not wrap.
    pub fn rtnetlink(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Sends one request that the kernel answers with an ACK (or an error).
    pub(crate) async fn request_ack(
        &self,
        op: Op,
        target: &(dyn std::fmt::Display + Sync),
        msg: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<()> {
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(msg)
            .map_err(|e| Error::from_rtnl(op, target.to_string(), e))?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(err) = reply.payload {
                if err.code.is_some() {
                    return Err(Error::from_rtnl(
                        op,
                        target.to_string(),
                        rtnetlink::Error::NetlinkError(err),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Rejects names the kernel would refuse, with our context instead of a bare EINVAL.
pub(crate) fn check_ifname(op: Op, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_LEN_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            op,
            what: "interface name (1-15 bytes, no '/', ':' or spaces)",
            value: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules_match_the_kernel() {
        for good in ["weft", "ethwe", "vxlan-6784", "a", "abcdefghijklmno"] {
            check_ifname("t", good).unwrap();
        }
        for bad in ["", "abcdefghijklmnop", "a/b", "a b", "eth0:1", ".", ".."] {
            assert!(check_ifname("t", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Netlink::new().unwrap_err();
        assert!(matches!(err, Error::NoRuntime { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "open rtnetlink socket: must be called from inside a tokio runtime"
        );
    }
}
