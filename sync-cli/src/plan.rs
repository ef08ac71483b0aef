//! `grasp-sync plan`: the dry run.
//!
//! Reads NIP-34 events the way the service's store would hold them, feeds
//! the engine with the events the service would accept (announcements, then
//! root events, then deletions), and then plays every relay the engine wants
//! as if it answered at once with an empty history: NIP-11 documents come
//! from `--relay-info` (or not at all), every connection succeeds, and every
//! historic REQ ends at EOSE straight away. Every `Subscribe` the engine
//! sends on the way is recorded; live subscriptions that were replaced by a
//! later update are dropped, so the plan shows the live subscriptions that
//! stay open plus every historic REQ of the first pass.
//!
//! The run uses one fixed `now` (`--now`, or the wall clock read once here):
//! the engine never reads a clock.

mod render;

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use grasp_sync_core::types::{is_root_kind, KIND_DELETION, KIND_REPO_ANNOUNCEMENT};
use grasp_sync_core::{
    Command, Config, Engine, Input, RelayInfo, RelayUrl, SubscriptionMode, Time, Verdict,
};
use nostr::event::Event;
use nostr::filter::Filter;

use crate::args::EngineArgs;
use crate::error::CliError;
use crate::input::{self, Events, InvalidItem, Location};

/// Commands handled before the dry run gives up on a runaway engine.
const MAX_COMMANDS: usize = 1_000_000;

/// How the plan is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A readable table per relay, the ignored items and a summary line.
    #[default]
    Text,
    /// One JSON document (service, relays with their subscriptions, ignored).
    Json,
}

/// Arguments of `grasp-sync plan`.
#[derive(Clone, Debug, Args)]
pub struct PlanArgs {
    /// File of NIP-34 events to plan from (`-` reads stdin): JSON Lines, one
    /// event per line, or one JSON array of events; every id and signature is
    /// checked, and bad items are reported on stderr and skipped.
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,

    #[command(flatten)]
    pub engine: EngineArgs,

    /// Output format: `text` prints a table per relay, `json` prints one JSON
    /// document.
    #[arg(long, value_enum, default_value_t = Format::Text, value_name = "FORMAT")]
    pub format: Format,

    /// JSON object mapping relay URLs to NIP-11 relay information documents,
    /// used to plan within each relay's published limits (relays missing from
    /// it get the conservative defaults).
    #[arg(long, value_name = "FILE")]
    pub relay_info: Option<PathBuf>,

    /// The time the plan is made at, in Unix seconds (live subscriptions start
    /// from it, less the engine's clock-skew margin); defaults to the current
    /// time.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<u64>,
}

/// One subscription in the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedSubscription {
    /// The subscription id.
    pub id: String,
    /// Live or historic.
    pub mode: SubscriptionMode,
    /// The NIP-01 filters of the REQ.
    pub filters: Vec<Filter>,
    /// When it opens: 1 at connect, n + 1 when a REQ of wave n ends.
    pub wave: u32,
}

/// The plan for one relay.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayPlan {
    /// The relay.
    pub url: RelayUrl,
    /// Tracked repositories synced from it.
    pub repos: usize,
    /// Root events synced from it.
    pub root_events: usize,
    /// Subscriptions, in the order the engine sent them.
    pub subscriptions: Vec<PlannedSubscription>,
    /// The most subscriptions open on it at once during the run.
    pub peak_open: usize,
    /// Its budget of concurrent subscriptions.
    pub max_subscriptions: u32,
}

/// Something left out of the plan, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredItem {
    /// Why (kebab-case).
    pub reason: String,
    /// What.
    pub detail: String,
    /// How often the engine saw it (1 for input items).
    pub count: u64,
}

/// What happened to the input events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Items read (non-blank lines or array elements).
    pub read: usize,
    /// Items skipped as invalid.
    pub skipped: usize,
    /// Announcements the service would accept, fed to the engine.
    pub announcements: usize,
    /// Root events the service would accept, fed to the engine.
    pub roots: usize,
    /// Deletion requests the service would accept, fed to the engine.
    pub deletions: usize,
    /// Announcements, root events and deletions the service would refuse.
    pub not_accepted: usize,
    /// Events of other kinds (comments, statuses, state, ...), not used.
    pub other_kinds: usize,
}

