//! A lazily sized broadcast ring: one sender, many receivers, each receiver sees every value
//! sent after it joined, in order, or learns that it fell a whole ring behind (`Lagged`).
//!
//! Unlike `tokio::sync::broadcast`, which allocates all its slots up front (a 1,024-slot ring
//! of deliveries is ~80 KiB the moment a channel gets its first subscriber), this ring holds
//! only values some receiver has not read yet: its buffer grows on demand up to the cap and is
//! released again once everyone has caught up. An idle channel costs a few hundred bytes.
//!
//! Its unread values are bounded in count (`capacity`) and, for [`channel_bounded`], in bytes
//! too: a value that would pass either bound pushes the oldest out (receivers that had not
//! read it lag). The newest value is always kept, however large.
//!
//! One mutex guards the state; a receiver takes every ready value in one lock
//! ([`Receiver::try_recv_many`]), so a batch of frames costs one lock, not one per frame.
//! A receiver that has read everything learns so without the lock (the ring's tail and its
//! closed flag are mirrored in atomics), and it re-arms its waker in the same lock that took
//! its last value, so a fan-out wake-up costs each receiver one lock. Senders wake receivers
//! after releasing the lock, so woken receivers do not queue on it.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

/// A receiver fell behind by this many values: they are gone from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

/// A buffer that has grown past this many slots is released as soon as it is empty (smaller
/// ones are kept for the next burst until [`Sender::shrink_idle`]).
const RELEASE_ABOVE: usize = 64;

struct Slot<T> {
    value: T,
    /// Receivers that have not read this value yet.
    unread: u32,
}

struct State<T> {
    buf: VecDeque<Slot<T>>,
    /// Position of `buf[0]` (positions count every value ever sent).
    head: u64,
    receivers: u32,
    /// One waker slot per receiver (indexed by its id), filled while it waits.
    waiters: Vec<Option<Waker>>,
    free_ids: Vec<u32>,
    closed: bool,
    /// Weight (bytes) of the values in `buf`.
    bytes: usize,
}

impl<T> State<T> {
    fn tail(&self) -> u64 {
        self.head + self.buf.len() as u64
    }

    /// Drops the oldest value.
    fn pop_oldest(&mut self, weigh: fn(&T) -> usize) {
        if let Some(slot) = self.buf.pop_front() {
            self.bytes -= weigh(&slot.value);
            self.head += 1;
        }
    }

