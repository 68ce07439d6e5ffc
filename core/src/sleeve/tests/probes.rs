//! Heartbeats and path-MTU probes.

use super::*;

#[test]
fn heartbeats_bring_paths_up_and_silence_takes_them_down() {
    let mut l = Line::new(true);
    let now = Instant::ZERO;
    for i in 0..3 {
        let mut outs = Vec::new();
        l.s[i].handle_timeout(now, &mut |o| outs.push(own(o)));
        for o in outs {
            l.collect(i, o.as_output());
        }
    }
    l.settle();
    assert!(l.s[0].paths(now).all(|p| p.up));
    assert!(l.s[1].paths(now).all(|p| p.up && p.pmtu_bytes.is_some()));
    let later = now + Duration::from_millis(HEARTBEAT_TIMEOUT_MS + 1);
    assert!(l.s[1].paths(later).all(|p| !p.up));
}
