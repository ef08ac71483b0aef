//! A pack: the unit of historic work that the historic queue and the NIP-77
//! jobs hand to each other — targets of one layer and the pagination of
//! each of the layer's filters. A value type; it owns no relay state.

use std::collections::BTreeSet;

use nostr::filter::Filter;
use nostr::types::Timestamp;

use crate::filters::{build_filter, FilterKind};
use crate::paging::FilterPaging;
use crate::types::{Layer, TargetKey, Time};

/// Targets of one layer and the pagination of each of the layer's filters.
/// A pack is carried out with NIP-77 where the relay supports it (one
/// filter after the other) and with paged REQ otherwise; a filter that
/// falls back from NIP-77 is paged, the others are done. Either way the
/// pack's targets are confirmed when every filter is.
#[derive(Clone, Debug)]
pub(crate) struct Pack {
    pub layer: Layer,
    pub targets: BTreeSet<TargetKey>,
    pub filters: Vec<(FilterKind, FilterPaging)>,
    pub since: Option<u64>,
    pub ready_at: Time,
    /// When a batch of new targets opened in this pack (it goes out once
    /// targets stop joining, or the batch delay is up).
    pub batch_started: Option<Time>,
    /// Timeouts and unexplained refusals so far.
    pub attempts: u32,
    /// Travels in a REQ of its own (after an `error:`-style refusal of a
    /// shared REQ, to tell which pack the relay objects to).
    pub alone: bool,
    /// Already halved (or, with one target, retried) after such a refusal.
    pub split: bool,
    /// Carried by paged REQ only: its open filters fell back from NIP-77.
    pub paged: bool,
    /// NIP-77 already had its chance at the unproven filters.
    pub rescued: bool,
}

impl Pack {
    pub fn new(layer: Layer, since: Option<u64>, now: Time) -> Self {
        Pack {
            layer,
            targets: BTreeSet::new(),
            filters: layer
                .filter_kinds()
                .iter()
                .map(|k| (*k, FilterPaging::new(since)))
                .collect(),
            since,
            ready_at: now,
            batch_started: None,
            attempts: 0,
            alone: false,
            split: false,
            paged: false,
            rescued: false,
        }
    }

    /// No page of it was answered yet.
    pub fn is_fresh(&self) -> bool {
        self.filters.iter().all(|(_, p)| p.is_fresh())
    }

    /// Every filter is done.
    pub fn is_done(&self) -> bool {
        self.filters.iter().all(|(_, p)| p.is_done())
    }

    /// Every filter proved that it saw all the relay holds for it.
    pub fn is_proven(&self) -> bool {
        self.filters.iter().all(|(_, p)| p.is_complete())
    }

    /// Opens the unproven filters again for NIP-77 (which does not page, so
    /// a cap on pages does not hide events from it); the others stay done.
    pub fn reopen_unproven(&mut self) {
        for (_, p) in &mut self.filters {
            if !p.is_complete() {
                *p = FilterPaging::new(self.since);
            }
        }
        self.paged = false;
        self.rescued = true;
    }

    /// Filters that still need pages.
    pub fn open_filters(&self) -> usize {
        self.filters.iter().filter(|(_, p)| !p.is_done()).count()
    }

    /// Restart pagination from the top.
    pub fn restart(&mut self) {
        for (_, p) in &mut self.filters {
            *p = FilterPaging::new(self.since);
        }
    }

    /// Filter `i` over the whole range at once (no `limit`, no `until`):
    /// what NIP-77 reconciles.
    pub fn whole_filter(&self, i: usize) -> Option<Filter> {
        let (kind, _) = self.filters.get(i)?;
        let f = build_filter(*kind, self.targets.iter());
        Some(match self.since {
            Some(s) => f.since(Timestamp::from_secs(s)),
            None => f,
        })
    }
}
