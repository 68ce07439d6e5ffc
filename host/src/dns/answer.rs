//! Answering one DNS query from the record snapshot: pure, no I/O, so it is tested (and
//! fed garbage) directly.
//!
//! - A (and ANY) for a name in the domain: every address, shuffled per answer (load
//!   balancing), TTL [`TTL_S`]; AAAA and other types: NODATA when the name exists,
//!   NXDOMAIN when it does not. Authoritative.
//! - PTR `d.c.b.a.in-addr.arpa.` for an address we hold: its names. Other PTRs and every
//!   name outside the domain: [`Action::Forward`] upstream.
//! - Not a DNS query (too short, a response): [`Action::Drop`]. A header that parses
//!   but a body that does not, several questions: FORMERR. Opcodes other than QUERY: NOTIMP.
//! - Over UDP the answer is cut to the client's size (512, or its EDNS size) with TC set.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// TTL of every answer, in seconds: short, so that a moved or removed container is
/// forgotten by clients at once.
pub(crate) const TTL_S: u32 = 1;
/// Bytes of a DNS header.
pub(crate) const HEADER_LEN_BYTES: usize = 12;
/// Response codes of the header-only replies.
const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NOTIMP: u8 = 4;
/// UDP answer size without EDNS (RFC 1035).
pub(crate) const UDP_LEN_CLASSIC: usize = 512;
/// The EDNS payload size we announce and honour at most (the DNS flag day value).
pub(crate) const UDP_LEN_EDNS_MAX: u16 = 1232;

/// The records a server answers from: built by the router task, read by every query.
#[derive(Debug, Default, Clone)]
pub(crate) struct Table {
    /// Canonical name (lowercase, no trailing dot) -> its addresses.
    pub(crate) forward: HashMap<String, Vec<Ipv4Addr>>,
    /// Address -> its canonical names.
    pub(crate) reverse: HashMap<Ipv4Addr, Vec<String>>,
}

impl Table {
    /// Adds one record.
    pub(crate) fn insert(&mut self, name: &str, addr: Ipv4Addr) {
        let v = self.forward.entry(name.to_owned()).or_default();
        if !v.contains(&addr) {
            v.push(addr);
        }
        let n = self.reverse.entry(addr).or_default();
        if !n.iter().any(|x| x == name) {
            n.push(name.to_owned());
        }
    }
}

/// What to do with a datagram or TCP message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: forward the query upstream as it is.
    Forward,
    /// Not a query: say nothing.
    Drop,
}

/// Small xorshift RNG for shuffling answers (not security relevant).
#[derive(Debug)]
pub(crate) struct Shuffler(u64);

impl Shuffler {
    /// Seeded from `seed` (any value).
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Fisher-Yates.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// A reply with only a header: `rcode`, the query's id and opcode, no questions.
fn bare_error(query: &[u8], rcode: u8) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN_BYTES];
    out[..2].copy_from_slice(&query[..2]);
    // QR=1, opcode copied, RD copied; RA=1; rcode.
    out[2] = 0x80 | (query[2] & 0x79);
    out[3] = 0x80 | (rcode & 0x0f);
    out
}

/// The canonical form of `name` (lowercase, no trailing dot).
pub(crate) fn canonical(name: &Name) -> String {
    let s = name.to_ascii().to_ascii_lowercase();
    s.strip_suffix('.').map(str::to_owned).unwrap_or(s)
}

/// `d.c.b.a.in-addr.arpa` -> `a.b.c.d`.
fn ptr_addr(canonical: &str) -> Option<Ipv4Addr> {
    let rest = canonical.strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = Vec::with_capacity(4);
    for label in rest.split('.') {
        if label.is_empty() || label.len() > 3 || (label.len() > 1 && label.starts_with('0')) {
            return None;
        }
        o.push(label.parse().ok()?);
    }
    (o.len() == 4).then(|| Ipv4Addr::new(o[3], o[2], o[1], o[0]))
}

