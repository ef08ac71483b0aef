//! What the relay says, routed: `EVENT`, `EOSE`, `CLOSED`, `NOTICE`, AUTH
//! and NIP-77 messages go to the part that holds the subscription (one
//! lookup in the owner index), and what the part returns is applied. The
//! routing table of refusals (spec section 5) is [`Relay::refuse`].

use nostr::event::Event;
use nostr::message::SubscriptionId;

use super::auth::AuthOutcome;
use super::out::{Owner, RelayOut};
use super::refusal::{Notice, Refusal};
use super::{event_layer, layer_index, GiveUpReason, RefusalReason, Relay, Shared};
use crate::backoff::exponential;
use crate::command::{EventCheck, StoreOutcome, SubscriptionMode};
use crate::config::Timing;
use crate::nip77::LocalItem;
use crate::types::Time;

impl Relay {
    pub(crate) fn on_event(
        &mut self,
        sub: &SubscriptionId,
        event: &Event,
        now: Time,
    ) -> EventCheck {
        let verdict = match self.subs.owner(sub) {
            Some(Owner::Historic) => self
                .historic
                .on_event(sub, event, now)
                .map(|hit| (hit, SubscriptionMode::Historic)),
            Some(Owner::NegFetch) => self
                .neg
                .on_fetch_event(sub, event, now)
                .map(|hit| (hit, SubscriptionMode::Historic)),
            Some(Owner::NegOpen) => None,
            Some(Owner::Live) | None => self
                .live
                .on_event(sub, event)
                .map(|hit| (hit, SubscriptionMode::Live)),
        };
        match verdict {
            None => {
                self.stats.events_unrequested += 1;
                EventCheck::Unrequested
            }
            Some((false, _)) => {
                self.stats.events_unmatched += 1;
                EventCheck::Unmatched
            }
            Some((true, mode)) => {
                self.stats.events_received += 1;
                self.subs.answered(sub, now);
                let at = event.created_at.as_secs();
                if let Some(c) = self.last_event_at.get_mut(layer_index(event_layer(event))) {
                    *c = Some(c.map_or(at, |c| c.max(at)));
                }
                EventCheck::Accepted(mode)
            }
        }
    }

    pub(crate) fn on_eose(&mut self, sub: &SubscriptionId, now: Time, sh: &mut Shared) {
        self.subs.answered(sub, now);
        self.stats.last_eose = Some(now);
        let budget = self.budget(&sh.config);
        match self.subs.owner(sub) {
            Some(Owner::NegFetch) => {
                self.cooldown.forgive();
                let done = self
                    .neg
                    .on_fetch_eose(sub, &budget, now, &mut out!(self, sh));
                if let Some(done) = done {
                    self.apply(done, now, &sh.config);
                }
            }
            Some(Owner::Historic) => {
                self.cooldown.forgive();
                // The next page takes this page's slot, unless the budget
                // shrank below what is open while the page was on the wire
                // (a refusal of another REQ): then it waits in the queue
                // and goes once live groups are shed to fit.
                let over = self.open_subscriptions() > budget.max_subscriptions as usize;
                let hold = self.cooldown.active_until(now).or(over.then_some(now));
                let bounds = self.limits.page_bounds(&budget);
                let eose =
                    self.historic
                        .on_eose(sub, now, &budget, &bounds, hold, &mut out!(self, sh));
                if let Some(eose) = eose {
                    self.limits.learn_pages(eose.shown);
                    for pack in eose.finished {
                        self.finish_pack(pack, now, &sh.config);
                    }
                }
            }
            Some(Owner::Live) => match self.live.on_eose(sub) {
                Some(gap) => self.catch_up(gap, now, &sh.config),
                None => return,
            },
            Some(Owner::NegOpen) => return,
            None => match self.blamed.take(sub) {
                // A REQ a NOTICE refusal was blamed on, answered after all:
                // the relay refused one sent before it.
                Some((seq, refusal)) => return self.reblame(seq, refusal, now, sh),
                // A stale EOSE: noted and ignored.
                None => return,
            },
        }
        self.pump(now, sh);
    }