impl Summary {
    /// Events fed to the engine.
    pub fn accepted(&self) -> usize {
        self.announcements + self.roots + self.deletions
    }
}

/// The outcome of a dry run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The service (normalised `host[:port]`).
    pub service: String,
    /// The time the plan was made at (Unix seconds).
    pub now: u64,
    /// Relays with something to sync, sorted by URL.
    pub relays: Vec<RelayPlan>,
    /// Relays the engine knows but that carry nothing (they are closed after
    /// the empty-relay grace period), sorted.
    pub idle_relays: Vec<RelayUrl>,
    /// Ignored items: the engine's, then refused events, then invalid input.
    pub ignored: Vec<IgnoredItem>,
    /// Input counts.
    pub summary: Summary,
}

/// Runs `grasp-sync plan`.
pub fn run(args: &PlanArgs) -> Result<ExitCode, CliError> {
    let infos = match &args.relay_info {
        Some(path) => input::load_relay_info(path)?,
        None => input::RelayInfos::default(),
    };
    for w in &infos.warnings {
        eprintln!("grasp-sync: warning: {w}");
    }
    let events = input::load_events(&args.events)?;
    for bad in &events.invalid {
        eprintln!(
            "grasp-sync: {}: {}: skipped ({}): {}",
            args.events.display(),
            bad.location,
            bad.kind.as_str(),
            bad.message
        );
    }
    let now = args.now.unwrap_or_else(wall_clock_secs);
    let plan = build_plan(args.engine.config()?, &events, &infos.docs, now)?;
    let text = match args.format {
        Format::Text => render::text(&plan),
        Format::Json => render::json(&plan),
    };
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`| head`) is not worth an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(CliError::Output(e)),
    }
}

