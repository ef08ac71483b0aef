//! The pieces of the incoming `EVENT` path that the [`Intake`](crate::intake::Intake)
//! is built from: a bounded cache of event ids already verified (so repeats
//! skip signature checks), a per-connection reorder buffer that hands
//! messages on in the order the relay sent them even though their
//! signatures are checked in parallel, and the verification jobs; plus the
//! one piece that is I/O, the pool of verification threads.
//!
//! Order matters: the engine counts a historic page's events when they are
//! handed over and judges the page at its `EOSE`, so an `EOSE` must never
//! overtake the events before it.

use std::collections::{HashMap, VecDeque};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use grasp_sync_core::StoreOutcome;
use nostr::event::{Event, EventId};
use tokio::sync::mpsc;

/// A bounded memory of event ids whose signatures were verified, with what
/// the store did with them. The oldest ids are forgotten first.
#[derive(Debug)]
pub struct SeenIds {
    capacity: usize,
    outcomes: HashMap<EventId, StoreOutcome>,
    order: VecDeque<EventId>,
}

impl SeenIds {
    /// A cache holding at most `capacity` ids (0 disables it).
    pub fn new(capacity: usize) -> Self {
        SeenIds {
            capacity,
            outcomes: HashMap::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
        }
    }

    /// What the store did with `id`, if it is remembered. A remembered
    /// `Stored` reads as `Duplicate`: the event is already there.
    pub fn get(&self, id: &EventId) -> Option<StoreOutcome> {
        self.outcomes.get(id).map(|o| match o {
            StoreOutcome::Stored => StoreOutcome::Duplicate,
            other => *other,
        })
    }

    /// Remembers `id` with the store's outcome.
    pub fn insert(&mut self, id: EventId, outcome: StoreOutcome) {
        if self.capacity == 0 {
            return;
        }
        if self.outcomes.insert(id, outcome).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.outcomes.remove(&old);
                }
            }
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
}

/// Events of one connection to verify, each with its place in the
/// connection's reorder buffer.
#[derive(Debug)]
pub struct VerifyJob<K> {
    /// Who the events came from (returned untouched).
    pub key: K,
    /// (sequence number, event).
    pub events: Vec<(u64, Box<Event>)>,
}

/// The verdicts of a [`VerifyJob`].
#[derive(Debug)]
pub struct VerifyDone<K> {
    /// The job's key.
    pub key: K,
    /// (sequence number, event, id and signature valid).
    pub results: Vec<(u64, Box<Event>, bool)>,
}

