//! [`Admission`] as a `nostr-relay-builder` 0.44 write policy (feature
//! `relay-builder-044`): `RelayBuilder::default().write_policy(admission)`
//! makes the relay take exactly what the GRASP acceptance rule takes, and
//! tells the sync of the announcements, root events and deletions it takes.

use std::net::SocketAddr;

use grasp_sync_core::Verdict;
use nostr_relay_builder::prelude::{BoxedFuture, Event, PolicyResult, WritePolicy};

use crate::Admission;

impl WritePolicy for Admission {
    /// [`Admission::admit`]: `Accept` for what the service takes (catalog
    /// events go to the engine), `Reject` with the reason otherwise, and
    /// when the sync is not running.
    fn admit_event<'a>(
        &'a self,
        event: &'a Event,
        _addr: &'a SocketAddr,
    ) -> BoxedFuture<'a, PolicyResult> {
        Box::pin(async move {
            match self.admit(event).await {
                Ok(Verdict::Accept(_)) => PolicyResult::Accept,
                Ok(Verdict::Reject(reason)) => {
                    PolicyResult::Reject(format!("not for this GRASP service ({reason})"))
                }
                Err(e) => PolicyResult::Reject(e.to_string()),
            }
        })
    }
}