/// Decides what to do with `query` (bytes as received). `domain` is canonical
/// (`weave.local`); `udp` is true for datagrams (answers are cut to fit).
pub(crate) fn answer(
    query: &[u8],
    table: &Table,
    domain: &str,
    udp: bool,
    rng: &mut Shuffler,
) -> Action {
    if query.len() < HEADER_LEN_BYTES || query[2] & 0x80 != 0 {
        return Action::Drop; // Too short to answer, or a response: never answer those.
    }
    let Ok(msg) = Message::from_vec(query) else {
        return Action::Reply(bare_error(query, RCODE_FORMERR));
    };
    if msg.metadata.message_type != MessageType::Query {
        return Action::Drop;
    }
    if msg.metadata.op_code != OpCode::Query {
        return Action::Reply(bare_error(query, RCODE_NOTIMP));
    }
    let [q] = msg.queries.as_slice() else {
        return Action::Reply(bare_error(query, RCODE_FORMERR));
    };
    let qname = canonical(q.name());
    let in_domain = qname == domain
        || (qname.len() > domain.len()
            && qname.ends_with(domain)
            && qname.as_bytes()[qname.len() - domain.len() - 1] == b'.');
    let class_ok = matches!(q.query_class(), DNSClass::IN | DNSClass::ANY);
    let mut reply = Message::response(msg.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = msg.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(q.clone());
    if let Some(e) = &msg.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(
            e.max_payload()
                .clamp(UDP_LEN_CLASSIC as u16, UDP_LEN_EDNS_MAX),
        );
        reply.set_edns(edns);
    }
    if in_domain && class_ok {
        reply.metadata.authoritative = true;
        match table.forward.get(&qname) {
            None => reply.metadata.response_code = ResponseCode::NXDomain,
            Some(addrs) if matches!(q.query_type(), RecordType::A | RecordType::ANY) => {
                let mut addrs = addrs.clone();
                rng.shuffle(&mut addrs);
                for a in addrs {
                    let rdata = RData::A(A(a));
                    reply.add_answer(Record::from_rdata(q.name().clone(), TTL_S, rdata));
                }
            }
            Some(_) => {} // NODATA: the name exists, not with this type.
        }
    } else if q.query_type() == RecordType::PTR && class_ok {
        let Some(names) = ptr_addr(&qname).and_then(|a| table.reverse.get(&a)) else {
            return Action::Forward;
        };
        reply.metadata.authoritative = true;
        for n in names {
            let Ok(target) = Name::from_ascii(format!("{n}.")) else {
                continue;
            };
            let rdata = RData::PTR(PTR(target));
            reply.add_answer(Record::from_rdata(q.name().clone(), TTL_S, rdata));
        }
    } else {
        return Action::Forward;
    }
    let limit = if !udp {
        usize::from(u16::MAX)
    } else {
        msg.edns.as_ref().map_or(UDP_LEN_CLASSIC, |e| {
            usize::from(
                e.max_payload()
                    .clamp(UDP_LEN_CLASSIC as u16, UDP_LEN_EDNS_MAX),
            )
        })
    };
    loop {
        let Ok(bytes) = reply.to_vec() else {
            return Action::Reply(bare_error(query, RCODE_SERVFAIL));
        };
        if bytes.len() <= limit {
            return Action::Reply(bytes);
        }
        if reply.answers.pop().is_none() {
            return Action::Reply(bare_error(query, RCODE_SERVFAIL));
        }
        reply.metadata.truncation = true;
    }
}

