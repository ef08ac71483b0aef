//! NIP-77 reconciliation against a fake relay that answers with the negentropy crate.

use super::*;
use crate::nip77::LocalItem;

/// How the fake relay treats NEG-OPEN.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NegMode {
    Answer,
    Err,
    Silent,
    Notice,
}

/// A fake relay holding `theirs`, and a store holding `ours`.
struct NegWorld {
    theirs: Vec<Event>,
    ours: Vec<Event>,
    mode: NegMode,
    /// Ids sent in answer to `{"ids":…}` REQs.
    fetched: Vec<EventId>,
    neg_opens: usize,
    paged_reqs: usize,
    /// `{"ids":…}` REQs received.
    id_reqs: usize,
    /// Events sent in answer to paged REQs.
    paged_events: usize,
    /// Lists its events in NEG-MSG but sends none when asked by id.
    withhold: bool,
    /// Sends at most this many events per filter (a silent page cap,
    /// applied to `{"ids":…}` filters too, as LocalRelay does).
    cap: Option<usize>,
    open_negs: BTreeMap<SubscriptionId, Filter>,
}

impl NegWorld {
    fn new(theirs: Vec<Event>, ours: Vec<Event>, mode: NegMode) -> Self {
        NegWorld {
            theirs,
            ours,
            mode,
            fetched: Vec::new(),
            neg_opens: 0,
            paged_reqs: 0,
            id_reqs: 0,
            paged_events: 0,
            withhold: false,
            cap: None,
            open_negs: BTreeMap::new(),
        }
    }

    fn items(events: &[Event], f: &Filter) -> Vec<LocalItem> {
        events
            .iter()
            .filter(|e| f.match_event(e, nostr::filter::MatchEventOptions::new()))
            .map(|e| (e.id, e.created_at))
            .collect()
    }

    /// Answers commands until none is left (timers are not run).
    fn serve(&mut self, rig: &mut Rig, first: Vec<Command>) {
        let r = rig.relay.clone();
        let mut todo: VecDeque<Command> = first.into();
        let mut steps = 0;
        while let Some(c) = todo.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "no end to the work");
            let out = match c {
                Command::QueryLocalItems {
                    request, filter, ..
                } => {
                    let items = Self::items(&self.ours, &filter);
                    rig.input(Input::LocalItems {
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
                    match self.mode {
                        NegMode::Answer => {
                            let answer =
                                nip77::respond(Self::items(&self.theirs, &filter), &message)
                                    .unwrap();
                            self.open_negs.insert(subscription.clone(), filter);
                            rig.input(Input::NegMsg {
                                relay: &r,
                                subscription: &subscription,
                                message: &answer,
                            })
                        }
                        NegMode::Err => rig.input(Input::NegErr {
                            relay: &r,
                            subscription: &subscription,
                            message: "blocked: no",
                        }),
                        NegMode::Notice => rig.input(Input::Notice {
                            relay: &r,
                            message: "ERROR: bad msg: unknown cmd",
                        }),
                        NegMode::Silent => Vec::new(),
                    }
                }
                Command::NegMsg {
                    subscription,
                    message,
                    ..
                } => {
                    let filter = self.open_negs[&subscription].clone();
                    let answer =
                        nip77::respond(Self::items(&self.theirs, &filter), &message).unwrap();
                    rig.input(Input::NegMsg {
                        relay: &r,
                        subscription: &subscription,
                        message: &answer,
                    })
                }
                Command::NegClose { subscription, .. } => {
                    self.open_negs.remove(&subscription);
                    Vec::new()
                }
                Command::Subscribe {
                    subscription,
                    filters,
                    mode: SubscriptionMode::Historic,
                    ..
                } => {
                    let by_id = filters.iter().all(|f| f.ids.is_some());
                    if by_id {
                        self.id_reqs += 1;
                    } else {
                        self.paged_reqs += 1;
                    }
                    let mut out = Vec::new();
                    let mut events: Vec<Event> = Vec::new();
                    for f in filters.iter().filter(|_| !(by_id && self.withhold)) {
                        let matching = self.theirs.iter().filter(|e| {
                            f.match_event(e, nostr::filter::MatchEventOptions::new())
                                && !events.iter().any(|x| x.id == e.id)
                        });
                        let taken: Vec<Event> = matching
                            .take(self.cap.unwrap_or(usize::MAX))
                            .cloned()
                            .collect();
                        events.extend(taken);
                    }
                    for e in &events {
                        if by_id {
                            self.fetched.push(e.id);
                        } else {
                            self.paged_events += 1;
                        }
                        out.extend(rig.input(Input::EventReceived {
                            relay: &r,
                            subscription: &subscription,
                            event: e,
                        }));
                        let stored = if self.ours.iter().any(|o| o.id == e.id) {
                            StoreOutcome::Duplicate
                        } else {
                            self.ours.push(e.clone());
                            StoreOutcome::Stored
                        };
                        out.extend(rig.input(Input::EventStored {
                            relay: &r,
                            id: e.id,
                            created_at: e.created_at.as_secs(),
                            outcome: stored,
                        }));
                    }
                    out.extend(rig.input(Input::Eose {
                        relay: &r,
                        subscription: &subscription,
                    }));
                    out
                }
                _ => Vec::new(),
            };
            todo.extend(out);
        }
    }
}

