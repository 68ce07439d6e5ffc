//! `Crew`: helper threads that take pieces of one batch (sealing or opening its datagrams)
//! off the pump thread while it works on the same batch.
//!
//! The pump publishes a batch, wakes the helpers and starts on the pieces itself; every
//! thread claims the next piece with one atomic add, so each piece is done exactly once and
//! the pump never waits for a helper to be scheduled: on a busy machine it simply does
//! most pieces alone. It only waits, before returning, for a helper that is in the middle
//! of a piece (a few microseconds). The batch is borrowed from the pump's stack, so a
//! helper may touch it only between claiming "active" and the pump closing the batch; the
//! two sides use sequentially consistent operations and fences on `open` and `active` (as
//! in Dekker's algorithm) so that the pump sees every helper that could still be inside.
//! A loom model at the end of this file checks that hand-off.

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

// std's, or loom's for the model at the end of this file.
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst, fence};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, UnsafeCell, hint};

/// Most helper threads a crew may have.
pub const CREW_HELPERS_MAX: usize = 15;

/// Spins while waiting for a helper to finish its piece before yielding the CPU.
const SPINS_BEFORE_YIELD: u32 = 256;

/// Work on one piece: its index and its bytes.
type Work = dyn Fn(usize, &mut [u8]) + Sync;

/// The batch being worked on; valid while `open` is set.
#[derive(Clone, Copy)]
struct Batch {
    buf: *mut u8,
    len: usize,
    piece_len: usize,
    pieces: usize,
    /// Lifetime erased; only dereferenced while the pump waits in [`Crew::run`].
    work: *const Work,
}

struct Shared {
    batch: UnsafeCell<Batch>,
    /// A batch is published and pieces may be claimed.
    open: AtomicBool,
    /// Helpers that may be looking at the batch.
    active: AtomicUsize,
    /// The next piece to claim.
    next: AtomicUsize,
    stop: AtomicBool,
    /// A piece's work panicked on a helper.
    panicked: AtomicBool,
    /// Pieces done by helpers, ever (shared with status readers).
    helped: Arc<AtomicU64>,
}

// SAFETY: `batch` is written only by the pump while no helper may read it (`open` clear
// and `active` seen zero) and read by helpers only while they hold `active` with `open`
// set; the pointers in it are only used within that window, when the pump keeps the
// batch's buffer and work alive (it is blocked in `Crew::run`).
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointers are only a borrow that `Crew::run` outlives.
unsafe impl Send for Shared {}

impl Shared {
    /// Claims and does pieces until none are left.
    ///
    /// # Safety
    /// `b` must be the open batch, and the caller must keep it open (the pump) or hold
    /// `active` while it is open (a helper).
    unsafe fn work_through(&self, b: Batch) -> u64 {
        let mut done = 0;
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= b.pieces {
                return done;
            }
            let start = i * b.piece_len;
            let len = b.piece_len.min(b.len - start);
            // SAFETY: piece i lies within the buffer and is claimed by this thread alone
            // (the add above hands out each index once), so the slice is not aliased.
            let piece = unsafe { std::slice::from_raw_parts_mut(b.buf.add(start), len) };
            // SAFETY: the work outlives the open batch (see the function's contract).
            let work = unsafe { &*b.work };
            work(i, piece);
            done += 1;
        }
    }
}

/// Helper threads for one pump; see the module docs.
pub struct Crew {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Crew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crew")
            .field("helpers", &self.threads.len())
            .field("helped", &self.pieces_by_helpers())
            .finish()
    }
}

