//! Interval algebra over IPv4 addresses (as `u32`), inclusive at both ends.
//!
//! Lists called *normal* are sorted, pairwise disjoint and not adjacent (merged).
//! Attributed lists carry, per interval, the rule that owns it; [`first_cover`] makes
//! them disjoint, giving each address to the smallest (first) rule covering it.

use alloc::vec::Vec;

/// An inclusive address interval.
pub(super) type Span = (u32, u32);

/// Sorts and merges `v` in place into a normal list.
pub(super) fn normalize(v: &mut Vec<Span>) {
    v.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(v.len());
    for &(lo, hi) in v.iter() {
        match out.last_mut() {
            Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    *v = out;
}

/// `(lo, hi)` minus the normal list `holes`, as a normal list.
pub(super) fn subtract(lo: u32, hi: u32, holes: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut from = u64::from(lo);
    for &(hl, hh) in holes {
        if u64::from(hh) < from || hl > hi {
            continue;
        }
        if u64::from(hl) > from {
            out.push((from as u32, hl - 1));
        }
        from = u64::from(hh) + 1;
    }
    if from <= u64::from(hi) {
        out.push((from as u32, hi));
    }
    out
}

/// Whether the normal list `v` contains `a`.
pub(super) fn contains(v: &[Span], a: u32) -> bool {
    let i = v.partition_point(|s| s.1 < a);
    v.get(i).is_some_and(|s| s.0 <= a)
}

/// Makes the tagged normal lists `lists` (in any order) one disjoint sorted list: each
/// address in some list goes to the smallest tag among the lists holding it; neighbouring
/// pieces with equal tags are merged. Lists are taken in tag order, each minus what the
/// earlier ones cover: linear in the lists' lengths per list, no search structure.
pub(super) fn first_cover<T: Ord + Copy>(lists: &mut [(T, &[Span])]) -> Vec<(u32, u32, T)> {
    lists.sort_by_key(|l| l.0);
    let mut covered: Vec<Span> = Vec::new();
    let mut out: Vec<(u32, u32, T)> = Vec::new();
    for &(t, list) in lists.iter() {
        if covered == [(0, u32::MAX)] {
            break;
        }
        let fresh = subtract_tagged(list.iter().map(|&(lo, hi)| (lo, hi, t)), &covered);
        out.extend(fresh);
        covered = union(&covered, list);
    }
    out.sort_unstable_by_key(|e| e.0);
    let mut merged: Vec<(u32, u32, T)> = Vec::with_capacity(out.len());
    for e in out {
        match merged.last_mut() {
            Some(last) if last.2 == e.2 && u64::from(last.1) + 1 == u64::from(e.0) => last.1 = e.1,
            _ => merged.push(e),
        }
    }
    merged
}

/// The union of two normal lists, normal.
fn union(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j == b.len() || (i < a.len() && a[i].0 <= b[j].0);
        let (lo, hi) = if take_a { a[i] } else { b[j] };
        if take_a {
            i += 1;
        } else {
            j += 1;
        }
        match out.last_mut() {
            Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The attributed disjoint sorted list `items` minus the normal list `holes`.
pub(super) fn subtract_tagged<T: Copy>(
    items: impl IntoIterator<Item = (u32, u32, T)>,
    holes: &[Span],
) -> Vec<(u32, u32, T)> {
    let mut out = Vec::new();
    for (lo, hi, t) in items {
        let from = holes.partition_point(|h| h.1 < lo);
        let to = holes.partition_point(|h| h.0 <= hi);
        let near = holes.get(from..to).unwrap_or(&[]);
        out.extend(subtract(lo, hi, near).into_iter().map(|(l, h)| (l, h, t)));
    }
    out
}
