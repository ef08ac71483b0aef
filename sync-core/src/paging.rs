//! Pagination of one historic filter with `limit` and `until` (spec section 3).
//!
//! Relays cap pages silently and some ignore `limit` or `until`, so a short page
//! proves nothing. A filter is done only when a page brings no event we had not
//! already seen in this pass. A page that is entirely one second and brings
//! nothing new is asked again for that second alone with a doubled limit (up to
//! a cap) before `until` steps one second lower, so a burst of events sharing
//! one `created_at` is neither looped on forever nor skipped.

use std::collections::BTreeSet;

use nostr::event::EventId;
use nostr::filter::Filter;
use nostr::types::Timestamp;

/// Where a filter's pagination stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    /// Pages ending at `until` (inclusive; `None` = from the newest).
    Normal { until: Option<u64> },
    /// Asking one second alone (`since` = `until` = `second`) with `limit`.
    Tie { second: u64, limit: u32 },
    /// Nothing more to fetch.
    Done,
}

/// Pagination state of one filter over a whole historic pass.
#[derive(Clone, Debug)]
pub struct FilterPaging {
    mode: Mode,
    /// Lower bound of the pass (catch-up), if any.
    since: Option<u64>,
    /// Ids already seen at the boundary second (the oldest second reached).
    boundary: BTreeSet<EventId>,
    boundary_second: Option<u64>,
    // The page in flight: every (created_at, id) that matched this filter,
    // judged at the page's end (see `end_page`).
    page_events: Vec<(u64, EventId)>,
    page_count: u32,
    page_new: u32,
    page_oldest: Option<u64>,
    page_newest: Option<u64>,
    /// Pages sent so far in this pass.
    pages: u32,
    /// The largest normal (not one-second) page the relay sent in this pass.
    largest_page: u32,
}

/// Pages smaller than this are taken as complete even when they are all one second.
const TIE_MIN_PAGE: u32 = 20;

/// What the next request for a filter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// `since` of the page.
    pub since: Option<u64>,
    /// `until` of the page.
    pub until: Option<u64>,
    /// `limit` of the page.
    pub limit: u32,
}

impl FilterPaging {
    /// A fresh pass, optionally bounded below by `since` (seconds).
    pub fn new(since: Option<u64>) -> Self {
        FilterPaging {
            mode: Mode::Normal { until: None },
            since,
            boundary: BTreeSet::new(),
            boundary_second: None,
            page_events: Vec::new(),
            page_count: 0,
            page_new: 0,
            page_oldest: None,
            page_newest: None,
            pages: 0,
            largest_page: 0,
        }
    }