/// The current time in Unix seconds (the epoch if the clock is before it).
fn wall_clock_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Builds the plan: feeds the accepted events, then plays every relay
/// answering at once with empty history, all at the fixed time `now_secs`.
pub fn build_plan(
    mut config: Config,
    events: &Events,
    infos: &BTreeMap<RelayUrl, RelayInfo>,
    now_secs: u64,
) -> Result<Plan, CliError> {
    // The plan shows the paged REQs; NIP-77 work depends on what each relay
    // and the store hold, which a plan cannot know.
    config.nip77 = false;
    let config_budget = config.default_budget.max_subscriptions;
    let service = config.service.to_string();
    let mut driver = Driver::new(Engine::new(config), Time::from_secs(now_secs), infos);
    let mut summary = Summary {
        read: events.read,
        skipped: events.invalid.len(),
        ..Summary::default()
    };
    let mut refused = Vec::new();

    // As a relay's store would: announcements first, then root events, then
    // deletions. Acceptance is judged in that order, so that root events see
    // the tracked repos and deletions see both.
    let kind = |e: &Event| e.kind.as_u16();
    let announcements = events
        .events
        .iter()
        .filter(|e| kind(&e.event) == KIND_REPO_ANNOUNCEMENT);
    let roots = events
        .events
        .iter()
        .filter(|e| is_root_kind(kind(&e.event)));
    let deletions = events
        .events
        .iter()
        .filter(|e| kind(&e.event) == KIND_DELETION);
    summary.other_kinds = events
        .events
        .iter()
        .filter(|e| {
            let k = kind(&e.event);
            k != KIND_REPO_ANNOUNCEMENT && k != KIND_DELETION && !is_root_kind(k)
        })
        .count();
    for loaded in announcements {
        if driver.offer(
            &loaded.event,
            Input::CatalogEvent(&loaded.event),
            loaded.location,
            &mut refused,
        ) {
            summary.announcements += 1;
        }
    }
    for loaded in roots {
        if driver.offer(
            &loaded.event,
            Input::CatalogEvent(&loaded.event),
            loaded.location,
            &mut refused,
        ) {
            summary.roots += 1;
        }
    }
    for loaded in deletions {
        if driver.offer(
            &loaded.event,
            Input::CatalogEvent(&loaded.event),
            loaded.location,
            &mut refused,
        ) {
            summary.deletions += 1;
        }
    }
    summary.not_accepted = refused.len();

    driver.input(Input::Tick);
    driver.settle()?;

    let status = driver.engine.status();
    let mut ignored: Vec<IgnoredItem> = status
        .ignored
        .iter()
        .map(|i| IgnoredItem {
            reason: i.reason.clone(),
            detail: i.detail.clone(),
            count: i.count,
        })
        .collect();
    ignored.extend(refused);
    ignored.extend(events.invalid.iter().map(invalid_item));

    let mut recorded = std::mem::take(&mut driver.recorded);
    let mut relays = Vec::new();
    let mut idle_relays = Vec::new();
    for r in &status.relays {
        let subscriptions: Vec<PlannedSubscription> = recorded
            .remove(&r.url)
            .unwrap_or_default()
            .into_iter()
            .filter(Recorded::kept)
            .map(|s| s.sub)
            .collect();
        if r.targets == 0 && subscriptions.is_empty() {
            idle_relays.push(r.url.clone());
            continue;
        }
        relays.push(RelayPlan {
            url: r.url.clone(),
            repos: r.repos,
            root_events: r.roots,
            subscriptions,
            peak_open: driver.peak_open.get(&r.url).copied().unwrap_or(0),
            max_subscriptions: r.budget.max_subscriptions,
        });
    }
    // Relays the engine already forgot but that were sent subscriptions.
    for (url, subs) in recorded {
        let subscriptions: Vec<PlannedSubscription> = subs
            .into_iter()
            .filter(Recorded::kept)
            .map(|s| s.sub)
            .collect();
        if !subscriptions.is_empty() {
            relays.push(RelayPlan {
                peak_open: driver.peak_open.get(&url).copied().unwrap_or(0),
                max_subscriptions: config_budget,
                url,
                repos: 0,
                root_events: 0,
                subscriptions,
            });
        }
    }
    relays.sort_by(|a, b| a.url.cmp(&b.url));

    Ok(Plan {
        service,
        now: now_secs,
        relays,
        idle_relays,
        ignored,
        summary,
    })
}

fn invalid_item(bad: &InvalidItem) -> IgnoredItem {
    IgnoredItem {
        reason: bad.kind.as_str().to_owned(),
        detail: format!("{}: {}", bad.location, bad.message),
        count: 1,
    }
}

/// A subscription as sent, and whether it is still open.
struct Recorded {
    sub: PlannedSubscription,
    open: bool,
}

impl Recorded {
    /// Whether the plan shows it: every historic REQ (each one is work of
    /// the first pass), and the live subscriptions still open at the end.
    fn kept(&self) -> bool {
        self.open || self.sub.mode == SubscriptionMode::Historic
    }
}

/// Drives the engine through the dry run.
struct Driver<'a> {
    engine: Engine,
    now: Time,
    infos: &'a BTreeMap<RelayUrl, RelayInfo>,
    /// Commands to carry out, with the wave they belong to.
    queue: VecDeque<(Command, u32)>,
    recorded: BTreeMap<RelayUrl, Vec<Recorded>>,
    /// Subscriptions open per relay now, and the most at once.
    open: BTreeMap<RelayUrl, usize>,
    peak_open: BTreeMap<RelayUrl, usize>,
}

impl<'a> Driver<'a> {
    fn new(engine: Engine, now: Time, infos: &'a BTreeMap<RelayUrl, RelayInfo>) -> Self {
        Driver {
            engine,
            now,
            infos,
            queue: VecDeque::new(),
            recorded: BTreeMap::new(),
            open: BTreeMap::new(),
            peak_open: BTreeMap::new(),
        }
    }

    /// Feeds one input and queues every command it produced.
    fn input(&mut self, input: Input<'_>) {
        self.input_in_wave(input, 0);
    }