    /// Drops the values every receiver has read.
    fn trim(&mut self, weigh: fn(&T) -> usize) {
        while self.buf.front().is_some_and(|s| s.unread == 0) {
            self.pop_oldest(weigh);
        }
        if self.buf.is_empty() && self.buf.capacity() > RELEASE_ABOVE {
            self.buf = VecDeque::new();
        }
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// `state.tail()`, stored under the lock after every send: a receiver whose position
    /// equals it has nothing to read, which it can see without the lock.
    tail: AtomicU64,
    /// `state.closed`, mirrored like `tail`.
    closed: AtomicBool,
    capacity: usize,
    /// Most bytes (by `weigh`) of unread values.
    max_bytes: usize,
    weigh: fn(&T) -> usize,
}

/// Takes every waiting receiver's waker and wakes them once the lock is released, so woken
/// receivers do not queue on it.
fn wake_all<T>(mut state: MutexGuard<'_, State<T>>) {
    let waiting: Vec<Waker> = state.waiters.iter_mut().filter_map(Option::take).collect();
    drop(state);
    for waker in waiting {
        waker.wake();
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side; dropping it ends every receiver's stream once drained.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// A ring of at most `capacity` unread values (at least 1). Nothing is allocated until a value
/// is sent while someone listens.
pub fn channel<T: Clone>(capacity: usize) -> Sender<T> {
    channel_bounded(capacity, usize::MAX, |_| 0)
}

/// A ring of at most `capacity` unread values weighing at most `max_bytes` together (by
/// `weigh`; the newest value is kept even if it alone weighs more).
pub fn channel_bounded<T: Clone>(
    capacity: usize,
    max_bytes: usize,
    weigh: fn(&T) -> usize,
) -> Sender<T> {
    let state = State {
        buf: VecDeque::new(),
        head: 0,
        receivers: 0,
        waiters: Vec::new(),
        free_ids: Vec::new(),
        closed: false,
        bytes: 0,
    };
    let shared = Shared {
        state: Mutex::new(state),
        tail: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        capacity: capacity.max(1),
        max_bytes,
        weigh,
    };
    Sender { shared: Arc::new(shared) }
}

impl<T: Clone> Sender<T> {
    /// Appends `value` for every current receiver and wakes those waiting; returns how many
    /// receivers there are (0: the value was dropped). A full ring (by count or bytes) drops
    /// its oldest values, and receivers that had not read them lag.
    pub fn send(&self, value: T) -> usize {
        let mut state = self.shared.lock();
        let receivers = state.receivers;
        if receivers == 0 {
            return 0;
        }
        let (weigh, capacity, max_bytes) =
            (self.shared.weigh, self.shared.capacity, self.shared.max_bytes);
        let weight = weigh(&value);
        while !state.buf.is_empty()
            && (state.buf.len() >= capacity || state.bytes.saturating_add(weight) > max_bytes)
        {
            state.pop_oldest(weigh);
        }
        state.bytes += weight;
        state.buf.push_back(Slot { value, unread: receivers });
        self.shared.tail.store(state.tail(), Ordering::Release);
        wake_all(state);
        receivers as usize
    }

    /// A receiver that sees every value sent from now on.
    pub fn subscribe(&self) -> Receiver<T> {
        let mut state = self.shared.lock();
        state.receivers += 1;
        let id = match state.free_ids.pop() {
            Some(id) => id,
            None => {
                state.waiters.push(None);
                (state.waiters.len() - 1) as u32
            }
        };
        Receiver { shared: self.shared.clone(), pos: state.tail(), id, armed: None }
    }

    pub fn receiver_count(&self) -> usize {
        self.shared.lock().receivers as usize
    }

    /// Releases the buffer if nothing is unread (called periodically for idle channels).
    pub fn shrink_idle(&self) {
        let mut state = self.shared.lock();
        if state.buf.is_empty() {
            state.buf = VecDeque::new();
        }
        let live = state.receivers as usize;
        if live == 0 {
            state.waiters = Vec::new();
            state.free_ids = Vec::new();
        } else if state.waiters.capacity() > 2 * state.waiters.len().max(4) {
            state.waiters.shrink_to_fit();
        }
    }

    /// Bytes (by the ring's weigher) of the values still unread by someone.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Slots the buffer has allocated (0 for an idle ring).
    pub fn allocated_slots(&self) -> usize {
        self.shared.lock().buf.capacity()
    }

    /// Heap bytes this ring holds, not counting what the values themselves point to.
    pub fn heap_bytes(&self) -> usize {
        let state = self.shared.lock();
        std::mem::size_of::<Shared<T>>()
            + 2 * std::mem::size_of::<usize>() // the Arc's counts
            + state.buf.capacity() * std::mem::size_of::<Slot<T>>()
            + state.waiters.capacity() * std::mem::size_of::<Option<Waker>>()
            + state.free_ids.capacity() * std::mem::size_of::<u32>()
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.closed.store(true, Ordering::Release);
        wake_all(state);
    }
}

/// The receiving side: a `Stream` of values (or one `Lagged` per gap).
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// Position of the next value to read.
    pos: u64,
    id: u32,
    /// The waker left in this receiver's slot when it last found nothing more to read; the
    /// slot still holds it while no value was sent since (a send takes every waker).
    armed: Option<Waker>,
}

impl<T: Clone> Receiver<T> {
    /// Whether nothing was sent since this receiver read its last value (no lock taken).
    fn caught_up(&self) -> bool {
        self.shared.tail.load(Ordering::Acquire) == self.pos
            && !self.shared.closed.load(Ordering::Acquire)
    }

    /// Takes the next value if one is ready: `Ok(None)` when there is none yet.
    pub fn try_recv(&mut self) -> Result<Option<T>, Lagged> {
        let mut state = self.shared.lock();
        let taken = take(&mut self.pos, &mut state, self.shared.weigh);
        if !matches!(taken, Ok(None)) {
            self.armed = None; // a send took the armed waker; the next poll re-arms
        }
        taken
    }

    /// Appends up to `max` ready values to `out` under one lock; returns how many it took.
    /// On a gap it stops and returns `Lagged` (values taken before it are in `out`).
    pub fn try_recv_many(&mut self, out: &mut Vec<T>, max: usize) -> Result<usize, Lagged> {
        if max == 0 || self.caught_up() {
            return Ok(0);
        }
        let mut state = self.shared.lock();
        // Anything found here was sent after the waker was armed, and that send took it.
        self.armed = None;
        let mut taken = 0;
        while taken < max {
            match take(&mut self.pos, &mut state, self.shared.weigh)? {
                Some(value) => {
                    out.push(value);
                    taken += 1;
                }
                None => break,
            }
        }
        Ok(taken)
    }
}

/// Reads the value at `pos` for a receiver, or reports the gap if it was dropped.
fn take<T: Clone>(
    pos: &mut u64,
    state: &mut State<T>,
    weigh: fn(&T) -> usize,
) -> Result<Option<T>, Lagged> {
    if *pos < state.head {
        let missed = state.head - *pos;
        *pos = state.head;
        return Err(Lagged(missed));
    }
    let index = (*pos - state.head) as usize;
    let Some(slot) = state.buf.get_mut(index) else { return Ok(None) };
    slot.unread -= 1;
    let value = slot.value.clone();
    *pos += 1;
    if index == 0 {
        state.trim(weigh);
    }
    Ok(Some(value))
}

impl<T: Clone> futures::Stream for Receiver<T> {
    type Item = Result<T, Lagged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Still armed for this task and nothing sent since: no lock needed.
        if this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && this.caught_up() {
            return Poll::Pending;
        }
        let weigh = this.shared.weigh;
        let mut state = this.shared.lock();
        let polled = match take(&mut this.pos, &mut state, weigh) {
            Err(lagged) => Poll::Ready(Some(Err(lagged))),
            Ok(Some(value)) => Poll::Ready(Some(Ok(value))),
            Ok(None) if state.closed => return Poll::Ready(None),
            Ok(None) => Poll::Pending,
        };
        // Read up to the tail: arm the waker now, in this lock, so the next poll needs none
        // (a value returned here is taken before that poll; waking early is harmless).
        if this.pos == state.tail() && !state.closed {
            let waiter = &mut state.waiters[this.id as usize];
            if !waiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waiter = Some(cx.waker().clone());
            }
            if !this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                this.armed = Some(cx.waker().clone());
            }
        } else {
            this.armed = None;
        }
        polled
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("pos", &self.pos).field("id", &self.id).finish()
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("capacity", &self.shared.capacity).finish()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let from = self.pos.max(state.head);
        for pos in from..state.tail() {
            let index = (pos - state.head) as usize;
            state.buf[index].unread -= 1;
        }
        state.trim(self.shared.weigh);
        state.receivers -= 1;
        state.waiters[self.id as usize] = None;
        state.free_ids.push(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn every_receiver_sees_every_value_after_it_joined_in_order() {
        let tx = channel(8);
        let mut early = tx.subscribe();
        tx.send(1);
        let mut late = tx.subscribe();
        tx.send(2);
        tx.send(3);
        let mut got = Vec::new();
        early.try_recv_many(&mut got, 10).unwrap();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(late.try_recv(), Ok(Some(2)));
        assert_eq!(late.try_recv(), Ok(Some(3)));
        assert_eq!(late.try_recv(), Ok(None));
    }

    #[test]
    fn a_receiver_a_whole_ring_behind_lags_then_resumes_at_the_oldest_kept_value() {
        let tx = channel(2);
        let mut slow = tx.subscribe();
        for v in 1..=5 {
            tx.send(v);
        }
        assert_eq!(slow.try_recv(), Err(Lagged(3)));
        assert_eq!(slow.try_recv(), Ok(Some(4)));
        assert_eq!(slow.try_recv(), Ok(Some(5)));
        assert_eq!(slow.try_recv(), Ok(None));
        tx.shrink_idle();
        assert_eq!(tx.allocated_slots(), 0, "read by everyone, an idle ring holds nothing");
    }

    #[test]
    fn values_read_by_every_receiver_are_released() {
        let tx = channel(1024);
        let mut a = tx.subscribe();
        let mut b = tx.subscribe();
        for v in 0..10 {
            tx.send(v);
        }
        let mut out = Vec::new();
        a.try_recv_many(&mut out, 100).unwrap();
        assert!(tx.allocated_slots() >= 10, "b has not read them yet");
        assert_eq!(b.try_recv(), Ok(Some(0)));
        drop(b); // a leaving receiver releases its unread values
        tx.shrink_idle();
        assert_eq!(tx.allocated_slots(), 0);
        assert_eq!(tx.receiver_count(), 1);
    }

    #[test]
    fn a_ring_holds_at_most_its_bytes_and_always_the_newest_value() {
        let tx = channel_bounded(100, 10, |v: &String| v.len());
        let mut slow = tx.subscribe();
        for v in ["aaaa", "bbbb", "cccc"] {
            tx.send(v.to_owned());
        }
        assert_eq!(tx.buffered_bytes(), 8, "the third pushed the first out");
        assert_eq!(slow.try_recv(), Err(Lagged(1)));
        assert_eq!(slow.try_recv(), Ok(Some("bbbb".to_owned())));
        tx.send("x".repeat(25));
        assert_eq!(tx.buffered_bytes(), 25, "an oversized value is kept alone");
        assert_eq!(slow.try_recv(), Err(Lagged(1)));
        assert_eq!(slow.try_recv(), Ok(Some("x".repeat(25))));
        assert_eq!(tx.buffered_bytes(), 0, "read by everyone, nothing is held");
        drop(slow);
        let mut a = tx.subscribe();
        tx.send("12345".to_owned());
        drop(tx.subscribe()); // a receiver leaving releases nothing a stays on
        assert_eq!(tx.buffered_bytes(), 5);
        assert_eq!(a.try_recv(), Ok(Some("12345".to_owned())));
        assert_eq!(tx.buffered_bytes(), 0);
    }

    #[test]
    fn nothing_is_kept_without_receivers() {
        let tx = channel(16);
        assert_eq!(tx.send(1), 0);
        assert_eq!(tx.allocated_slots(), 0);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_and_ends_when_the_sender_goes() {
        let tx = channel(4);
        let mut rx = tx.subscribe();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = rx.next().await {
                got.push(item.unwrap());
            }
            got
        });
        tokio::task::yield_now().await;
        tx.send("a");
        tx.send("b");
        drop(tx);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("reader ended")
            .unwrap();
        assert_eq!(got, ["a", "b"]);
    }