    pub(crate) fn on_closed(
        &mut self,
        sub: &SubscriptionId,
        message: &str,
        now: Time,
        sh: &mut Shared,
    ) {
        let refusal = Refusal::from_closed(message);
        let owner = self.subs.owner(sub);
        let throttling = matches!(
            refusal,
            Refusal::RateLimited | Refusal::TooManySubscriptions
        );
        if owner.is_none() && !throttling {
            // Some relays (rust-nostr's LocalRelay) acknowledge our CLOSE
            // with a CLOSED: not a refusal of anything we hold.
            self.subs.forget(sub);
            self.stats.stale_inputs += 1;
            return;
        }
        self.refuse(sub, owner, refusal, now, sh);
    }

    /// The routing table of refusals (spec section 5): what `refusal` of
    /// the subscription `sub` (held by `owner`) does to the relay's work.
    fn refuse(
        &mut self,
        sub: &SubscriptionId,
        owner: Option<Owner>,
        refusal: Refusal,
        now: Time,
        sh: &mut Shared,
    ) {
        self.stats.refused(refusal.reason());
        self.subs.forget(sub);
        let t = sh.config.timing.clone();
        // A rate limit or a subscription cap: the same work again at `retry`.
        // A cap refusing a REQ we no longer hold (closed or replaced before
        // the refusal came) teaches nothing about what is open now: it is
        // counted, and neither lowers the budget nor cools the relay down
        // (a burst of them used to drive a relay's budget down to one and
        // then into a 30-minute cool-down).
        let stale_cap = owner.is_none() && refusal == Refusal::TooManySubscriptions;
        let retry = if stale_cap {
            None
        } else {
            self.throttle(refusal, now, &t)
        };
        self.route_refusal(sub, owner, refusal, retry, now, sh);
    }

    /// A NOTICE `refusal` is blamed on the unanswered `sub` (call before it
    /// is forgotten).
    fn blame(&mut self, sub: &SubscriptionId, refusal: Refusal) {
        if let Some(seq) = self.subs.unanswered_seq(sub) {
            self.blamed.blame(sub, seq, refusal);
        }
    }

    /// A NOTICE refusal was blamed on a REQ that the relay answered after
    /// all (it was sent after the refused one, which the relay had not
    /// answered when the NOTICE came): the blame moves to the latest REQ
    /// still unanswered among those sent before it. Counted and learned
    /// from once already; only the work is routed again.
    fn reblame(&mut self, before: u64, refusal: Refusal, now: Time, sh: &mut Shared) {
        let Some(sub) = self.subs.latest_unanswered_before(before).cloned() else {
            return;
        };
        let owner = self.subs.owner(&sub);
        self.blame(&sub, refusal);
        out!(self, sh).unsubscribe(&sub);
        let retry = match refusal {
            Refusal::RateLimited | Refusal::TooManySubscriptions => {
                Some(self.cooldown.active_until(now).unwrap_or(now))
            }
            _ => None,
        };
        self.route_refusal(&sub, owner, refusal, retry, now, sh);
    }