    /// Feeds one input; the commands it produced belong to `wave`.
    fn input_in_wave(&mut self, input: Input<'_>, wave: u32) {
        self.engine.handle_input(self.now, input);
        while let Some(c) = self.engine.poll_command() {
            self.queue.push_back((c, wave));
        }
    }

    /// Feeds `input` for `event` if the service would accept the event;
    /// otherwise records why not. Returns whether it was fed.
    fn offer(
        &mut self,
        event: &Event,
        input: Input<'_>,
        at: Location,
        refused: &mut Vec<IgnoredItem>,
    ) -> bool {
        let Verdict::Reject(reason) = self.engine.check_acceptance(event) else {
            self.input(input);
            return true;
        };
        let mut detail = format!(
            "{at}: kind {} event {}",
            event.kind.as_u16(),
            event.id.to_hex()
        );
        if event.kind.as_u16() == KIND_REPO_ANNOUNCEMENT {
            let d = event.tags.iter().find_map(|t| match t.as_slice() {
                [name, value, ..] if name == "d" => Some(value.as_str()),
                _ => None,
            });
            if let Some(d) = d {
                detail.push_str(&format!(
                    " ({KIND_REPO_ANNOUNCEMENT}:{}:{d})",
                    event.pubkey.to_hex()
                ));
            }
        }
        refused.push(IgnoredItem {
            reason: reason.as_str().to_owned(),
            detail,
            count: 1,
        });
        false
    }

