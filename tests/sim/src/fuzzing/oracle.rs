//! A black-box budget oracle: watches the inputs fed to an engine and the
//! commands it emits, tracks which subscriptions are open on each relay
//! (Subscribe/Unsubscribe, NIP-77 NEG-OPEN/NEG-CLOSE, connections ending,
//! the relay's CLOSED or NEG-ERR) and
//! checks every REQ against the relay's budget as the documented rules give
//! it: the configured defaults narrowed by the last NIP-11 document fed in
//! ([`Budget::derive`]). Refusals only ever lower the engine's budget
//! further, so this ceiling holds whatever the engine learned.
//!
//! The fuzz target `engine_inputs` and the soak bench share it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use grasp_sync_core::{Budget, Command, Input, RelayInfo, RelayUrl, ServiceId, SubscriptionMode};
use nostr::filter::Filter;
use nostr::message::SubscriptionId;

/// A rule the engine broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetViolation {
    /// More subscriptions open on a relay than its budget allows.
    Subscriptions {
        /// The relay.
        relay: RelayUrl,
        /// Open after the REQ (or at the end of a step).
        open: usize,
        /// The budget's `max_subscriptions`.
        max: u32,
    },
    /// A REQ with more filters than allowed.
    Filters {
        /// The relay.
        relay: RelayUrl,
        /// Filters in the REQ.
        filters: usize,
        /// The budget's `max_filters_per_req`.
        max: u32,
    },
    /// A filter with a value list longer than allowed.
    Values {
        /// The relay.
        relay: RelayUrl,
        /// The longest list in the filter.
        values: usize,
        /// The budget's `max_values_per_filter`.
        max: u32,
    },
    /// A filter's `limit` beyond the budget (historic), or neither 0 nor a
    /// catch-up within the page budget (live).
    Limit {
        /// The relay.
        relay: RelayUrl,
        /// The filter's limit.
        limit: Option<usize>,
        /// The mode of the REQ.
        mode: SubscriptionMode,
        /// The budget's `max_page_limit`.
        max: u32,
    },
    /// A REQ on a subscription id still open on the relay (some relays
    /// ignore it silently, nostr-rs-relay among them).
    ReusedId {
        /// The relay.
        relay: RelayUrl,
        /// The id.
        subscription: SubscriptionId,
    },
    /// A command for our own service.
    OwnService(RelayUrl),
}

impl fmt::Display for BudgetViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetViolation::Subscriptions { relay, open, max } => {
                write!(f, "{relay}: {open} subscriptions open, budget {max}")
            }
            BudgetViolation::Filters {
                relay,
                filters,
                max,
            } => write!(f, "{relay}: REQ with {filters} filters, budget {max}"),
            BudgetViolation::Values { relay, values, max } => {
                write!(f, "{relay}: filter with {values} values, budget {max}")
            }
            BudgetViolation::Limit {
                relay,
                limit,
                mode,
                max,
            } => write!(
                f,
                "{relay}: {mode:?} filter with limit {limit:?}, page budget {max}"
            ),
            BudgetViolation::ReusedId {
                relay,
                subscription,
            } => write!(f, "{relay}: REQ on {subscription}, still open there"),
            BudgetViolation::OwnService(relay) => write!(f, "{relay}: a command for our service"),
        }
    }
}

#[derive(Debug, Default)]
struct Tracked {
    info: Option<RelayInfo>,
    open: BTreeSet<SubscriptionId>,
}

/// Tracks open subscriptions per relay and checks each command against the
/// relay's budget. Feed it every input (before the engine sees it) and every
/// command (in order), and call [`BudgetOracle::end_step`] after draining.
#[derive(Debug)]
pub struct BudgetOracle {
    defaults: Budget,
    service: ServiceId,
    relays: BTreeMap<RelayUrl, Tracked>,
    violations: Vec<BudgetViolation>,
    /// REQs checked.
    pub reqs_checked: u64,
    /// Most subscriptions seen open on one relay at once.
    pub peak_open: usize,
}

/// How many violations are kept (the count goes on past it).
const KEEP_VIOLATIONS: usize = 100;

impl BudgetOracle {
    /// An oracle for an engine configured with `defaults` for `service`.
    pub fn new(defaults: Budget, service: ServiceId) -> Self {
        BudgetOracle {
            defaults,
            service,
            relays: BTreeMap::new(),
            violations: Vec::new(),
            reqs_checked: 0,
            peak_open: 0,
        }
    }

    /// The violations seen (the first hundred).
    pub fn violations(&self) -> &[BudgetViolation] {
        &self.violations
    }

    /// The ceiling for a relay: the defaults narrowed by its last NIP-11 document.
    pub fn budget(&self, relay: &RelayUrl) -> Budget {
        let info = self.relays.get(relay).and_then(|t| t.info.as_ref());
        Budget::derive(&self.defaults, info, None)
    }

    /// Subscriptions the oracle counts as open on a relay.
    pub fn open(&self, relay: &RelayUrl) -> usize {
        self.relays.get(relay).map_or(0, |t| t.open.len())
    }