fn repo_events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| issue((i % 200) as u8 + 3, T - 10_000 + i as u64, &coord(1, "r0")))
        .collect()
}

fn nip77_rig() -> Rig {
    Rig::new(1, |c| c.nip77 = true)
}

#[test]
fn nip77_fetches_exactly_the_missing_events_and_confirms() {
    let theirs = repo_events(300);
    let ours: Vec<Event> = theirs.iter().skip(7).cloned().collect();
    let mut rig = nip77_rig();
    let first = rig.connect();
    let probes = first
        .iter()
        .filter(|c| matches!(c, Command::QueryLocalItems { .. }))
        .count();
    assert_eq!(probes, 1, "one probe while support is unknown: {first:?}");
    let mut w = NegWorld::new(theirs.clone(), ours, NegMode::Answer);
    w.serve(&mut rig, first);
    let mut fetched = w.fetched.clone();
    fetched.sort();
    let mut missing: Vec<EventId> = theirs.iter().take(7).map(|e| e.id).collect();
    missing.sort();
    assert_eq!(fetched, missing);
    // Filters we hold nothing for are paged ("never again" item 10), and
    // the relay has nothing for them either: nothing comes twice.
    assert_eq!(w.paged_events, 0);
    let st = rig.e.status();
    let rs = &st.relays[0];
    assert_eq!(rs.nip77, Nip77Support::Supported);
    assert_eq!(rs.pending, 0);
    assert_eq!(rs.confirmed, rs.targets);
    assert_eq!(rs.stats.reconcile_ids_needed, 7);
    assert_eq!(rs.stats.reconcile_fallbacks, 0);
    assert_eq!(
        rs.stats.reconciliations, 1,
        "the issue filter: {:?}",
        rs.stats
    );
    assert!(
        rs.stats.reconcile_declined >= 3,
        "the empty ones: {:?}",
        rs.stats
    );
    // A second sync of the unchanged relay fetches nothing.
    let r = rig.relay.clone();
    rig.input(Input::Disconnected {
        relay: &r,
        reason: "test",
    });
    let next = rig.e.next_wakeup().unwrap();
    rig.at_time(next.plus(Duration::from_secs(3600)));
    let again = rig.connect();
    let mut w2 = NegWorld::new(theirs, w.ours.clone(), NegMode::Answer);
    w2.serve(&mut rig, again);
    assert!(w2.fetched.is_empty(), "{:?}", w2.fetched);
    assert_eq!(w2.paged_events, 0);
}

fn falls_back(mode: NegMode, wait: bool) -> (Rig, NegWorld) {
    let theirs = repo_events(40);
    let mut rig = nip77_rig();
    let first = rig.connect();
    // We hold one of them: the issue filter is worth reconciling.
    let ours = theirs[..1].to_vec();
    let mut w = NegWorld::new(theirs, ours, mode);
    w.serve(&mut rig, first);
    if wait {
        let cs = rig.at(10);
        w.serve(&mut rig, cs);
    }
    let rs = &rig.e.status().relays[0];
    assert_eq!(rs.nip77, Nip77Support::Unsupported);
    assert_eq!(rs.pending, 0, "everything was paged instead");
    assert_eq!(rs.confirmed, rs.targets);
    assert!(rs.stats.reconcile_fallbacks >= 1);
    assert_eq!(w.neg_opens, 1, "one probe, then paged REQ only");
    assert!(w.paged_reqs > 0);
    (rig, w)
}

#[test]
fn nip77_neg_err_falls_back_to_paged_req() {
    falls_back(NegMode::Err, false);
}

#[test]
fn nip77_refusal_notice_falls_back() {
    falls_back(NegMode::Notice, false);
}