impl Crew {
    /// Starts `helpers` threads (at most [`CREW_HELPERS_MAX`]); with 0, [`Crew::run`]
    /// does everything on the caller's thread.
    pub fn new(helpers: usize, name: &str) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            batch: UnsafeCell::new(Batch {
                buf: std::ptr::null_mut(),
                len: 0,
                piece_len: 1,
                pieces: 0,
                work: &noop as &Work as *const Work,
            }),
            open: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            helped: Arc::new(AtomicU64::new(0)),
        });
        let mut crew = Self {
            shared,
            threads: Vec::new(),
        };
        for n in 0..helpers.min(CREW_HELPERS_MAX) {
            let shared = Arc::clone(&crew.shared);
            // On failure `crew` is dropped, which stops the helpers already started.
            let t = thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || helper(&shared))?;
            crew.threads.push(t);
        }
        Ok(crew)
    }

    /// Helper threads (not counting the caller of [`Crew::run`]).
    pub fn helpers(&self) -> usize {
        self.threads.len()
    }

    /// Pieces done by helpers so far (the rest were done by the pump).
    pub fn pieces_by_helpers(&self) -> u64 {
        self.shared.helped.load(SeqCst)
    }

    /// The counter behind [`Crew::pieces_by_helpers`], to read from other threads.
    pub fn helped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared.helped)
    }

    /// Calls `work(i, piece)` once for each `piece` of `buf.chunks_mut(piece_len)`, on
    /// this thread and the helpers, and returns when all are done.
    ///
    /// # Panics
    /// If `work` panicked on a helper (after all other pieces are done).
    pub fn run(
        &mut self,
        buf: &mut [u8],
        piece_len: usize,
        work: &(dyn Fn(usize, &mut [u8]) + Sync),
    ) {
        let piece_len = piece_len.max(1);
        let pieces = buf.len().div_ceil(piece_len);
        if self.threads.is_empty() || pieces < 2 {
            for (i, p) in buf.chunks_mut(piece_len).enumerate() {
                work(i, p);
            }
            return;
        }
        let s = &*self.shared;
        // SAFETY (erasing the lifetime): the pointer is only dereferenced while the batch
        // is open, and this function closes it and waits out every helper before it
        // returns, i.e. while `work` is still borrowed.
        let work: *const Work = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize, &mut [u8]) + Sync + '_), *const Work>(work)
        };
        let b = Batch {
            buf: buf.as_mut_ptr(),
            len: buf.len(),
            piece_len,
            pieces,
            work,
        };
        // SAFETY: no helper reads the batch now: the last run closed it and saw `active`
        // at zero, and a helper that raised it since found `open` clear and backs off.
        s.batch.with_mut(|p| unsafe { *p = b });
        s.next.store(0, SeqCst);
        s.open.store(true, SeqCst);
        for t in &self.threads {
            t.thread().unpark();
        }
        // SAFETY: the batch is open and stays open until the pump's own pieces run out.
        unsafe { s.work_through(b) };
        s.open.store(false, SeqCst);
        // Pairs with the helper's fence: either this thread sees its `active` below or
        // it sees `open` clear. SeqCst accesses alone promise that too, but loom takes them
        // for AcqRel and checks only fences; it costs one barrier per batch on each side.
        fence(SeqCst);
        let mut spins = 0u32;
        while s.active.load(SeqCst) != 0 {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        if s.panicked.swap(false, SeqCst) {
            panic!("a datapath helper thread panicked while working on a batch");
        }
    }
}

/// The core sleeve engine shares out each batch's sealing and opening through a crew.
impl weft_core::sleeve::Spread for Crew {
    fn spread(
        &mut self,
        buf: &mut [u8],
        piece_len: usize,
        work: &(dyn Fn(usize, &mut [u8]) + Sync),
    ) {
        self.run(buf, piece_len, work);
    }
}

fn noop(_: usize, _: &mut [u8]) {}