    fn violate(&mut self, v: BudgetViolation) {
        if self.violations.len() < KEEP_VIOLATIONS {
            self.violations.push(v);
        }
    }

    /// An input, seen before the engine handles it.
    pub fn on_input(&mut self, input: &Input<'_>) {
        match input {
            Input::RelayInfo { relay, info } => {
                self.relays.entry((*relay).clone()).or_default().info = Some(info.clone());
            }
            Input::ConnectFailed { relay, .. } | Input::Disconnected { relay, .. } => {
                if let Some(t) = self.relays.get_mut(*relay) {
                    t.open.clear();
                }
            }
            Input::Closed {
                relay,
                subscription,
                ..
            }
            | Input::NegErr {
                relay,
                subscription,
                ..
            } => {
                if let Some(t) = self.relays.get_mut(*relay) {
                    t.open.remove(*subscription);
                }
            }
            _ => {}
        }
    }

    /// Every connection ended (the host restarted the engine).
    pub fn on_restart(&mut self) {
        for t in self.relays.values_mut() {
            t.open.clear();
        }
    }

    /// A command, in the order the engine emitted it.
    pub fn on_command(&mut self, command: &Command) {
        let relay = command.relay();
        if self.service.matches(relay) {
            self.violate(BudgetViolation::OwnService(relay.clone()));
        }
        match command {
            Command::Connect { relay } | Command::Disconnect { relay } => {
                if let Some(t) = self.relays.get_mut(relay) {
                    t.open.clear();
                }
            }
            Command::Unsubscribe {
                relay,
                subscription,
            }
            | Command::NegClose {
                relay,
                subscription,
            } => {
                if let Some(t) = self.relays.get_mut(relay) {
                    t.open.remove(subscription);
                }
            }
            Command::Subscribe {
                relay,
                subscription,
                filters,
                mode,
            } => self.on_subscribe(relay, subscription, filters, *mode),
            Command::NegOpen {
                relay,
                subscription,
                filter,
                ..
            } => self.on_neg_open(relay, subscription, filter),
            Command::FetchRelayInfo { .. }
            | Command::Authenticate { .. }
            | Command::QueryLocalItems { .. }
            | Command::NegMsg { .. } => {}
        }
    }

    fn on_subscribe(
        &mut self,
        relay: &RelayUrl,
        subscription: &SubscriptionId,
        filters: &[Filter],
        mode: SubscriptionMode,
    ) {
        self.reqs_checked += 1;
        let budget = self.budget(relay);
        if self
            .relays
            .get(relay)
            .is_some_and(|t| t.open.contains(subscription))
        {
            self.violate(BudgetViolation::ReusedId {
                relay: relay.clone(),
                subscription: subscription.clone(),
            });
        }
        if filters.len() > budget.max_filters_per_req as usize {
            self.violate(BudgetViolation::Filters {
                relay: relay.clone(),
                filters: filters.len(),
                max: budget.max_filters_per_req,
            });
        }
        for f in filters {
            let values = longest_value_list(f);
            if values > budget.max_values_per_filter as usize {
                self.violate(BudgetViolation::Values {
                    relay: relay.clone(),
                    values,
                    max: budget.max_values_per_filter,
                });
            }
            let limit_ok = match mode {
                // 0, or a catch-up of a gap (`since` and a page's limit).
                SubscriptionMode::Live => {
                    f.limit == Some(0)
                        || (f.since.is_some()
                            && f.limit
                                .is_some_and(|l| l >= 1 && l <= budget.max_page_limit as usize))
                }
                SubscriptionMode::Historic => f
                    .limit
                    .is_some_and(|l| l >= 1 && l <= budget.max_page_limit as usize),
            };
            if !limit_ok {
                self.violate(BudgetViolation::Limit {
                    relay: relay.clone(),
                    limit: f.limit,
                    mode,
                    max: budget.max_page_limit,
                });
            }
        }
        self.open_one(relay, subscription, budget);
    }

    /// A NIP-77 reconciliation holds a subscription slot from NEG-OPEN to
    /// NEG-CLOSE (or the relay's NEG-ERR); its filter obeys the value cap.
    fn on_neg_open(&mut self, relay: &RelayUrl, subscription: &SubscriptionId, filter: &Filter) {
        self.reqs_checked += 1;
        let budget = self.budget(relay);
        let values = longest_value_list(filter);
        if values > budget.max_values_per_filter as usize {
            self.violate(BudgetViolation::Values {
                relay: relay.clone(),
                values,
                max: budget.max_values_per_filter,
            });
        }
        self.open_one(relay, subscription, budget);
    }

    fn open_one(&mut self, relay: &RelayUrl, subscription: &SubscriptionId, budget: Budget) {
        let tracked = self.relays.entry(relay.clone()).or_default();
        tracked.open.insert(subscription.clone());
        let open = tracked.open.len();
        self.peak_open = self.peak_open.max(open);
        if open > budget.max_subscriptions as usize {
            self.violate(BudgetViolation::Subscriptions {
                relay: relay.clone(),
                open,
                max: budget.max_subscriptions,
            });
        }
    }

