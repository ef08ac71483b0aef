//! Reading everything a relay holds for one filter, newest first: the one
//! paging rule of the relay sink, used by the catalog feed's history passes
//! ([`super::feed`]) and by the NIP-77 items query ([`super::items`]).
//!
//! Pages ask `limit` events with an inclusive `until` = the oldest
//! `created_at` of the previous page; the caller deduplicates ids and says
//! which events were new. The pass ends when two pages in a row bring
//! nothing new (after the first such page, `until` steps one second back,
//! so a second holding more events than a page does not loop forever), when
//! a page is empty, or when `until` falls below `since`. The page length is
//! never taken as an end signal, so relays that cap pages silently below the
//! requested limit are read completely.
//!
//! This is not the engine's [`FilterPaging`](grasp_sync_core::paging::FilterPaging):
//! that one judges pages of a remote relay for confirmation (and asks a
//! crowded second alone with doubled limits); this one only has to read our
//! own relay to the end, and keeps the sink's behaviour as it was.

use nostr::filter::Filter;
use nostr::types::Timestamp;

/// Where a pass over one filter stands. Copy: a pass is resumed from where
/// the last complete page left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HistoryPager {
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    /// Consecutive pages that brought nothing new.
    idle_pages: u8,
    /// The page being read: its oldest event at or below `until`, and how
    /// many of its events were new.
    oldest: Option<Timestamp>,
    new: usize,
}

impl HistoryPager {
    /// A pass from the newest event down to `since` (or to the oldest).
    pub(super) fn new(since: Option<Timestamp>) -> Self {
        HistoryPager {
            since,
            until: None,
            idle_pages: 0,
            oldest: None,
            new: 0,
        }
    }

    /// The next page's filter: `base` with `limit`, the pass's `since` and
    /// the page's `until`. Starts the page.
    pub(super) fn page(&mut self, base: Filter, limit: usize) -> Filter {
        self.oldest = None;
        self.new = 0;
        let mut filter = base.limit(limit.max(1));
        if let Some(since) = self.since {
            filter = filter.since(since);
        }
        if let Some(until) = self.until {
            filter = filter.until(until);
        }
        filter
    }

    /// An event of the page, new or not. One newer than `until` (a relay
    /// ignoring it) is not a step backwards; returns false for it.
    pub(super) fn saw(&mut self, created_at: Timestamp) -> bool {
        if self.until.is_some_and(|until| created_at > until) {
            return false;
        }
        self.oldest = Some(self.oldest.map_or(created_at, |o| o.min(created_at)));
        true
    }

    /// The event just seen was new in this pass.
    pub(super) fn fresh(&mut self) {
        self.new += 1;
    }

    /// The page ended (`EOSE`); true when the pass is over.
    pub(super) fn end_page(&mut self) -> bool {
        let finished = match self.oldest {
            None => true,
            Some(oldest) if self.new > 0 => {
                self.until = Some(oldest);
                self.idle_pages = 0;
                false
            }
            Some(oldest) => {
                self.idle_pages += 1;
                if self.idle_pages >= 2 || oldest.as_secs() == 0 {
                    true
                } else {
                    self.until = Some(Timestamp::from_secs(oldest.as_secs() - 1));
                    false
                }
            }
        };
        let below_since = matches!((self.since, self.until), (Some(s), Some(u)) if u < s);
        finished || below_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    /// Plays one page: `(created_at, new)` per event; returns the pass's end.
    fn page(p: &mut HistoryPager, events: &[(u64, bool)]) -> (Filter, bool) {
        let filter = p.page(Filter::new(), 3);
        for &(at, new) in events {
            if p.saw(t(at)) && new {
                p.fresh();
            }
        }
        (filter, p.end_page())
    }

    #[test]
    fn pages_step_down_to_the_oldest_new_event() {
        let mut p = HistoryPager::new(None);
        let (f, done) = page(&mut p, &[(30, true), (20, true), (10, true)]);
        assert_eq!((f.limit, f.until, done), (Some(3), None, false));
        // The next page starts at the oldest second, inclusive.
        let (f, done) = page(&mut p, &[(10, false), (9, true), (8, true)]);
        assert_eq!((f.until, done), (Some(t(10)), false));
        let (f, done) = page(&mut p, &[]);
        assert_eq!((f.until, done), (Some(t(8)), true), "an empty page ends it");
    }

    #[test]
    fn a_crowded_second_is_stepped_past_then_two_idle_pages_end_it() {
        let mut p = HistoryPager::new(None);
        page(&mut p, &[(50, true), (50, true), (50, true)]);
        // Capped: the same second again, nothing new: one second back.
        let (f, done) = page(&mut p, &[(50, false), (50, false), (50, false)]);
        assert_eq!((f.until, done), (Some(t(50)), false));
        // Older events found: idle count starts over.
        let (f, done) = page(&mut p, &[(40, true)]);
        assert_eq!((f.until, done), (Some(t(49)), false));
        page(&mut p, &[(40, false)]);
        let (f, done) = page(&mut p, &[(39, false)]);
        assert_eq!(
            (f.until, done),
            (Some(t(39)), true),
            "two idle pages in a row"
        );
    }

    #[test]
    fn events_newer_than_until_do_not_move_it() {
        let mut p = HistoryPager::new(None);
        page(&mut p, &[(30, true)]);
        let filter = p.page(Filter::new(), 3);
        assert_eq!(filter.until, Some(t(30)));
        assert!(!p.saw(t(99)), "a relay ignoring until");
        p.fresh();
        assert!(p.end_page(), "nothing at or below until: the pass is over");
    }

    #[test]
    fn since_bounds_the_pass() {
        let mut p = HistoryPager::new(Some(t(100)));
        let (f, done) = page(&mut p, &[(150, true), (120, true)]);
        assert_eq!((f.since, done), (Some(t(100)), false));
        let (_, done) = page(&mut p, &[(120, false)]);
        assert!(!done, "one idle page steps to 119");
        let mut p = HistoryPager::new(Some(t(100)));
        page(&mut p, &[(100, true)]);
        let (_, done) = page(&mut p, &[(100, false)]);
        assert!(done, "until 99 is below since 100");
        let mut p = HistoryPager::new(None);
        page(&mut p, &[(0, true)]);
        assert!(page(&mut p, &[(0, false)]).1, "second 0 cannot step back");
    }
}