    /// Carries out queued commands, as relays that answer at once with empty
    /// history, until none is left.
    fn settle(&mut self) -> Result<(), CliError> {
        let mut handled = 0usize;
        while let Some((command, wave)) = self.queue.pop_front() {
            handled += 1;
            if handled > MAX_COMMANDS {
                return Err(CliError::Unsettled(MAX_COMMANDS));
            }
            match command {
                Command::FetchRelayInfo { relay } => {
                    if let Some(info) = self.infos.get(&relay) {
                        let info = info.clone();
                        self.input_in_wave(
                            Input::RelayInfo {
                                relay: &relay,
                                info,
                            },
                            wave,
                        );
                    }
                }
                Command::Connect { relay } => {
                    self.input_in_wave(Input::Connected { relay: &relay }, 1)
                }
                // Not emitted: `build_plan` turns NIP-77 off.
                Command::QueryLocalItems { .. }
                | Command::NegOpen { .. }
                | Command::NegMsg { .. }
                | Command::NegClose { .. } => {}
                Command::Subscribe {
                    relay,
                    subscription,
                    filters,
                    mode,
                } => {
                    let open = self.open.entry(relay.clone()).or_default();
                    *open += 1;
                    let peak = self.peak_open.entry(relay.clone()).or_default();
                    *peak = (*peak).max(*open);
                    self.recorded
                        .entry(relay.clone())
                        .or_default()
                        .push(Recorded {
                            sub: PlannedSubscription {
                                id: subscription.to_string(),
                                mode,
                                filters,
                                wave: wave.max(1),
                            },
                            open: true,
                        });
                    if mode == SubscriptionMode::Historic {
                        self.input_in_wave(
                            Input::Eose {
                                relay: &relay,
                                subscription: &subscription,
                            },
                            wave.max(1) + 1,
                        );
                    }
                }
                Command::Unsubscribe {
                    relay,
                    subscription,
                } => {
                    if let Some(subs) = self.recorded.get_mut(&relay) {
                        for s in subs
                            .iter_mut()
                            .filter(|s| s.open && s.sub.id == subscription.as_str())
                        {
                            s.open = false;
                            if let Some(open) = self.open.get_mut(&relay) {
                                *open = open.saturating_sub(1);
                            }
                        }
                    }
                }
                // Nothing to answer: the engine already counts the relay as
                // disconnected, and no relay here sends an AUTH challenge.
                Command::Disconnect { .. } | Command::Authenticate { .. } => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use grasp_sync_core::ServiceId;
    use nostr::message::SubscriptionId;

    use super::*;

    fn subscribe(relay: &RelayUrl, id: &str, mode: SubscriptionMode) -> Command {
        Command::Subscribe {
            relay: relay.clone(),
            subscription: SubscriptionId::new(id),
            filters: vec![Filter::new().limit(0)],
            mode,
        }
    }

    #[test]
    fn replaced_live_subscriptions_are_dropped() {
        let config = Config::new(ServiceId::parse("git.example.com").unwrap());
        let infos = BTreeMap::new();
        let mut driver = Driver::new(Engine::new(config), Time::from_secs(1), &infos);
        let relay = RelayUrl::parse("wss://relay.example").unwrap();
        driver.queue.extend(
            [
                subscribe(&relay, "live-1", SubscriptionMode::Live),
                subscribe(&relay, "hist-2", SubscriptionMode::Historic),
                Command::Unsubscribe {
                    relay: relay.clone(),
                    subscription: SubscriptionId::new("live-1"),
                },
                subscribe(&relay, "live-3", SubscriptionMode::Live),
                Command::Unsubscribe {
                    relay: relay.clone(),
                    subscription: SubscriptionId::new("hist-2"),
                },
                subscribe(&relay, "live-4", SubscriptionMode::Live),
            ]
            .into_iter()
            .map(|c| (c, 1)),
        );
        driver.settle().unwrap();
        let kept: Vec<(&str, bool)> = driver.recorded[&relay]
            .iter()
            .filter(|r| r.kept())
            .map(|r| (r.sub.id.as_str(), r.open))
            .collect();
        assert_eq!(
            kept,
            [("hist-2", false), ("live-3", true), ("live-4", true)]
        );
        assert_eq!(driver.peak_open[&relay], 2);
    }

    /// A relay whose NIP-11 allows 3 subscriptions: the plan lists more REQs
    /// than that, in waves, and its peak stays within the budget.
    #[test]
    fn waves_and_peak_show_the_budget_holds() {
        let mut config = Config::new(ServiceId::parse("git.example.com").unwrap());
        config.default_budget.max_values_per_filter = 1;
        config.nip77 = false;
        let relay = RelayUrl::parse("wss://relay.example").unwrap();
        let infos = BTreeMap::from([(
            relay.clone(),
            RelayInfo {
                max_subscriptions: Some(3),
                ..RelayInfo::default()
            },
        )]);
        let mut driver = Driver::new(Engine::new(config), Time::from_secs(1_700_000_000), &infos);
        for i in 0..8u8 {
            use nostr::event::{Event, EventId, Kind, Signature, Tag, Tags};
            // The engine checks no signature: a dummy one will do.
            let mut b = [0u8; 32];
            b[0] = 2;
            b[31] = i + 1;
            let pk = nostr::key::PublicKey::from_byte_array(b);
            let tags = Tags::from_list(vec![
                Tag::parse(["d", "repo"]).unwrap(),
                Tag::parse(["relays", relay.as_str(), "wss://git.example.com"]).unwrap(),
            ]);
            let (at, kind) = (
                nostr::types::Timestamp::from_secs(1_699_999_000),
                Kind::from(30617),
            );
            let id = EventId::compute(&pk, &at, &kind, &tags, "");
            let sig = Signature::from_byte_array([1; 64]);
            let ann = Event::new(id, pk, at, kind, tags, "", sig);
            driver.input(Input::CatalogEvent(&ann));
        }
        driver.input(Input::Tick);
        driver.settle().unwrap();
        let subs = &driver.recorded[&relay];
        let historic = subs
            .iter()
            .filter(|s| s.sub.mode == SubscriptionMode::Historic)
            .count();
        assert!(historic > 3, "{historic} historic REQs");
        assert!(driver.peak_open[&relay] <= 3, "{:?}", driver.peak_open);
        let waves: std::collections::BTreeSet<u32> = subs.iter().map(|s| s.sub.wave).collect();
        assert!(waves.len() > 1, "REQs follow in waves: {waves:?}");
        assert!(waves.contains(&1));
    }
}
