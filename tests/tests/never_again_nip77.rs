//! Regression tests for "never again" items 9 and 10 of the behaviour
//! contract (`/work/shared/spec/grasp-02-sync.md`, section 10), the two
//! that concern NIP-77 reconciliation; `never_again.rs` holds the others.
//!
//! One relay that speaks NIP-77 (it says so in NIP-11) is played by hand
//! through [`Driver`]: it answers NEG-OPEN and NEG-MSG with the negentropy
//! crate as responder, pages with `limit`, `since` and `until`, and the
//! host's store here can refuse chosen events. Every assertion is on what
//! crossed the wire (NEG-OPENs, `{"ids":…}` REQs, events sent) or on the
//! engine's status.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use grasp_sync_core::nip77::respond;
use grasp_sync_core::{
    is_catalog_kind, Command, Config, Input, LocalItem, Nip77Support, RelayInfo, RelayStatus,
    RelayUrl, StoreOutcome, SubscriptionMode,
};
use grasp_sync_sim::fixtures::{self, announcement, comment, coord, root, Driver, T0};
use nostr::event::{Event, EventId};
use nostr::filter::{Filter, MatchEventOptions};
use nostr::message::SubscriptionId;

const RELAY: &str = "wss://neg.example";

/// One NIP-77 relay and the host's store, answering the engine's commands.
struct NegRelay {
    url: RelayUrl,
    theirs: Vec<Event>,
    /// The host's store.
    ours: BTreeMap<EventId, Event>,
    /// Ids the host's store refuses (a policy, a size limit…).
    refuses: BTreeSet<EventId>,
    negs: BTreeMap<SubscriptionId, Filter>,
    /// What crossed the wire.
    neg_opens: usize,
    id_fetches: usize,
    events_sent: usize,
    sent_again: usize,
    sent: BTreeSet<EventId>,
    /// Commands not served yet.
    pending: Vec<Command>,
}

impl NegRelay {
    fn new(theirs: Vec<Event>) -> Self {
        NegRelay {
            url: fixtures::url(RELAY),
            theirs,
            ours: BTreeMap::new(),
            refuses: BTreeSet::new(),
            negs: BTreeMap::new(),
            neg_opens: 0,
            id_fetches: 0,
            events_sent: 0,
            sent_again: 0,
            sent: BTreeSet::new(),
            pending: Vec::new(),
        }
    }

    /// Counts only what the next [`NegRelay::serve`] sends.
    fn reset_counts(&mut self) {
        self.neg_opens = 0;
        self.id_fetches = 0;
        self.events_sent = 0;
        self.sent_again = 0;
    }

    fn items<'a>(events: impl Iterator<Item = &'a Event>, f: &Filter) -> Vec<LocalItem> {
        events
            .filter(|e| f.match_event(e, MatchEventOptions::new()))
            .map(|e| (e.id, e.created_at))
            .collect()
    }

    /// A REQ's answer: per filter, the newest `limit` matching events.
    fn answer(&self, filters: &[Filter]) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for f in filters {
            let mut matching: Vec<&Event> = self
                .theirs
                .iter()
                .filter(|e| f.match_event(e, MatchEventOptions::new()))
                .collect();
            matching.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
            for e in matching.into_iter().take(f.limit.unwrap_or(usize::MAX)) {
                if !out.iter().any(|x| x.id == e.id) {
                    out.push(e.clone());
                }
            }
        }
        out
    }

    /// Answers commands (and the commands those cause) until none is left.
    fn serve(&mut self, d: &mut Driver, first: Vec<Command>) {
        let r = self.url.clone();
        let mut todo: VecDeque<Command> = first.into();
        let mut steps = 0;
        while let Some(c) = todo.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "no end to the work");
            let caused = match c {
                Command::FetchRelayInfo { .. } => d.input(Input::RelayInfo {
                    relay: &r,
                    info: RelayInfo {
                        supported_nips: vec![1, 11, 77],
                        ..RelayInfo::default()
                    },
                }),
                Command::Connect { .. } => d.input(Input::Connected { relay: &r }),
                Command::QueryLocalItems {
                    request, filter, ..
                } => {
                    let items = Self::items(self.ours.values(), &filter);
                    d.input(Input::LocalItems {
                        relay: &r,
                        request,
                        items: Some(&items),
                    })
                }
                Command::NegOpen {
                    subscription,
                    filter,
                    message,
                    ..
                } => {
                    self.neg_opens += 1;
                    let answer = respond(Self::items(self.theirs.iter(), &filter), &message)
                        .expect("a negentropy message");
                    self.negs.insert(subscription.clone(), filter);
                    d.input(Input::NegMsg {
                        relay: &r,
                        subscription: &subscription,
                        message: &answer,
                    })
                }
                Command::NegMsg {
                    subscription,
                    message,
                    ..
                } => {
                    let filter = self.negs[&subscription].clone();
                    let answer = respond(Self::items(self.theirs.iter(), &filter), &message)
                        .expect("a negentropy message");
                    d.input(Input::NegMsg {
                        relay: &r,
                        subscription: &subscription,
                        message: &answer,
                    })
                }
                Command::NegClose { subscription, .. } => {
                    self.negs.remove(&subscription);
                    Vec::new()
                }
                Command::Subscribe {
                    subscription,
                    filters,
                    mode: SubscriptionMode::Historic,
                    ..
                } => {
                    if filters.iter().all(|f| f.ids.is_some()) {
                        self.id_fetches += 1;
                    }
                    let mut caused = Vec::new();
                    for e in self.answer(&filters) {
                        self.events_sent += 1;
                        if !self.sent.insert(e.id) {
                            self.sent_again += 1;
                        }
                        caused.extend(self.deliver(d, &subscription, e));
                    }
                    caused.extend(d.input(Input::Eose {
                        relay: &r,
                        subscription: &subscription,
                    }));
                    caused
                }
                Command::Subscribe { subscription, .. } => d.input(Input::Eose {
                    relay: &r,
                    subscription: &subscription,
                }),
                _ => Vec::new(),
            };
            todo.extend(caused);
        }
    }

    /// One event from the relay through the host's event path.
    fn deliver(&mut self, d: &mut Driver, sub: &SubscriptionId, e: Event) -> Vec<Command> {
        let r = self.url.clone();
        let mut caused = d.input(Input::EventReceived {
            relay: &r,
            subscription: sub,
            event: &e,
        });
        let outcome = if self.refuses.contains(&e.id) {
            StoreOutcome::Rejected
        } else if self.ours.contains_key(&e.id) {
            StoreOutcome::Duplicate
        } else {
            StoreOutcome::Stored
        };
        caused.extend(d.input(Input::EventStored {
            relay: &r,
            id: e.id,
            created_at: e.created_at.as_secs(),
            outcome,
        }));
        if outcome == StoreOutcome::Stored {
            if is_catalog_kind(e.kind.as_u16()) {
                caused.extend(d.input(Input::CatalogEvent(&e)));
            }
            self.ours.insert(e.id, e);
        }
        caused
    }
}