    /// A waker that counts its wake-ups.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let count = Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_receiver_that_read_everything_is_armed_and_woken_by_the_next_send() {
        let tx = channel(8);
        let mut rx = tx.subscribe();
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        tx.send(1);
        // Taking the last value arms the waker in the same lock…
        assert_eq!(rx.poll_next_unpin(&mut cx), Poll::Ready(Some(Ok(1))));
        // …so polling again finds nothing without the lock, and stays armed.
        assert_eq!(rx.poll_next_unpin(&mut cx), Poll::Pending);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        tx.send(2);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the armed waker is woken");
        assert_eq!(rx.poll_next_unpin(&mut cx), Poll::Ready(Some(Ok(2))));
        tx.send(3);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2, "re-armed while taking 2");
        // Values taken outside `poll_next` disarm it: the next poll must arm again, in a lock.
        let mut out = Vec::new();
        assert_eq!(rx.try_recv_many(&mut out, 8), Ok(1));
        assert_eq!(rx.poll_next_unpin(&mut cx), Poll::Pending);
        tx.send(4);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 3, "a wake-up after try_recv_many");
        assert_eq!(rx.try_recv(), Ok(Some(4)));
        assert_eq!(rx.poll_next_unpin(&mut cx), Poll::Pending);
        drop(tx);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 4, "closing wakes the armed receiver");
        assert_eq!(rx.poll_next_unpin(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn a_new_waker_is_armed_in_place_of_the_old_one() {
        let tx = channel(8);
        let mut rx = tx.subscribe();
        let (old_wakes, old) = counting_waker();
        let (new_wakes, new) = counting_waker();
        assert_eq!(rx.poll_next_unpin(&mut Context::from_waker(&old)), Poll::Pending);
        assert_eq!(rx.poll_next_unpin(&mut Context::from_waker(&new)), Poll::Pending);
        tx.send(1);
        assert_eq!(old_wakes.0.load(Ordering::SeqCst), 0);
        assert_eq!(new_wakes.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_wake_up_is_lost_between_threads() {
        const SENT: u64 = 20_000;
        let tx = channel(SENT as usize);
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let mut rx = tx.subscribe();
                tokio::spawn(async move {
                    let mut expected = 0;
                    while let Some(item) = rx.next().await {
                        assert_eq!(item, Ok(expected), "in order, none skipped");
                        expected += 1;
                    }
                    expected
                })
            })
            .collect();
        let sender = std::thread::spawn(move || {
            for value in 0..SENT {
                tx.send(value);
                if value % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        sender.join().unwrap();
        for reader in readers {
            let got = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
                .await
                .expect("every reader reaches the end: no wake-up lost")
                .unwrap();
            assert_eq!(got, SENT);
        }
    }
}