    /// After the engine's commands for one input are drained: a budget that
    /// shrank (a late NIP-11 document) must have been shed by now.
    pub fn end_step(&mut self) {
        let over: Vec<(RelayUrl, usize, u32)> = self
            .relays
            .iter()
            .filter_map(|(url, t)| {
                let max = self.budget(url).max_subscriptions;
                (t.open.len() > max as usize).then(|| (url.clone(), t.open.len(), max))
            })
            .collect();
        for (relay, open, max) in over {
            self.violate(BudgetViolation::Subscriptions { relay, open, max });
        }
    }
}

/// The longest value list of a filter (`ids`, `authors` or a tag).
fn longest_value_list(f: &Filter) -> usize {
    let ids = f.ids.as_ref().map_or(0, |s| s.len());
    let authors = f.authors.as_ref().map_or(0, |s| s.len());
    let tags = f.generic_tags.values().map(|v| v.len()).max().unwrap_or(0);
    ids.max(authors).max(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::filter::SingleLetterTag;

    fn url(s: &str) -> RelayUrl {
        RelayUrl::parse(s).unwrap()
    }

    fn oracle() -> BudgetOracle {
        BudgetOracle::new(
            Budget::default(),
            ServiceId::parse("git.example.com").unwrap(),
        )
    }

    fn req(relay: &RelayUrl, sub: &str, filters: Vec<Filter>) -> Command {
        Command::Subscribe {
            relay: relay.clone(),
            subscription: SubscriptionId::new(sub),
            filters,
            mode: SubscriptionMode::Historic,
        }
    }

    #[test]
    fn counts_open_subscriptions_against_published_limits() {
        let r = url("wss://r.example");
        let mut o = oracle();
        o.on_input(&Input::RelayInfo {
            relay: &r,
            info: RelayInfo {
                max_subscriptions: Some(2),
                ..RelayInfo::default()
            },
        });
        let page = || vec![Filter::new().limit(10)];
        o.on_command(&req(&r, "a", page()));
        o.on_command(&req(&r, "b", page()));
        assert!(o.violations().is_empty());
        o.on_input(&Input::Closed {
            relay: &r,
            subscription: &SubscriptionId::new("a"),
            message: "error: x",
        });
        o.on_command(&req(&r, "c", page()));
        assert!(o.violations().is_empty());
        o.on_command(&req(&r, "d", page()));
        assert_eq!(
            o.violations(),
            &[BudgetViolation::Subscriptions {
                relay: r.clone(),
                open: 3,
                max: 2
            }]
        );
    }

    #[test]
    fn checks_filters_values_and_limits() {
        let r = url("wss://r.example");
        let mut o = oracle();
        let wide = Filter::new()
            .custom_tags(
                SingleLetterTag::LOWERCASE_D,
                (0..101).map(|i| i.to_string()),
            )
            .limit(10);
        o.on_command(&req(&r, "a", vec![wide]));
        o.on_command(&req(&r, "b", vec![Filter::new().limit(10); 11]));
        o.on_command(&req(&r, "c", vec![Filter::new().limit(5000)]));
        o.on_command(&Command::Subscribe {
            relay: r.clone(),
            subscription: SubscriptionId::new("live"),
            filters: vec![Filter::new().limit(3)],
            mode: SubscriptionMode::Live,
        });
        // A REQ on an id still open there.
        o.on_command(&req(&r, "a", vec![Filter::new().limit(10)]));
        o.on_command(&Command::Connect {
            relay: url("wss://git.example.com"),
        });
        let kinds: Vec<&str> = o
            .violations()
            .iter()
            .map(|v| match v {
                BudgetViolation::Values { .. } => "values",
                BudgetViolation::Filters { .. } => "filters",
                BudgetViolation::Limit { .. } => "limit",
                BudgetViolation::Subscriptions { .. } => "subs",
                BudgetViolation::ReusedId { .. } => "reused",
                BudgetViolation::OwnService(_) => "service",
            })
            .collect();
        assert_eq!(
            kinds,
            ["values", "filters", "limit", "limit", "reused", "service"]
        );
    }

    #[test]
    fn a_shrunk_budget_must_be_shed_by_the_end_of_the_step() {
        let r = url("wss://r.example");
        let mut o = oracle();
        for s in ["a", "b", "c"] {
            o.on_command(&req(&r, s, vec![Filter::new().limit(1)]));
        }
        o.on_input(&Input::RelayInfo {
            relay: &r,
            info: RelayInfo {
                max_subscriptions: Some(2),
                ..RelayInfo::default()
            },
        });
        o.end_step();
        assert_eq!(o.violations().len(), 1);
        o.on_input(&Input::Disconnected {
            relay: &r,
            reason: "gone",
        });
        o.end_step();
        assert_eq!(o.violations().len(), 1);
        assert_eq!(o.open(&r), 0);
    }
}