    /// What a refusal of `sub` (held by `owner`) does to its work; `retry`
    /// is when throttled work goes again.
    fn route_refusal(
        &mut self,
        sub: &SubscriptionId,
        owner: Option<Owner>,
        refusal: Refusal,
        retry: Option<Time>,
        now: Time,
        sh: &mut Shared,
    ) {
        let t = sh.config.timing.clone();
        let owner = match owner {
            Some(Owner::NegOpen | Owner::NegFetch) => {
                if let Some(job) = self.neg.take(sub) {
                    match retry {
                        Some(at) => self.historic.push_front(job.into_pack(), at),
                        None => {
                            let done = self.neg.refused(job, now, &mut out!(self, sh));
                            self.apply(done, now, &sh.config);
                        }
                    }
                }
                if retry.is_some() {
                    self.fit_budget(now, sh);
                }
                self.pump(now, sh);
                return;
            }
            Some(owner) => owner,
            // A subscription we no longer hold: no work to route, but what
            // it taught still holds (close what no longer fits) and the
            // budget may have room for queued work.
            None => {
                if retry.is_some() {
                    self.fit_budget(now, sh);
                }
                return self.pump(now, sh);
            }
        };
        match refusal {
            Refusal::RateLimited | Refusal::TooManySubscriptions => {
                let at = retry.unwrap_or(now);
                self.historic.requeue(sub, at);
                self.live.retry(sub, now, at, false);
            }
            // Authenticated and still refused: this relay does not serve us.
            // Asking again would only loop.
            Refusal::AuthRequired if sh.config.auth_enabled && self.auth.is_accepted() => {
                self.give_up_sub(sub, GiveUpReason::AuthRequired);
            }
            Refusal::AuthRequired if sh.config.auth_enabled => {
                self.auth.need(now);
                self.historic.requeue(sub, now);
                self.live.retry(sub, now, now, false);
                self.try_authenticate(now, sh);
            }
            Refusal::AuthRequired => self.give_up_sub(sub, GiveUpReason::AuthRequired),
            Refusal::Restricted(_) => self.give_up_sub(sub, GiveUpReason::Refused),
            Refusal::Malformed(_) => match self.historic.split_refused(sub, now) {
                Some(given_up) => self.give_up(given_up, GiveUpReason::Rejected),
                None => self.live.split(sub, now),
            },
            Refusal::Other if owner == Owner::Historic => {
                let given_up = self.historic.retry_later(sub, now, &t, &mut self.rng);
                self.give_up(given_up, GiveUpReason::Unresponsive);
            }
            Refusal::Other => {
                let delay = exponential(t.backoff_initial, t.backoff_max, self.live.attempts(sub));
                let at = now.plus(self.rng.jitter(delay, t.backoff_jitter));
                self.live.retry(sub, now, at, true);
            }
        }
        if retry.is_some() {
            self.fit_budget(now, sh);
        }
        self.pump(now, sh);
    }

    /// What a rate limit or a subscription cap teaches, and when the refused
    /// work goes again (`None` for other refusals). Over a cap with several
    /// subscriptions open, hold one fewer and go again at once: the relay is
    /// counting, a cool-down would only stall. A rate limit (or a cap
    /// refusing our only subscription) cools the relay down.
    fn throttle(&mut self, refusal: Refusal, now: Time, t: &Timing) -> Option<Time> {
        let open = self.open_subscriptions();
        match refusal {
            Refusal::TooManySubscriptions if open > 1 => {
                self.limits.learn_too_many(open);
                Some(now)
            }
            Refusal::RateLimited | Refusal::TooManySubscriptions => {
                self.limits.learn_lower(open);
                self.cooldown.start(now, t);
                Some(self.cooldown.until().unwrap_or(now))
            }
            _ => None,
        }
    }

    /// The relay refuses `sub` until the daily pass.
    fn give_up_sub(&mut self, sub: &SubscriptionId, reason: GiveUpReason) {
        if let Some(packs) = self.historic.take(sub) {
            self.give_up(packs, reason);
        }
        self.live.refuse(sub);
    }