#[test]
fn nip77_silence_falls_back_after_ten_seconds() {
    let theirs = repo_events(5);
    let mut rig = nip77_rig();
    let first = rig.connect();
    let ours = theirs[..1].to_vec();
    let mut w = NegWorld::new(theirs, ours, NegMode::Silent);
    w.serve(&mut rig, first);
    assert_eq!(rig.e.status().relays[0].nip77, Nip77Support::Unknown);
    assert_eq!(w.neg_opens, 1);
    assert!(
        rig.e.status().relays[0].pending > 0,
        "the probe's pack waits"
    );
    let cs = rig.at(9);
    assert!(Rig::historic(&cs).is_empty(), "still waiting at 9 s");
    falls_back(NegMode::Silent, true);
}

#[test]
fn nip77_drop_after_neg_open_means_unsupported_until_the_daily_pass() {
    let theirs = repo_events(5);
    let mut rig = nip77_rig();
    let first = rig.connect();
    let mut w = NegWorld::new(theirs.clone(), theirs[..1].to_vec(), NegMode::Silent);
    w.serve(&mut rig, first);
    let r = rig.relay.clone();
    rig.input(Input::Disconnected {
        relay: &r,
        reason: "closed by relay",
    });
    assert_eq!(rig.e.status().relays[0].nip77, Nip77Support::Unsupported);
    let next = rig.e.next_wakeup().unwrap();
    rig.at_time(next);
    let again = rig.connect();
    let mut w2 = NegWorld::new(theirs.clone(), theirs[..1].to_vec(), NegMode::Answer);
    w2.serve(&mut rig, again);
    assert_eq!(w2.neg_opens, 0);
    assert!(w2.paged_reqs > 0);
    // The snapshot remembers it.
    let snap = rig.e.snapshot();
    assert_eq!(snap.relays[0].nip77, Nip77Support::Unsupported);
    // The daily pass probes again.
    let resync = rig.e.status().relays[0].next_resync.unwrap();
    let cs = rig.at_time(resync);
    let mut w3 = NegWorld::new(theirs, w2.ours.clone(), NegMode::Answer);
    w3.serve(&mut rig, cs);
    assert!(w3.neg_opens >= 1, "the issue filter: {}", w3.neg_opens);
    assert_eq!(w3.paged_events, 0, "the filters paged hold nothing");
    assert!(w3.fetched.is_empty());
    assert_eq!(rig.e.status().relays[0].nip77, Nip77Support::Supported);
}

#[test]
fn nip77_listed_in_nip11_but_refused_falls_back() {
    let theirs = repo_events(20);
    let mut rig = nip77_rig();
    let r = rig.relay.clone();
    rig.input(Input::RelayInfo {
        relay: &r,
        info: RelayInfo {
            supported_nips: vec![1, 11, 77],
            ..RelayInfo::default()
        },
    });
    let first = rig.connect();
    let probes = first
        .iter()
        .filter(|c| matches!(c, Command::QueryLocalItems { .. }))
        .count();
    assert!(probes > 1, "listed: no probe needed, packs start together");
    let ours = theirs[..1].to_vec();
    let mut w = NegWorld::new(theirs, ours, NegMode::Err);
    w.serve(&mut rig, first);
    let rs = &rig.e.status().relays[0];
    assert_eq!(rs.nip77, Nip77Support::Unsupported);
    assert_eq!(rs.confirmed, rs.targets);
    assert_eq!(rs.pending, 0);
}

#[test]
fn nip77_rejected_ids_are_not_fetched_again() {
    let theirs = repo_events(30);
    let mut rig = nip77_rig();
    let r = rig.relay.clone();
    // The store refused one of them earlier.
    rig.input(Input::EventStored {
        relay: &r,
        id: theirs[3].id,
        created_at: theirs[3].created_at.as_secs(),
        outcome: StoreOutcome::Rejected,
    });
    let first = rig.connect();
    let mut w = NegWorld::new(theirs.clone(), Vec::new(), NegMode::Answer);
    w.serve(&mut rig, first);
    assert_eq!(w.fetched.len(), 29);
    assert!(!w.fetched.contains(&theirs[3].id));
}