fn helper(s: &Shared) {
    loop {
        thread::park();
        if s.stop.load(SeqCst) {
            return;
        }
        s.active.fetch_add(1, SeqCst);
        // Pairs with the pump's fence after it closes the batch (see there).
        fence(SeqCst);
        if s.open.load(SeqCst) {
            // SAFETY: `open` is set and `active` held: the pump keeps the batch alive
            // until it sees `active` drop, and does not rewrite it meanwhile.
            let b = s.batch.with(|p| unsafe { *p });
            // SAFETY: as above.
            match catch_unwind(AssertUnwindSafe(|| unsafe { s.work_through(b) })) {
                Ok(done) => {
                    s.helped.fetch_add(done, SeqCst);
                }
                Err(_) => s.panicked.store(true, SeqCst),
            }
        }
        s.active.fetch_sub(1, SeqCst);
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_piece_is_done_exactly_once_whatever_the_helpers_manage() {
        for helpers in [0, 1, 3] {
            let mut crew = Crew::new(helpers, "test-crew").unwrap();
            assert_eq!(crew.helpers(), helpers);
            for round in 0..2000usize {
                let len = 1 + round % 700;
                let piece_len = 1 + round % 13;
                let mut buf = vec![0u8; len];
                let calls = AtomicUsize::new(0);
                crew.run(&mut buf, piece_len, &|i, p| {
                    calls.fetch_add(1, SeqCst);
                    assert_eq!(p.len(), piece_len.min(len - i * piece_len));
                    for b in p.iter_mut() {
                        *b = b.wrapping_add(1 + (i % 200) as u8);
                    }
                });
                assert_eq!(calls.load(SeqCst), len.div_ceil(piece_len));
                for (j, b) in buf.iter().enumerate() {
                    assert_eq!(*b, 1 + ((j / piece_len) % 200) as u8, "helpers={helpers}");
                }
            }
        }
    }

    #[test]
    fn helpers_take_pieces_when_the_pump_is_slow() {
        let mut crew = Crew::new(1, "test-crew").unwrap();
        let mut buf = vec![0u8; 64];
        let mut rounds = 0;
        // Each piece takes a while, so a woken helper gets some; on a loaded machine it
        // may take a few batches before it is scheduled in time.
        while crew.pieces_by_helpers() == 0 && rounds < 200 {
            crew.run(&mut buf, 1, &|_, p| {
                thread::sleep(std::time::Duration::from_micros(200));
                p[0] += 1;
            });
            rounds += 1;
        }
        assert!(
            crew.pieces_by_helpers() > 0,
            "the helper never took a piece"
        );
        assert!(
            buf.iter().all(|b| *b == rounds),
            "each piece once per batch"
        );
    }

    #[test]
    fn a_panic_on_a_helper_reaches_the_pump_and_the_crew_stops_cleanly() {
        let mut crew = Crew::new(2, "test-crew").unwrap();
        let mut buf = vec![0u8; 64];
        let r = catch_unwind(AssertUnwindSafe(|| {
            for _ in 0..200 {
                crew.run(&mut buf, 1, &|_, _| {
                    thread::sleep(std::time::Duration::from_micros(100));
                    if thread::current().name() != Some("test-crew-0") {
                        return;
                    }
                    panic!("boom");
                });
            }
        }));
        assert!(
            r.is_err(),
            "helper 0 should have taken a piece and panicked"
        );
        drop(crew);
    }
}

/// The crew under loom (`RUSTFLAGS="--cfg loom" cargo test -p weft-uring-dp --release
/// --lib crew`, as `.ci/run` does): every interleaving of the pump and its helpers, up to
/// a preemption bound, over two batches in a row, as the sleeve seals them (datagram `i`
/// of a batch with counter `first + i`). Loom reports a data race on the batch hand-off
/// or on a piece's result, a piece done twice or not at all, and a thread left blocked.
#[cfg(all(test, loom))]
mod model {
    use std::sync::Arc as StdArc;
    use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering::Relaxed};

    use super::*;

    /// Preemptions explored when `LOOM_MAX_PREEMPTIONS` is not set. The hand-off bugs
    /// tried on purpose (claiming without one atomic add, not waiting for `active`, no
    /// fences, not checking `open`) all show with 1; 3 leaves a margin, in seconds.
    const PREEMPTIONS_DEFAULT: usize = 3;
    /// Pieces (datagrams) per batch.
    const PIECES: usize = 3;
    /// Batches per run of the model: the second reuses what the first handed out.
    const BATCHES: usize = 2;

    /// The counter each piece of one batch was sealed with, written by whichever thread
    /// did the piece and read by the pump once `run` returns. Loom checks every access:
    /// two threads on one piece at once, or a read not ordered after the write, fail.
    struct Sealed([UnsafeCell<Option<u64>>; PIECES]);

    // SAFETY: the cells are only reached through `with`/`with_mut`, which loom checks;
    // finding an unordered access is what the model is for.
    unsafe impl Sync for Sealed {}

    impl Sealed {
        fn new() -> Self {
            Self(std::array::from_fn(|_| UnsafeCell::new(None)))
        }

        fn seal(&self, i: usize, counter: u64) {
            self.0[i].with_mut(|c| {
                // SAFETY: see `Sync` above.
                let c = unsafe { &mut *c };
                assert_eq!(*c, None, "piece {i} sealed twice");
                *c = Some(counter);
            });
        }

        fn read(&self, i: usize) -> Option<u64> {
            // SAFETY: see `Sync` above.
            self.0[i].with(|c| unsafe { *c })
        }
    }

    fn check(helpers: usize) {
        // Outside the model (std atomics): interleavings run, and those in which a helper
        // did pieces, so that a model that never reaches a hand-off fails.
        let tally = StdArc::new([StdAtomicUsize::new(0), StdAtomicUsize::new(0)]);
        let seen = StdArc::clone(&tally);
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound.get_or_insert(PREEMPTIONS_DEFAULT);
        builder.check(move || {
            let mut crew = Crew::new(helpers, "loom-crew").unwrap();
            // Kept to the end, so that a helper that touched a finished batch is reported
            // by loom (an unordered access), not undefined behaviour in the model itself.
            let sealed: [Sealed; BATCHES] = std::array::from_fn(|_| Sealed::new());
            let mut bufs = [[0u8; PIECES]; BATCHES];
            let mut next_counter = 0u64;
            let mut counters = Vec::new();
            for (batch, (sealed, buf)) in sealed.iter().zip(&mut bufs).enumerate() {
                let first = next_counter;
                next_counter += PIECES as u64;
                crew.run(buf, 1, &|i, piece| {
                    sealed.seal(i, first + i as u64);
                    piece[0] += 1;
                });
                for i in 0..PIECES {
                    let c = sealed.read(i);
                    assert_eq!(c, Some(first + i as u64), "batch {batch}, piece {i}");
                    counters.extend(c);
                }
                assert_eq!(*buf, [1; PIECES], "batch {batch}: each piece once");
            }
            counters.sort_unstable();
            counters.dedup();
            assert_eq!(counters.len(), BATCHES * PIECES, "a counter used twice");
            seen[0].fetch_add(1, Relaxed);
            if crew.pieces_by_helpers() > 0 {
                seen[1].fetch_add(1, Relaxed);
            }
            drop(crew);
        });
        let [runs, helped] = [0, 1].map(|i| tally[i].load(Relaxed));
        println!("{helpers} helper(s): {runs} interleavings, helpers did pieces in {helped}");
        assert!(helped > 0 && helped < runs, "{helped} of {runs}");
    }

    #[test]
    fn one_helper_every_piece_once_and_seen_by_the_pump() {
        check(1);
    }

    #[test]
    fn two_helpers_never_share_a_piece() {
        check(2);
    }
}