    /// True when the filter needs no more pages.
    pub fn is_done(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Ends the pass without more pages (the filter was reconciled with
    /// NIP-77 and its missing events fetched by id).
    pub fn finish(&mut self) {
        self.mode = Mode::Done;
    }

    /// True before the first page was answered (the pass has made no progress).
    pub fn is_fresh(&self) -> bool {
        self.pages == 0 && self.mode == (Mode::Normal { until: None })
    }

    /// The pass's lower bound.
    pub fn since(&self) -> Option<u64> {
        self.since
    }

    /// Pages answered so far.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The request for the next page (`page_limit` is the relay's normal limit).
    pub fn request(&self, page_limit: u32) -> PageRequest {
        match self.mode {
            Mode::Normal { until } => PageRequest {
                since: self.since,
                until,
                limit: page_limit,
            },
            Mode::Tie { second, limit } => PageRequest {
                since: Some(second),
                until: Some(second),
                limit,
            },
            Mode::Done => PageRequest {
                since: self.since,
                until: None,
                limit: 0,
            },
        }
    }

    /// `base` with this page's `since`, `until` and `limit` applied.
    pub fn apply(&self, base: Filter, page_limit: u32) -> Filter {
        let req = self.request(page_limit);
        let mut f = base.limit(req.limit as usize);
        if let Some(s) = req.since {
            f = f.since(Timestamp::from_secs(s));
        }
        if let Some(u) = req.until {
            f = f.until(Timestamp::from_secs(u));
        }
        f
    }

    /// Starts counting a new page (call when the page's REQ is sent).
    pub fn start_page(&mut self) {
        self.page_events = Vec::new();
        self.page_count = 0;
        self.page_new = 0;
        self.page_oldest = None;
        self.page_newest = None;
    }

    /// Notes one event of the current page that matches this filter. Every
    /// event counts, whatever the store later decides.
    ///
    /// A REQ carries several filters and the relay sends each event once, so
    /// an event matching this filter may have been sent for another one: an
    /// older event than this filter's own page reaches. The page is therefore
    /// judged at its end on the newest `limit` events only (see `end_page`).
    pub fn observe(&mut self, id: EventId, created_at: u64) {
        if self.since.is_some_and(|s| created_at < s) {
            return; // the relay ignored `since`: nothing we asked for
        }
        match self.mode {
            Mode::Done => return,
            // Outside what this filter's page asked: sent for another filter.
            Mode::Normal { until: Some(u) } if created_at > u => return,
            Mode::Tie { second, .. } if created_at != second => return,
            _ => {}
        }
        self.page_events.push((created_at, id));
    }

    /// Reduces the page to what this filter's own answer can have been (its
    /// newest `requested` events, and every event sharing the oldest
    /// second kept), and counts it against the pass.
    fn settle_page(&mut self, requested: u32) {
        let mut events = std::mem::take(&mut self.page_events);
        events.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let keep = (requested as usize).max(1);
        if events.len() > keep {
            let cut = events[keep - 1].0;
            let end = events.partition_point(|(t, _)| *t >= cut);
            events.truncate(end);
        }
        self.page_count = u32::try_from(events.len()).unwrap_or(u32::MAX);
        self.page_new = 0;
        self.page_newest = events.first().map(|(t, _)| *t);
        self.page_oldest = events.last().map(|(t, _)| *t);
        for (created_at, id) in events {
            let is_new = match self.mode {
                Mode::Done => false,
                // First page: everything is new.
                Mode::Normal { until: None } => true,
                Mode::Normal { until: Some(u) } => {
                    created_at < u || (created_at == u && !self.boundary.contains(&id))
                }
                Mode::Tie { second, .. } => created_at == second && !self.boundary.contains(&id),
            };
            if is_new {
                self.page_new += 1;
            }
            // Track ids at the oldest second reached in this pass: they are the
            // only ones a later page (with `until` = that second) can send again.
            match self.boundary_second {
                Some(b) if created_at > b => {}
                Some(b) if created_at == b => {
                    self.boundary.insert(id);
                }
                _ => {
                    self.boundary.clear();
                    self.boundary.insert(id);
                    self.boundary_second = Some(created_at);
                }
            }
        }
    }

    /// The page ended (EOSE): decide the next page. Returns true when the
    /// filter is done.
    pub fn end_page(&mut self, page_limit: u32, max_page_limit: u32) -> bool {
        self.pages = self.pages.saturating_add(1);
        // A one-second page can only hide more events when it looks truncated:
        // it filled the limit it asked for, or it is as large as any normal
        // page of this pass (a silent cap) and not tiny (no relay caps pages
        // below a few dozen).
        let requested = match self.mode {
            Mode::Tie { limit, .. } => limit,
            _ => page_limit,
        };
        self.settle_page(requested);
        let normal = matches!(self.mode, Mode::Normal { .. });
        let truncated = self.page_count >= requested
            || (self.page_count >= TIE_MIN_PAGE && self.page_count >= self.largest_page);
        let all_one_second =
            truncated && self.page_count > 0 && self.page_oldest == self.page_newest;
        if normal {
            self.largest_page = self.largest_page.max(self.page_count);
        }
        self.mode = match self.mode {
            Mode::Done => Mode::Done,
            Mode::Normal { until } => {
                if self.page_new > 0 {
                    match self.page_oldest {
                        // Stepping below `since` would fetch what we did not ask for.
                        Some(o) if self.since.is_some_and(|s| o < s) => Mode::Done,
                        Some(o) => Mode::Normal { until: Some(o) },
                        None => Mode::Done,
                    }
                } else if all_one_second
                    && until.is_some()
                    && self.page_oldest == until
                    && page_limit.saturating_mul(2) <= max_page_limit
                {
                    Mode::Tie {
                        second: until.unwrap_or_default(),
                        limit: page_limit.saturating_mul(2),
                    }
                } else if all_one_second && until.is_some() && self.page_oldest == until {
                    self.step_below(until.unwrap_or_default())
                } else {
                    Mode::Done
                }
            }
            Mode::Tie { second, limit } => {
                if self.page_new > 0 {
                    Mode::Tie { second, limit }
                } else if limit.saturating_mul(2) <= max_page_limit {
                    Mode::Tie {
                        second,
                        limit: limit.saturating_mul(2),
                    }
                } else {
                    self.step_below(second)
                }
            }
        };
        self.start_page();
        self.is_done()
    }

    fn step_below(&mut self, second: u64) -> Mode {
        if second == 0 || self.since.is_some_and(|s| second <= s) {
            return Mode::Done;
        }
        self.boundary.clear();
        self.boundary_second = None;
        Mode::Normal {
            until: Some(second - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> EventId {
        let mut b = [0u8; 32];
        b[24..].copy_from_slice(&n.to_be_bytes());
        EventId::from_byte_array(b)
    }

    /// A relay holding `events` (id, created_at) that answers `limit`/`until`/`since`
    /// but silently caps pages at `cap`. Returns the ids fetched over the pass.
    fn run(
        events: &[(u64, u64)],
        cap: u32,
        page_limit: u32,
        max_limit: u32,
    ) -> (BTreeSet<u64>, u32) {
        let mut sorted: Vec<(u64, u64)> = events.to_vec();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut p = FilterPaging::new(None);
        let mut got = BTreeSet::new();
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages < 10_000, "paging does not terminate");
            let req = p.request(page_limit);
            p.start_page();
            let n = req.limit.min(cap) as usize;
            for (i, t) in sorted
                .iter()
                .filter(|(_, t)| {
                    req.until.is_none_or(|u| *t <= u) && req.since.is_none_or(|s| *t >= s)
                })
                .take(n)
            {
                got.insert(*i);
                p.observe(id(*i), *t);
            }
            if p.end_page(page_limit, max_limit) {
                break;
            }
        }
        (got, pages)
    }

    #[test]
    fn pages_through_a_silent_cap() {
        let events: Vec<(u64, u64)> = (0..1200).map(|i| (i, 1_000_000 - i)).collect();
        let (got, pages) = run(&events, 100, 500, 4000);
        assert_eq!(got.len(), 1200);
        assert!(pages >= 12);
    }

    #[test]
    fn one_second_burst_larger_than_a_page() {
        let mut events: Vec<(u64, u64)> = (0..700).map(|i| (i, 5000)).collect();
        events.extend((700..800).map(|i| (i, 4000 - i)));
        // The relay honours limits up to 1000: doubling the limit on the
        // one-second page reaches all 700.
        let (got, _) = run(&events, 1000, 500, 4000);
        assert_eq!(got.len(), 800);
    }

    #[test]
    fn burst_beyond_the_cap_steps_down_instead_of_looping() {
        let mut events: Vec<(u64, u64)> = (0..600).map(|i| (i, 5000)).collect();
        events.push((9999, 10));
        let (got, pages) = run(&events, 500, 500, 500);
        // The relay can never show more than 500 of that second; we move on.
        assert!(got.contains(&9999));
        assert!(pages < 10);
    }

    #[test]
    fn a_lone_event_costs_two_pages() {
        let (got, pages) = run(&[(1, 100)], 500, 500, 4000);
        assert_eq!(got.len(), 1);
        assert_eq!(pages, 2);
    }

    #[test]
    fn empty_relay_is_one_page() {
        let (got, pages) = run(&[], 500, 500, 4000);
        assert!(got.is_empty());
        assert_eq!(pages, 1);
    }

    #[test]
    fn relay_ignoring_until_terminates() {
        let mut p = FilterPaging::new(None);
        for _ in 0..3 {
            p.start_page();
            for i in 0..10 {
                p.observe(id(i), 100 + i);
            }
            if p.end_page(500, 4000) {
                return;
            }
        }
        panic!("a relay that repeats the same page must end the pass");
    }

    #[test]
    fn since_bounds_the_pass() {
        let mut p = FilterPaging::new(Some(50));
        let r = p.request(500);
        assert_eq!(r.since, Some(50));
        p.start_page();
        p.observe(id(1), 60);
        p.observe(id(2), 40); // relay ignored since
        assert!(!p.end_page(500, 4000), "one new event: ask below it");
        assert_eq!(p.request(500).until, Some(60));
        p.observe(id(1), 60);
        p.observe(id(2), 40);
        assert!(p.end_page(500, 4000), "nothing new at or above since");
    }

    /// A REQ carries several filters and the relay sends each event once: an
    /// event that matches this filter but was sent for another one can be
    /// older than this filter's own page reaches. Paging must not jump to it.
    #[test]
    fn events_sent_for_another_filter_do_not_skip_a_page() {
        // This filter's relay answer: the newest 5 of 10 (seconds 100..=109);
        // the other filter of the REQ also sent an old match at second 10.
        let mut p = FilterPaging::new(None);
        p.start_page();
        for i in 0..5 {
            p.observe(id(i), 109 - i);
        }
        p.observe(id(99), 10);
        assert!(!p.end_page(5, 40));
        assert_eq!(p.request(5).until, Some(105), "not 10");
        for i in 4..9 {
            p.observe(id(i), 109 - i);
        }
        assert!(!p.end_page(5, 40));
        assert_eq!(p.request(5).until, Some(101));
    }

    /// A tie page asked with a doubled limit must not make a later full page
    /// at the normal limit look complete.
    #[test]
    fn a_doubled_tie_page_does_not_end_the_pass_early() {
        let mut events: Vec<(u64, u64)> = (0..700).map(|i| (i, 5000)).collect();
        events.extend((700..1400).map(|i| (i, 4000)));
        events.extend((1400..1500).map(|i| (i, 3000 - i)));
        // relay honours limit up to 1000
        let (got, _) = run(&events, 1000, 500, 4000);
        assert_eq!(got.len(), 1500, "lost {} events", 1500 - got.len());
    }

    /// A relay whose `max_limit` is tiny: a full one-second page steps below
    /// that second instead of ending the pass.
    #[test]
    fn a_tiny_max_limit_steps_below_a_full_second() {
        let mut events: Vec<(u64, u64)> = (0..15).map(|i| (i, 5000)).collect();
        events.extend((15..115).map(|i| (i, 4000 - i)));
        let (got, _) = run(&events, 10, 10, 10);
        // Spec: tie -> cannot double -> step until one second lower. Only the 5
        // hidden events of second 5000 are unreachable.
        assert!(got.len() >= 110, "got only {} of 115", got.len());
    }
}