/// Threads that verify event ids and signatures (Schnorr verification is
/// about 95 % of the cost of taking an event in, so it runs off the async
/// reactor, on as many threads as there are cores).
#[derive(Debug)]
pub struct VerifierPool<K> {
    jobs: Option<std_mpsc::Sender<VerifyJob<K>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl<K: Send + 'static> VerifierPool<K> {
    /// Starts `threads` verifiers (0: one per available core) that send
    /// their verdicts to `done` (as whatever the receiver's message type is,
    /// so a host can share one completion channel).
    pub fn start<T>(threads: usize, done: mpsc::UnboundedSender<T>) -> Self
    where
        T: From<VerifyDone<K>> + Send + 'static,
    {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = std_mpsc::channel::<VerifyJob<K>>();
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..threads)
            .map(|i| {
                let rx = Arc::clone(&rx);
                let done = done.clone();
                std::thread::Builder::new()
                    .name(format!("grasp-verify-{i}"))
                    .spawn(move || loop {
                        // The lock is held only to take one job.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let results = job
                            .events
                            .into_iter()
                            .map(|(seq, event)| {
                                let ok = event.verify().is_ok();
                                (seq, event, ok)
                            })
                            .collect();
                        let verdicts = VerifyDone {
                            key: job.key,
                            results,
                        };
                        if done.send(T::from(verdicts)).is_err() {
                            return;
                        }
                    })
                    .expect("spawning a verifier thread")
            })
            .collect();
        VerifierPool {
            jobs: Some(tx),
            threads: handles,
        }
    }

    /// Queues a job. Returns it back when the pool is shut down.
    pub fn submit(&self, job: VerifyJob<K>) -> Result<(), VerifyJob<K>> {
        match &self.jobs {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl<K> Drop for VerifierPool<K> {
    fn drop(&mut self) {
        // Closing the queue ends every thread after its current job.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A reorder buffer: items enter in arrival order, some ready at once and
/// some later (after verification), and leave strictly in arrival order.
#[derive(Debug)]
pub struct Inbox<T> {
    next_seq: u64,
    front_seq: u64,
    slots: VecDeque<Option<T>>,
}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Inbox {
            next_seq: 0,
            front_seq: 0,
            slots: VecDeque::new(),
        }
    }
}

impl<T> Inbox<T> {
    /// Reserves the next place; fill it with [`Inbox::fill`].
    pub fn reserve(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(None);
        seq
    }

    /// Appends an item that is ready now.
    pub fn push_ready(&mut self, item: T) {
        let seq = self.reserve();
        self.fill(seq, item);
    }

    /// Fills a reserved place. Unknown or already released places are
    /// ignored.
    pub fn fill(&mut self, seq: u64, item: T) {
        if seq < self.front_seq {
            return;
        }
        if let Some(slot) = self.slots.get_mut((seq - self.front_seq) as usize) {
            *slot = Some(item);
        }
    }

    /// Takes the next item if it is ready.
    pub fn pop_ready(&mut self) -> Option<T> {
        match self.slots.front() {
            Some(Some(_)) => {
                self.front_seq += 1;
                self.slots.pop_front().flatten()
            }
            _ => None,
        }
    }

    /// Items waiting (ready or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EventId {
        EventId::from_byte_array([n; 32])
    }

    #[test]
    fn seen_ids_are_bounded_and_fifo() {
        let mut seen = SeenIds::new(2);
        seen.insert(id(1), StoreOutcome::Stored);
        seen.insert(id(2), StoreOutcome::Rejected);
        assert_eq!(seen.get(&id(1)), Some(StoreOutcome::Duplicate));
        assert_eq!(seen.get(&id(2)), Some(StoreOutcome::Rejected));
        seen.insert(id(3), StoreOutcome::Stored);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen.get(&id(1)), None);
        // Re-inserting updates without growing.
        seen.insert(id(3), StoreOutcome::Rejected);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen.get(&id(3)), Some(StoreOutcome::Rejected));
        let mut off = SeenIds::new(0);
        off.insert(id(1), StoreOutcome::Stored);
        assert!(off.is_empty());
    }

    #[test]
    fn inbox_releases_in_arrival_order() {
        let mut inbox = Inbox::default();
        let a = inbox.reserve();
        inbox.push_ready("eose");
        let b = inbox.reserve();
        assert_eq!(inbox.pop_ready(), None);
        inbox.fill(b, "event b");
        assert_eq!(inbox.pop_ready(), None);
        inbox.fill(a, "event a");
        assert_eq!(inbox.pop_ready(), Some("event a"));
        assert_eq!(inbox.pop_ready(), Some("eose"));
        assert_eq!(inbox.pop_ready(), Some("event b"));
        assert!(inbox.is_empty());
        inbox.fill(a, "stale");
        assert_eq!(inbox.pop_ready(), None);
    }

    #[tokio::test]
    async fn verifier_pool_flags_forgeries() {
        let keys = nostr::key::Keys::parse(
            "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e",
        )
        .unwrap();
        use nostr::event::FinalizeEvent;
        let good = nostr::event::EventBuilder::new(nostr::event::Kind::TextNote, "hi")
            .finalize(&keys)
            .unwrap();
        let mut forged_json: serde_json::Value = serde_json::from_str(&good.as_json()).unwrap();
        forged_json["content"] = "changed".into();
        let forged = Event::from_json(forged_json.to_string()).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel::<VerifyDone<u32>>();
        let pool = VerifierPool::start(2, tx);
        assert_eq!(pool.threads(), 2);
        pool.submit(VerifyJob {
            key: 7u32,
            events: vec![(0, Box::new(good)), (1, Box::new(forged))],
        })
        .unwrap();
        let done = rx.recv().await.unwrap();
        assert_eq!(done.key, 7);
        let verdicts: Vec<(u64, bool)> = done.results.iter().map(|r| (r.0, r.2)).collect();
        assert_eq!(verdicts, vec![(0, true), (1, false)]);
    }
}
