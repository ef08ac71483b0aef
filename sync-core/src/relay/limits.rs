//! What a relay allows: its NIP-11 limits and the subscription cap learned
//! from refusals, turned into the budget every plan stays within (spec
//! section 6).

use crate::info::{Budget, RelayInfo};
use crate::paging::{PageBounds, PageEvidence};

/// The relay's published and learned limits.
#[derive(Clone, Debug, Default)]
pub(crate) struct Limits {
    info: Option<RelayInfo>,
    learned_max_subs: Option<u32>,
    /// What its pages showed of a silent cap.
    pages: PageEvidence,
}

impl Limits {
    /// The budget to plan within: `defaults` narrowed by NIP-11 and by what
    /// refusals taught us.
    pub fn budget(&self, defaults: &Budget) -> Budget {
        Budget::derive(defaults, self.info.as_ref(), self.learned_max_subs)
    }

    /// The NIP-11 document, once the host reported one (empty when the
    /// relay serves none).
    pub fn info(&self) -> Option<&RelayInfo> {
        self.info.as_ref()
    }

    pub fn set_info(&mut self, info: RelayInfo) {
        self.info = Some(info);
    }

    /// Whether NIP-11 claims NIP-77.
    pub fn claims_nip77(&self) -> bool {
        self.info.as_ref().is_some_and(|i| i.supports(77))
    }

    /// NIP-11 `max_message_length`.
    pub fn max_message_length(&self) -> Option<u32> {
        self.info.as_ref().and_then(|i| i.max_message_length)
    }

    pub fn learned_max_subs(&self) -> Option<u32> {
        self.learned_max_subs
    }

    /// Hold one subscription fewer than the `open` ones, after silence or a
    /// rate limit. Two slots (one live, one historic) is the floor: a relay
    /// that refuses even that is rate limiting, not counting.
    pub fn learn_lower(&mut self, open: usize) {
        self.learn_at_most((open as u32).saturating_sub(1).max(2));
    }

    /// The relay said it holds too many of our `open` subscriptions: hold
    /// one fewer, down to a single one (a relay serving one REQ at a time).
    pub fn learn_too_many(&mut self, open: usize) {
        self.learn_at_most((open as u32).saturating_sub(1).max(1));
    }

    fn learn_at_most(&mut self, learned: u32) {
        self.learned_max_subs = Some(self.learned_max_subs.map_or(learned, |l| l.min(learned)));
    }

    /// The bounds a page is judged within.
    pub fn page_bounds(&self, budget: &Budget) -> PageBounds {
        PageBounds {
            page_limit: budget.page_limit,
            max_page_limit: budget.max_page_limit,
            seen: self.pages,
        }
    }

    /// Adds what a page showed of the relay's page sizes.
    pub fn learn_pages(&mut self, shown: PageEvidence) {
        self.pages.merge(shown);
    }

    /// Forgets what refusals and pages taught (the daily pass).
    pub fn forget_learned(&mut self) {
        self.learned_max_subs = None;
        self.pages = PageEvidence::default();
    }

    /// Restores saved limits.
    pub fn restore(&mut self, info: Option<RelayInfo>, learned_max_subs: Option<u32>) {
        self.info = info;
        self.learned_max_subs = learned_max_subs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_only_lowers_and_never_below_two() {
        let mut l = Limits::default();
        let d = Budget::default();
        assert_eq!(l.budget(&d).max_subscriptions, 10);
        l.learn_lower(6);
        assert_eq!(l.learned_max_subs(), Some(5));
        l.learn_lower(9);
        assert_eq!(l.learned_max_subs(), Some(5), "never raised by learning");
        l.learn_lower(1);
        assert_eq!(l.budget(&d).max_subscriptions, 2);
        l.set_info(RelayInfo {
            max_subscriptions: Some(1),
            supported_nips: vec![77],
            ..RelayInfo::default()
        });
        assert_eq!(
            l.budget(&d).max_subscriptions,
            1,
            "published below the floor"
        );
        assert!(l.claims_nip77());
        l.forget_learned();
        assert_eq!(l.learned_max_subs(), None);
    }
}
