//! Tests of one relay driven through the [`Engine`], grouped by concern.
//! [`Rig`] is an engine with repos on one relay and helpers to play it.

mod auth;
mod historic;
mod link;
mod live;
mod negentropy;
mod refusal;

pub(super) use std::collections::{BTreeMap, BTreeSet, VecDeque};
pub(super) use std::time::Duration;

pub(super) use nostr::event::{Event, EventId};
pub(super) use nostr::filter::Filter;
pub(super) use nostr::message::SubscriptionId;

pub(super) use super::{GiveUpReason, RelayState};
pub(super) use crate::command::{Command, Input, StoreOutcome, SubscriptionMode};
pub(super) use crate::config::Config;
pub(super) use crate::engine::Engine;
pub(super) use crate::info::RelayInfo;
pub(super) use crate::nip77::{self, Nip77Support};
pub(super) use crate::testutil::{announcement, coord, issue, url, SERVICE};
pub(super) use crate::types::Time;
pub(super) use crate::url::{RelayUrl, ServiceId};

const T: u64 = 1_700_000_000;

struct Rig {
    e: Engine,
    now: Time,
    relay: RelayUrl,
}

impl Rig {
    fn new(repos: usize, config: impl FnOnce(&mut Config)) -> Rig {
        let mut c = Config::new(ServiceId::parse(SERVICE).unwrap());
        // These tests are about paged REQ; NIP-77 tests turn it on.
        c.nip77 = false;
        config(&mut c);
        let mut e = Engine::new(c);
        let now = Time::from_secs(T);
        for i in 0..repos {
            let ann = announcement(
                (i % 250) as u8 + 1,
                &format!("r{i}"),
                T - 100,
                &["wss://a.example"],
            );
            e.handle_input(now, Input::CatalogEvent(&ann));
        }
        let mut rig = Rig {
            e,
            now,
            relay: url("wss://a.example"),
        };
        rig.drain();
        rig
    }

    fn drain(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.e.poll_command()).collect()
    }

    fn input(&mut self, i: Input<'_>) -> Vec<Command> {
        self.e.handle_input(self.now, i);
        self.drain()
    }

    fn at(&mut self, secs: u64) -> Vec<Command> {
        self.at_time(Time::from_secs(T + secs))
    }

    fn at_time(&mut self, t: Time) -> Vec<Command> {
        self.now = t;
        self.input(Input::Tick)
    }

    fn connect(&mut self) -> Vec<Command> {
        let r = self.relay.clone();
        self.input(Input::Connected { relay: &r })
    }

    fn historic(cs: &[Command]) -> Vec<SubscriptionId> {
        cs.iter()
            .filter_map(|c| match c {
                Command::Subscribe {
                    subscription,
                    mode: SubscriptionMode::Historic,
                    ..
                } => Some(subscription.clone()),
                _ => None,
            })
            .collect()
    }

    /// The relay's NIP-11 says `max_subscriptions: n`.
    fn publish_max_subscriptions(&mut self, n: u32) {
        let r = self.relay.clone();
        self.input(Input::RelayInfo {
            relay: &r,
            info: RelayInfo {
                max_subscriptions: Some(n),
                ..RelayInfo::default()
            },
        });
    }

    /// Answers every historic REQ in `first`, and in what follows, with
    /// EOSE (an empty relay), tracking open subscriptions in `open` and
    /// asserting they never exceed `max`.
    fn answer_all(&mut self, first: Vec<Command>, open: &mut BTreeSet<SubscriptionId>, max: usize) {
        let r = self.relay.clone();
        let mut todo = first;
        let mut rounds = 0;
        while !todo.is_empty() {
            rounds += 1;
            assert!(rounds < 1000, "no end to the work");
            for c in &todo {
                match c {
                    Command::Subscribe { subscription, .. } => {
                        open.insert(subscription.clone());
                    }
                    Command::Unsubscribe { subscription, .. } => {
                        open.remove(subscription);
                    }
                    _ => {}
                }
                assert!(open.len() <= max, "{open:?}");
            }
            let mut next = Vec::new();
            for sub in Rig::historic(&todo) {
                next.extend(self.input(Input::Eose {
                    relay: &r,
                    subscription: &sub,
                }));
            }
            todo = next;
        }
    }

    fn closed(&mut self, sub: &SubscriptionId, msg: &str) -> Vec<Command> {
        let r = self.relay.clone();
        self.input(Input::Closed {
            relay: &r,
            subscription: sub,
            message: msg,
        })
    }
}

fn subs_of_mode(cs: &[Command], mode: SubscriptionMode) -> Vec<(SubscriptionId, Vec<Filter>)> {
    cs.iter()
        .filter_map(|c| match c {
            Command::Subscribe {
                subscription,
                filters,
                mode: m,
                ..
            } if *m == mode => Some((subscription.clone(), filters.clone())),
            _ => None,
        })
        .collect()
}
