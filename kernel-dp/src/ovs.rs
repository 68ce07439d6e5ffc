//! Probing for the kernel openvswitch datapath: is the generic-netlink family
//! `ovs_datapath` registered? A boolean answer, never an error: a machine
//! without it (every one we test on) simply uses bridge + VXLAN instead.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

/// The genetlink family the openvswitch module registers.
pub const OVS_DATAPATH_FAMILY: &str = "ovs_datapath";

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDR_LEN: usize = 16;
const GENL_HDR_LEN: usize = 4;
/// Family names are at most `GENL_NAMSIZ` (16) bytes with the NUL.
const FAMILY_NAME_LEN_MAX: usize = 15;
const REPLY_LEN_MAX: usize = 8192;
const SEQ: u32 = 1;

/// True when the openvswitch kernel datapath is usable here. Cheap (one
/// request); call once at router start to pick ODP or bridge + VXLAN.
pub fn ovs_datapath_available() -> bool {
    genl_family_exists(OVS_DATAPATH_FAMILY).unwrap_or(false)
}

/// Whether generic-netlink family `name` is registered in this kernel.
/// `Err` only when generic netlink itself cannot be asked.
pub fn genl_family_exists(name: &str) -> io::Result<bool> {
    let request = getfamily_request(name)?;
    let mut socket = Socket::new(NETLINK_GENERIC)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&request, 0)?;
    // The kernel handles a netlink request inside sendmsg, so the reply is
    // already queued: this recv does not wait on anything external.
    let mut reply = Vec::with_capacity(REPLY_LEN_MAX);
    let len = socket.recv(&mut reply, 0)?;
    parse_getfamily_reply(&reply[..len.min(reply.len())])
}

fn getfamily_request(name: &str) -> io::Result<Vec<u8>> {
    if name.is_empty() || name.len() > FAMILY_NAME_LEN_MAX || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad genetlink family name",
        ));
    }
    let nla_len = 4 + name.len() + 1;
    let nla_padded = nla_len.next_multiple_of(4);
    let total = NLMSG_HDR_LEN + GENL_HDR_LEN + nla_padded;
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&(total as u32).to_ne_bytes());
    buf.extend_from_slice(&GENL_ID_CTRL.to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    buf.extend_from_slice(&SEQ.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    buf.extend_from_slice(&[CTRL_CMD_GETFAMILY, 1, 0, 0]); // cmd, version, reserved
    buf.extend_from_slice(&(nla_len as u16).to_ne_bytes());
    buf.extend_from_slice(&CTRL_ATTR_FAMILY_NAME.to_ne_bytes());
    buf.extend_from_slice(name.as_bytes());
    buf.resize(total, 0); // NUL terminator and padding
    Ok(buf)
}

/// The first message answers: the family's description (type `GENL_ID_CTRL`)
/// means it exists; an error message (`ENOENT`) means it does not.
fn parse_getfamily_reply(reply: &[u8]) -> io::Result<bool> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short genetlink reply");
    let header = reply.get(..NLMSG_HDR_LEN).ok_or_else(bad)?;
    let msg_type = u16::from_ne_bytes([header[4], header[5]]);
    match msg_type {
        GENL_ID_CTRL => Ok(true),
        NLMSG_ERROR => {
            let code = reply
                .get(NLMSG_HDR_LEN..NLMSG_HDR_LEN + 4)
                .ok_or_else(bad)?;
            let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
            match errno {
                libc::ENOENT => Ok(false),
                // An ACK with no description should not happen; treat as absent.
                0 => Ok(false),
                errno => Err(io::Error::from_raw_os_error(errno)),
            }
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_well_formed() {
        let req = getfamily_request(OVS_DATAPATH_FAMILY).unwrap();
        assert_eq!(req.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(req[0..4].try_into().unwrap()) as usize,
            req.len()
        );
        assert_eq!(&req[24..36], b"ovs_datapath");
        assert_eq!(req[36], 0);
        assert!(getfamily_request("").is_err());
        assert!(getfamily_request("a_name_far_too_long_for_genl").is_err());
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        assert!(parse_getfamily_reply(&[]).is_err());
        assert!(parse_getfamily_reply(&[0; 15]).is_err());
        let mut err = vec![0u8; 20];
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(parse_getfamily_reply(&err[..18]).is_err());
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert!(!parse_getfamily_reply(&err).unwrap());
    }

    #[test]
    fn nlctrl_itself_is_found_and_a_bogus_family_is_not() {
        // Every kernel with generic netlink registers "nlctrl"; this proves the
        // probe can say "yes", so its "no" for ovs_datapath means something.
        assert!(genl_family_exists("nlctrl").unwrap());
        assert!(!genl_family_exists("weft_no_such").unwrap());
    }

    #[test]
    fn ovs_probe_agrees_with_the_direct_query() {
        let direct = genl_family_exists(OVS_DATAPATH_FAMILY).unwrap_or(false);
        assert_eq!(ovs_datapath_available(), direct);
        println!("openvswitch datapath available: {direct}");
    }
}