/// A SERVFAIL answer to `query` (upstream unreachable), if it is a query at all.
pub(crate) fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    (query.len() >= HEADER_LEN_BYTES && query[2] & 0x80 == 0)
        .then(|| bare_error(query, RCODE_SERVFAIL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn table() -> Table {
        let mut t = Table::default();
        for i in 1..=3 {
            t.insert("web.weave.local", Ipv4Addr::new(10, 32, 0, i));
        }
        t.insert("db.weave.local", Ipv4Addr::new(10, 32, 0, 9));
        t
    }

    fn query(name: &str, ty: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn reply(a: Action) -> Message {
        match a {
            Action::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn ask(q: &[u8]) -> Action {
        answer(q, &table(), "weave.local", true, &mut Shuffler::new(7))
    }

    #[test]
    fn a_records_all_addresses_in_varying_order_ttl_1() {
        let q = query("Web.Weave.Local.", RecordType::A, false);
        let mut orders = std::collections::HashSet::new();
        let mut rng = Shuffler::new(1);
        for _ in 0..30 {
            let r = reply(answer(&q, &table(), "weave.local", true, &mut rng));
            assert_eq!(r.metadata.id, 0x1234);
            assert!(r.metadata.authoritative);
            assert_eq!(r.answers.len(), 3);
            assert!(r.answers.iter().all(|a| a.ttl == TTL_S));
            let order: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
            orders.insert(order);
        }
        assert!(orders.len() > 1, "the order varies");
    }

    #[test]
    fn nxdomain_nodata_ptr_and_forward() {
        let r = reply(ask(&query("nope.weave.local.", RecordType::A, false)));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = reply(ask(&query("db.weave.local.", RecordType::AAAA, false)));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        let r = reply(ask(&query(
            "9.0.32.10.in-addr.arpa.",
            RecordType::PTR,
            false,
        )));
        assert_eq!(r.answers[0].data.to_string(), "db.weave.local.");
        assert_eq!(
            ask(&query("8.0.32.10.in-addr.arpa.", RecordType::PTR, false)),
            Action::Forward
        );
        assert_eq!(
            ask(&query("example.test.", RecordType::A, false)),
            Action::Forward
        );
        assert_eq!(
            ask(&query("xweave.local.", RecordType::A, false)),
            Action::Forward
        );
    }

    #[test]
    fn truncates_to_the_client_size() {
        let mut t = Table::default();
        for i in 0..100u8 {
            t.insert("big.weave.local", Ipv4Addr::new(10, 32, 1, i));
        }
        let q = query("big.weave.local.", RecordType::A, false);
        let Action::Reply(b) = answer(&q, &t, "weave.local", true, &mut Shuffler::new(3)) else {
            panic!()
        };
        assert!(b.len() <= UDP_LEN_CLASSIC);
        let r = Message::from_vec(&b).unwrap();
        assert!(r.metadata.truncation && !r.answers.is_empty());
        let q = query("big.weave.local.", RecordType::A, true);
        let Action::Reply(b) = answer(&q, &t, "weave.local", true, &mut Shuffler::new(3)) else {
            panic!()
        };
        assert!(b.len() > UDP_LEN_CLASSIC && b.len() <= usize::from(UDP_LEN_EDNS_MAX));
        let Action::Reply(b) = answer(&q, &t, "weave.local", false, &mut Shuffler::new(3)) else {
            panic!()
        };
        assert_eq!(
            Message::from_vec(&b).unwrap().answers.len(),
            100,
            "TCP: all"
        );
    }

    #[test]
    fn garbage_is_dropped_or_formerr_never_a_panic() {
        assert_eq!(ask(b""), Action::Drop);
        assert_eq!(ask(&[0u8; 11]), Action::Drop);
        let mut resp = query("web.weave.local.", RecordType::A, false);
        resp[2] |= 0x80;
        assert_eq!(ask(&resp), Action::Drop, "responses are never answered");
        let mut bad = query("web.weave.local.", RecordType::A, false);
        bad.truncate(bad.len() - 2);
        let r = reply(ask(&bad));
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(r.metadata.id, 0x1234);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..600 {
            let mut b = vec![0u8; len % 300];
            for x in &mut b {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *x = seed as u8;
            }
            let _ = ask(&b);
        }
    }

    #[test]
    fn ptr_names_parse_strictly() {
        assert_eq!(
            ptr_addr("4.3.2.1.in-addr.arpa"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        for bad in [
            "3.2.1.in-addr.arpa",
            "256.3.2.1.in-addr.arpa",
            "04.3.2.1.in-addr.arpa",
            "x",
        ] {
            assert_eq!(ptr_addr(bad), None, "{bad}");
        }
    }
}