/// A relay that lists ids in NIP-77 but sends none of them when asked: each
/// id is asked once (no retry loop), and the repo is reported incomplete,
/// not synced (issue 15: no false success).
#[test]
fn nip77_ids_the_relay_withholds_are_asked_once_and_reported_incomplete() {
    let theirs = repo_events(250);
    let mut rig = Rig::new(1, |c| {
        c.nip77 = true;
        c.default_budget.max_values_per_filter = 100;
        c.default_budget.max_filters_per_req = 2;
    });
    let first = rig.connect();
    let ours = theirs[..1].to_vec();
    let mut w = NegWorld::new(theirs, ours, NegMode::Answer);
    w.withhold = true;
    w.serve(&mut rig, first);
    let rs = &rig.e.status().relays[0];
    assert!(w.fetched.is_empty());
    assert_eq!(rs.pending, 0, "no retry loop: the pass ended");
    assert_eq!(rs.confirmed, rs.targets - 1, "discovery only");
    assert_eq!(rs.given_up.get(&GiveUpReason::Incomplete), Some(&1));
    // 249 ids of the #a filter: 3 filters of ≤ 100 ids, 2 per REQ.
    assert_eq!(rs.stats.reconcile_ids_needed, 249);
    assert_eq!(w.id_reqs, 2, "each id asked once, within the budget");
    assert_eq!(w.paged_events, 0);
}

#[test]
fn nip77_ids_a_capped_relay_sends_in_part_are_asked_again() {
    let theirs = repo_events(250);
    let mut rig = Rig::new(1, |c| {
        c.nip77 = true;
        c.default_budget.max_values_per_filter = 100;
        c.default_budget.max_filters_per_req = 2;
    });
    let first = rig.connect();
    let mut w = NegWorld::new(theirs.clone(), theirs[..1].to_vec(), NegMode::Answer);
    w.cap = Some(25);
    w.serve(&mut rig, first);
    let fetched: BTreeSet<EventId> = w.fetched.iter().copied().collect();
    let all: BTreeSet<EventId> = theirs[1..].iter().map(|e| e.id).collect();
    assert_eq!(fetched, all, "every id arrives, 25 per filter at a time");
    let rs = &rig.e.status().relays[0];
    assert_eq!(rs.confirmed, rs.targets);
    assert_eq!(w.paged_events, 0);
}

#[test]
fn nip77_runs_are_deterministic() {
    let run = || {
        let theirs = repo_events(120);
        let ours: Vec<Event> = theirs.iter().step_by(3).cloned().collect();
        let mut rig = nip77_rig();
        let first = rig.connect();
        let mut log: Vec<String> = first
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        let mut w = NegWorld::new(theirs, ours, NegMode::Answer);
        w.serve(&mut rig, first);
        log.extend(w.fetched.iter().map(|id| id.to_hex()));
        log.push(serde_json::to_string(&rig.e.status()).unwrap());
        log
    };
    assert_eq!(run(), run());
}

/// A relay that caps pages below the events of one second and does not
/// speak NIP-77: the repo cannot be proven complete, and is reported
/// incomplete instead of synced (issue 15). Before: confirmed, 100 of 240.
#[test]
fn a_capped_burst_without_nip77_is_reported_incomplete() {
    let burst: Vec<Event> = (0..240)
        .map(|i| issue(i as u8 + 3, T - 500, &coord(1, "r0")))
        .collect();
    let mut rig = nip77_rig();
    let first = rig.connect();
    let mut w = NegWorld::new(burst, Vec::new(), NegMode::Err);
    w.cap = Some(100);
    w.serve(&mut rig, first);
    let rs = &rig.e.status().relays[0];
    assert_eq!(rs.nip77, Nip77Support::Unsupported);
    assert_eq!(rs.pending, 0);
    assert_eq!(rs.given_up.get(&GiveUpReason::Incomplete), Some(&1));
    assert_eq!(rs.confirmed, rs.targets - 1, "discovery only");
}

/// The same capped burst on a relay that speaks NIP-77: the unproven filter
/// is reconciled (NIP-77 does not page), and every event arrives.
#[test]
fn a_capped_burst_is_completed_by_nip77() {
    let burst: Vec<Event> = (0..240)
        .map(|i| issue(i as u8 + 3, T - 500, &coord(1, "r0")))
        .collect();
    let mut rig = Rig::new(1, |c| c.nip77 = true);
    let r = rig.relay.clone();
    let first = rig.connect();
    // Page first (as a first sync into an empty store does), then let the
    // relay answer NIP-77.
    let mut w = NegWorld::new(burst.clone(), Vec::new(), NegMode::Answer);
    w.cap = Some(100);
    w.serve(&mut rig, first);
    let ours: BTreeSet<EventId> = w.ours.iter().map(|e| e.id).collect();
    let all: BTreeSet<EventId> = burst.iter().map(|e| e.id).collect();
    assert_eq!(ours, all, "every event of the burst is stored");
    let rs = &rig.e.status().relays[0];
    assert_eq!(rs.confirmed, rs.targets, "{rs:?}");
    let _ = r;
}