fn config() -> Config {
    let mut c = fixtures::config();
    c.nip77 = true;
    c
}

/// A repo announced for [`RELAY`] with `issues` issues, each with a comment.
fn repo_history(issues: u64) -> (Event, Vec<Event>) {
    let ann = announcement(1, "repo", T0 - 100_000, &[RELAY], true);
    let c = coord(1, "repo");
    let mut events = Vec::new();
    for i in 0..issues {
        let issue = root(
            1621,
            10 + (i % 7) as u32,
            T0 - 50_000 + i * 13,
            &c,
            &format!("issue {i}"),
        );
        let reply = comment(
            40,
            T0 - 40_000 + i * 13,
            &c,
            &issue.id,
            &format!("reply {i}"),
        );
        events.push(issue);
        events.push(reply);
    }
    (ann, events)
}

/// An engine that knows the announcement, and the relay holding it and
/// `history`; the commands so far wait in `relay.pending`.
fn world(history: &[Event], ann: &Event, c: Config) -> (Driver, NegRelay) {
    let mut d = Driver::new(c);
    let pending = d.input(Input::CatalogEvent(ann));
    let mut theirs = vec![ann.clone()];
    theirs.extend(history.iter().cloned());
    let mut relay = NegRelay::new(theirs);
    relay.ours.insert(ann.id, ann.clone());
    relay.pending = pending;
    (d, relay)
}

fn status(d: &Driver) -> RelayStatus {
    let url = fixtures::url(RELAY);
    d.engine
        .status()
        .relays
        .into_iter()
        .find(|r| r.url == url)
        .expect("the relay is known")
}

/// Runs until the next daily pass has been served; returns its time.
fn daily_pass(d: &mut Driver, relay: &mut NegRelay) {
    let at = status(d).next_resync.expect("a daily pass is scheduled");
    d.now = at.plus(Duration::from_secs(1));
    let cs = d.input(Input::Tick);
    relay.serve(d, cs);
}

/// Serves the commands so far, then runs timers until the relay's history
/// is done (the batch delay lets new targets gather first).
fn first_sync(d: &mut Driver, relay: &mut NegRelay) {
    let mut cs = std::mem::take(&mut relay.pending);
    cs.extend(d.drain());
    relay.serve(d, cs);
    for _ in 0..100 {
        let Some(next) = d.engine.next_wakeup() else {
            break;
        };
        if next > d.now.plus(Duration::from_secs(60)) {
            break;
        }
        d.now = next;
        let cs = d.input(Input::Tick);
        relay.serve(d, cs);
    }
}

// ----- item 9 ----------------------------------------------------------------

