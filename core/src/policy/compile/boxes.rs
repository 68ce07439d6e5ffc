//! Disjoint (address, port) boxes for one protocol of one chain.
//!
//! Rules give overlapping boxes (a peer set times a port range); nftables needs them
//! pairwise disjoint. Two decompositions are computed and the one with fewer elements is
//! kept: port-major (cut the port axis at every box end, one address cover per port
//! segment) suits few address intervals and many ranges; address-major (cut the address axis,
//! one port cover per address piece) suits many pod /32s with few ports, and `any`-port rules
//! stacked with single ports. In both, each piece goes to the first rule covering it, so an
//! element's rule allows all of it.

use super::interval::{Span, first_cover, subtract, subtract_tagged};
use super::{PortElem, RuleRef};
use crate::policy::Proto;
use alloc::vec::Vec;

/// One rule's box: first port, last port, peer addresses (normal), the rule.
pub(super) type PortBox<'a> = (u16, u16, &'a [Span], RuleRef);

/// Disjoint sorted intervals (of addresses or ports), each with the rule it goes to.
type Cover = Vec<(u32, u32, RuleRef)>;

/// The boxes of `proto` as disjoint elements outside the normal list `any`, sorted by ports
/// then addresses.
pub(super) fn disjoint(proto: Proto, mut boxes: Vec<PortBox<'_>>, any: &[Span]) -> Vec<PortElem> {
    if boxes.is_empty() {
        return Vec::new();
    }
    let by_port = port_major(proto, &mut boxes, any);
    let mut best = match address_major(proto, &boxes, any) {
        by_addr if by_addr.len() < by_port.len() => by_addr,
        _ => by_port,
    };
    best.sort_unstable_by_key(|e| (e.ports, e.addrs));
    best
}

/// Address-major: the address axis is cut at every interval end of every box into
/// elementary pieces (outside `any`), each piece gets the first-rule cover of the port ranges
/// of the boxes holding it, and neighbouring pieces with equal covers are merged.
fn address_major(proto: Proto, boxes: &[PortBox<'_>], any: &[Span]) -> Vec<PortElem> {
    // (coordinate, is a start, box); an end is at `hi + 1`, hence u64.
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, b) in boxes.iter().enumerate() {
        for &(lo, hi) in b.2 {
            events.push((u64::from(lo), true, i));
            events.push((u64::from(hi) + 1, false, i));
        }
    }
    events.sort_unstable_by_key(|e| e.0);
    let port_spans: Vec<[Span; 1]> = boxes
        .iter()
        .map(|b| [(u32::from(b.0), u32::from(b.1))])
        .collect();
    // A box's intervals are disjoint: it is active at most once at a time.
    let mut active: Vec<usize> = Vec::new();
    let mut pieces: Vec<(Span, Cover)> = Vec::new();
    let mut lists: Vec<(RuleRef, &[Span])> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let at = events[i].0;
        while i < events.len() && events[i].0 == at {
            let (_, start, b) = events[i];
            if start {
                active.push(b);
            } else if let Some(k) = active.iter().position(|&x| x == b) {
                active.swap_remove(k);
            }
            i += 1;
        }
        let Some(next) = events.get(i).filter(|_| !active.is_empty()) else {
            continue;
        };
        // `at` is below `next.0 <= 2^32`, so both ends fit in u32.
        let (lo, hi) = (at as u32, (next.0 - 1) as u32);
        let from = any.partition_point(|h| h.1 < lo);
        let to = any.partition_point(|h| h.0 <= hi);
        let outside = subtract(lo, hi, any.get(from..to).unwrap_or(&[]));
        if outside.is_empty() {
            continue;
        }
        lists.clear();
        lists.extend(
            active
                .iter()
                .map(|&b| (boxes[b].3, port_spans[b].as_slice())),
        );
        let cover = first_cover(&mut lists);
        for span in outside {
            match pieces.last_mut() {
                Some(last) if u64::from(last.0.1) + 1 == u64::from(span.0) && last.1 == cover => {
                    last.0.1 = span.1;
                }
                _ => pieces.push((span, cover.clone())),
            }
        }
    }
    let mut out = Vec::new();
    for (addrs, cover) in pieces {
        // Port covers come from u16 ranges.
        out.extend(cover.into_iter().map(|(p, q, by)| PortElem {
            addrs,
            proto,
            ports: (p as u16, q as u16),
            by,
        }));
    }
    out
}

/// Port-major: the port axis is cut at every box end into elementary segments, each segment gets
/// the first-rule cover of the boxes spanning it, and neighbouring segments with equal
/// covers are merged.
fn port_major(proto: Proto, boxes: &mut [PortBox<'_>], any: &[Span]) -> Vec<PortElem> {
    let mut out = Vec::new();
    boxes.sort_unstable_by_key(|b| b.0);
    let mut cuts: Vec<u32> = boxes
        .iter()
        .flat_map(|b| [u32::from(b.0), u32::from(b.1) + 1])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut segs: Vec<((u16, u16), Cover)> = Vec::new();
    let mut active: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut tagged: Vec<(RuleRef, &[Span])> = Vec::new();
    for w in cuts.windows(2) {
        // Both below 2^16: `w[1]` is at most `u16::MAX + 1`.
        let (lo, hi) = (w[0] as u16, (w[1] - 1) as u16);
        while next < boxes.len() && boxes[next].0 <= lo {
            active.push(next);
            next += 1;
        }
        active.retain(|&i| boxes[i].1 >= lo);
        if active.is_empty() {
            continue;
        }
        tagged.clear();
        for &i in &active {
            let (_, _, addrs, by) = boxes[i];
            tagged.push((by, addrs));
        }
        let cover = subtract_tagged(first_cover(&mut tagged), any);
        if cover.is_empty() {
            continue;
        }
        match segs.last_mut() {
            Some(last) if u32::from(last.0.1) + 1 == u32::from(lo) && last.1 == cover => {
                last.0.1 = hi
            }
            _ => segs.push(((lo, hi), cover)),
        }
    }
    for (ports, cover) in segs {
        out.extend(cover.into_iter().map(|(a, b, by)| PortElem {
            addrs: (a, b),
            proto,
            ports,
            by,
        }));
    }
    out
}