    pub(crate) fn on_notice(&mut self, message: &str, now: Time, sh: &mut Shared) {
        self.stats.notices += 1;
        let notice = Notice::classify(message);
        if notice.refuses_nip77 {
            if let Some(done) = self.neg.on_refusal_notice(now, &mut out!(self, sh)) {
                self.apply(done, now, &sh.config);
                self.pump(now, sh);
                return;
            }
        }
        let Some(refusal) = notice.refuses_req else {
            return;
        };
        match self.subs.blame_candidate(now).cloned() {
            Some(sub) => {
                // A NOTICE names no subscription: whichever REQ the relay
                // refused, closing the one we blame keeps both sides' counts
                // equal (a wrongly blamed REQ is re-sent; should the relay
                // answer it, the blame moves to an earlier one, see
                // `reblame`).
                let owner = self.subs.owner(&sub);
                self.blame(&sub, refusal);
                out!(self, sh).unsubscribe(&sub);
                self.refuse(&sub, owner, refusal, now, sh);
            }
            // Nothing unanswered to blame (or only REQs sent after the
            // NOTICE left the relay: it is about one we closed before its
            // answer): a rate limit still cools the relay down; a cap on
            // subscriptions names none of ours, nothing to hold fewer of.
            None => {
                self.stats.refused(refusal.reason());
                if refusal == Refusal::RateLimited {
                    self.throttle(refusal, now, &sh.config.timing);
                }
            }
        }
    }

    pub(crate) fn on_auth_challenge(&mut self, challenge: &str, now: Time, sh: &mut Shared) {
        self.auth.on_challenge(challenge);
        self.try_authenticate(now, sh);
    }

    fn try_authenticate(&mut self, now: Time, sh: &mut Shared) {
        let connected = self.is_connected();
        if let Some(challenge) =
            self.auth
                .challenge_to_answer(now, sh.config.auth_enabled, connected)
        {
            out!(self, sh).authenticate(challenge);
        }
    }

    pub(crate) fn on_auth_result(&mut self, accepted: bool, now: Time, sh: &mut Shared) {
        match self.auth.on_result(accepted) {
            AuthOutcome::Accepted => self.pump(now, sh),
            AuthOutcome::FailedWhileNeeded => self.auth_gave_up(),
            AuthOutcome::Failed => {}
        }
    }

    /// AUTH failed while work waited for it: everything waiting is given up
    /// until the daily pass.
    pub(super) fn auth_gave_up(&mut self) {
        self.stats.refused(RefusalReason::AuthFailed);
        let queued = self.historic.drain_queue();
        self.give_up(queued, GiveUpReason::AuthRequired);
        self.live.refuse_closed();
    }

    // ----- NIP-77 ------------------------------------------------------------

    pub(crate) fn on_local_items(
        &mut self,
        request: u64,
        items: Option<&[LocalItem]>,
        now: Time,
        sh: &mut Shared,
    ) {
        let max_len = self.limits.max_message_length();
        let mut out = RelayOut::new(&self.url, &mut sh.out, &mut self.subs, &mut self.stats);
        let Some(done) =
            self.neg
                .on_local_items(request, items, &sh.rejected, max_len, now, &mut out)
        else {
            return;
        };
        self.apply(done, now, &sh.config);
        self.pump(now, sh);
    }

    pub(crate) fn on_neg_msg(
        &mut self,
        sub: &SubscriptionId,
        message: &str,
        now: Time,
        sh: &mut Shared,
    ) {
        let budget = self.budget(&sh.config);
        let Some(done) = self
            .neg
            .on_msg(sub, message, &budget, now, &mut out!(self, sh))
        else {
            return;
        };
        self.apply(done, now, &sh.config);
        self.pump(now, sh);
    }

    pub(crate) fn on_neg_err(&mut self, sub: &SubscriptionId, now: Time, sh: &mut Shared) {
        let Some(done) = self.neg.on_err(sub, now, &mut out!(self, sh)) else {
            return;
        };
        self.apply(done, now, &sh.config);
        self.pump(now, sh);
    }

    // ----- the store ---------------------------------------------------------

    pub(crate) fn on_store(&mut self, outcome: StoreOutcome) {
        match outcome {
            StoreOutcome::Stored => self.stats.events_stored += 1,
            StoreOutcome::Duplicate => self.stats.events_duplicate += 1,
            StoreOutcome::Rejected => self.stats.events_rejected += 1,
        }
    }

    pub(crate) fn on_invalid(&mut self) {
        self.stats.events_invalid += 1;
    }
}