/// "Negentropy disabled forever because rejected events counted as
/// missing." Ids the store refused are reconciled as ours: they are never
/// fetched again, the relay's NIP-77 is never taken for broken, and pass
/// after pass costs only what is new.
#[test]
fn never_again_09_rejected_events_are_not_missing_and_keep_nip77_on() {
    let (ann, history) = repo_history(60);
    let (mut d, mut relay) = world(&history, &ann, config());
    // The store refuses five comments, whatever the reason.
    let refused: Vec<EventId> = history.iter().skip(1).step_by(24).map(|e| e.id).collect();
    assert_eq!(refused.len(), 5);
    relay.refuses.extend(refused.iter().copied());
    first_sync(&mut d, &mut relay);
    let rejected = status(&d).stats.events_rejected;
    assert!(rejected >= 5, "each refused at least once");
    assert_eq!(relay.ours.len(), 1 + 120 - 5);

    for pass in 1..=3 {
        // Something new on the relay between passes.
        let c = coord(1, "repo");
        let fresh = root(1621, 77, d.now.as_secs() - 10, &c, &format!("new {pass}"));
        relay.theirs.push(fresh.clone());
        relay.reset_counts();
        daily_pass(&mut d, &mut relay);
        let st = status(&d);
        assert!(relay.neg_opens > 0, "pass {pass}: NIP-77 is used");
        assert_eq!(st.nip77, Nip77Support::Supported, "pass {pass}");
        assert_eq!(
            st.stats.reconcile_fallbacks, 0,
            "pass {pass}: {:?}",
            st.stats
        );
        assert!(st.stats.refusals.is_empty(), "pass {pass}: {:?}", st.stats);
        assert_eq!(
            relay.events_sent, 1,
            "pass {pass}: only the new issue crosses the wire, never a refused one"
        );
        assert!(relay.ours.contains_key(&fresh.id));
        assert_eq!(
            st.stats.events_rejected, rejected,
            "pass {pass}: refused events are never fetched again"
        );
    }
}

// ----- item 10 ---------------------------------------------------------------

/// "Negentropy run against an empty local set (downloads everything
/// again)." With nothing local for a filter, NIP-77 would list every id the
/// relay holds and then fetch each by id: the filter is paged instead. Once
/// the store holds the history, the daily pass reconciles.
#[test]
fn never_again_10_an_empty_store_is_paged_not_reconciled() {
    let (ann, history) = repo_history(150);
    let (mut d, mut relay) = world(&history, &ann, config());
    first_sync(&mut d, &mut relay);
    let st = status(&d);
    assert_eq!(relay.ours.len(), 1 + 300, "everything arrived");
    assert_eq!(relay.id_fetches, 0, "no {{\"ids\":…}} REQ on a first sync");
    // Paged: only page boundaries cross the wire twice (not 300 NIP-77 ids
    // and then the same 300 events by id).
    assert!(relay.sent_again <= 5, "{} sent twice", relay.sent_again);
    assert_eq!(st.stats.reconcile_ids_needed, 0, "{:?}", st.stats);
    assert_eq!(
        st.stats.reconcile_fallbacks, 0,
        "paging by choice is no fallback"
    );
    assert!(st.stats.reconcile_declined > 0, "{:?}", st.stats);
    assert_ne!(st.nip77, Nip77Support::Unsupported);
    assert_eq!(st.confirmed, st.targets, "{st:?}");

    // The daily pass over a full store reconciles and downloads nothing.
    relay.reset_counts();
    daily_pass(&mut d, &mut relay);
    let st = status(&d);
    assert!(relay.neg_opens > 0);
    assert_eq!(relay.events_sent, 0, "{:?}", st.stats);
    assert_eq!(st.nip77, Nip77Support::Supported);
}

/// The same rule one step further: a store holding a small part of what
/// the relay has (here 10 of 150 issues) would fetch almost everything by
/// id, so the reconciled filter is paged once the size of the gap is known.
#[test]
fn never_again_10_a_store_holding_little_pages_what_it_lacks() {
    let (ann, history) = repo_history(150);
    let mut c = config();
    c.default_budget.page_limit = 50;
    let (mut d, mut relay) = world(&history, &ann, c);
    for e in history.iter().filter(|e| e.kind.as_u16() == 1621).take(10) {
        relay.ours.insert(e.id, e.clone());
        d.input(Input::CatalogEvent(e));
    }
    first_sync(&mut d, &mut relay);
    let st = status(&d);
    assert_eq!(relay.ours.len(), 1 + 300, "everything arrived");
    assert!(relay.neg_opens > 0, "the issue filter was reconciled");
    assert_eq!(
        relay.id_fetches, 0,
        "140 missing, 10 held: paged, not by id"
    );
    assert!(st.stats.reconcile_declined > 0);
    assert_eq!(st.stats.reconcile_fallbacks, 0);
    assert_eq!(st.confirmed, st.targets, "{st:?}");
}
