//! The host relay's side door into a running sync: [`Admission`].
//!
//! A GRASP relay that embeds the sync receives events from its own users
//! too: announcements of repositories it now hosts, new issues and patches,
//! deletions. Two things follow. Its write policy must apply the same
//! acceptance rule the sync stores by (what repositories are hosted changes
//! as the sync runs, so the rule is asked of the running engine); and the
//! announcements, root events and deletions it stores must reach the
//! engine's catalog, or a repository announced on the service itself is
//! never synced. [`Admission`] does both over the runner's control channel;
//! it is cheap to clone, can be taken before the runner starts (requests
//! wait for it), and does not keep a stopped runner alive.

use grasp_sync_core::Verdict;
use tokio::sync::{mpsc, oneshot};

use super::Control;
use crate::compat::{ConvertError, ToSyncEvent};

/// Why an [`Admission`] request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The runner was never started, or has stopped.
    #[error("grasp-sync is not running")]
    Stopped,
    /// The event could not be converted to the sync's nostr version.
    #[error(transparent)]
    Convert(#[from] ConvertError),
}

/// Asks a running sync whether the service takes an event, and tells it of
/// catalog events the service stored. From [`RunnerBuilder::admission`](super::RunnerBuilder::admission)
/// or [`RunnerHandle::admission`](super::RunnerHandle::admission).
///
/// Each call takes the host's own event type ([`ToSyncEvent`]: the sync's
/// `nostr` 0.45 event, or with the `nostr-044` feature a `nostr` 0.44 one)
/// and waits for the runner's driver; a runner that is not started yet
/// answers once it is. With the `relay-builder-044` feature an `Admission`
/// is a `nostr-relay-builder` 0.44 `WritePolicy`: its `admit_event` is
/// [`Admission::admit`], and a rejection is answered `OK false "blocked: …"`.
#[derive(Clone, Debug)]
pub struct Admission {
    control: mpsc::WeakSender<Control>,
}

impl Admission {
    pub(super) fn new(control: &mpsc::Sender<Control>) -> Self {
        Admission {
            control: control.downgrade(),
        }
    }

    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> Control) -> Option<T> {
        let control = self.control.upgrade()?;
        let (tx, rx) = oneshot::channel();
        control.send(request(tx)).await.ok()?;
        drop(control);
        rx.await.ok()
    }

    /// The GRASP acceptance rule for the service's store
    /// ([`Engine::check_acceptance`](grasp_sync_core::Engine::check_acceptance))
    /// against what the sync tracks now. Changes nothing.
    pub async fn check_acceptance(
        &self,
        event: &impl ToSyncEvent,
    ) -> Result<Verdict, AdmissionError> {
        let event = Box::new(event.to_sync_event()?);
        self.ask(|reply| Control::Admit {
            event,
            feed: false,
            reply,
        })
        .await
        .ok_or(AdmissionError::Stopped)
    }

    /// [`Admission::check_acceptance`], and when the event is accepted and
    /// is a catalog kind (announcement, root event, deletion:
    /// [`is_catalog_kind`](grasp_sync_core::is_catalog_kind)), it goes to the
    /// engine's catalog at once, as [`Admission::catalog_event`] would.
    ///
    /// For a write policy after which the relay stores what the policy
    /// accepted (`nostr-relay-builder`: the database then refuses only
    /// duplicates, deleted events and older versions of replaceable ones,
    /// which the engine's catalog refuses the same way). A host that can
    /// still fail to store an accepted event should call
    /// [`Admission::check_acceptance`] in its policy and
    /// [`Admission::catalog_event`] after the save instead.
    pub async fn admit(&self, event: &impl ToSyncEvent) -> Result<Verdict, AdmissionError> {
        let event = Box::new(event.to_sync_event()?);
        self.ask(|reply| Control::Admit {
            event,
            feed: true,
            reply,
        })
        .await
        .ok_or(AdmissionError::Stopped)
    }

    /// Tells the engine of an event the service's relay stored (its id and
    /// signature verified by the relay). Announcements, root events and
    /// deletions change what is synced; other kinds are ignored, so a host
    /// may call this after every save. Events the sync stored itself need
    /// no call.
    pub async fn catalog_event(&self, event: &impl ToSyncEvent) -> Result<(), AdmissionError> {
        let event = Box::new(event.to_sync_event()?);
        self.ask(|reply| Control::Catalog { event, reply })
            .await
            .ok_or(AdmissionError::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use grasp_sync_core::acceptance::{AcceptReason, RejectReason};
    use grasp_sync_core::ServiceId;
    use nostr::event::{Event, EventBuilder, FinalizeEvent, Kind, Tag};
    use nostr::key::{Keys, SecretKey};

    use super::*;
    use crate::store::lmdb::LmdbStore;
    use crate::Runner;

    const SERVICE: &str = "git.example.com";

    fn keys() -> Keys {
        Keys::new(SecretKey::from_slice(&[0x41; 32]).unwrap())
    }

    fn announcement(d: &str) -> Event {
        EventBuilder::new(Kind::from(30617u16), "")
            .tags([
                Tag::identifier(d),
                Tag::parse(["relays", "wss://git.example.com"]).unwrap(),
            ])
            .finalize(&keys())
            .unwrap()
    }

    fn issue_of(d: &str) -> Event {
        let coord = format!("30617:{}:{d}", keys().public_key().to_hex());
        EventBuilder::new(Kind::from(1621u16), "an issue")
            .tags([Tag::parse(["a", &coord]).unwrap()])
            .finalize(&keys())
            .unwrap()
    }

    /// Admitted catalog events reach the engine (the next question sees the
    /// repository), checks change nothing, a request made before the
    /// runner starts waits for it, and a stopped runner says so.
    #[tokio::test]
    async fn admission_asks_the_running_engine_and_feeds_its_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).await.unwrap();
        let builder = Runner::builder(ServiceId::parse(SERVICE).unwrap());
        let admission = builder.admission();
        let early = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.admit(&announcement("early")).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!early.is_finished(), "answered before the runner started");
        let handle = builder.start(store).await.unwrap();
        assert_eq!(
            early.await.unwrap(),
            Ok(Verdict::Accept(AcceptReason::AnnouncementListsService))
        );
        assert_eq!(
            admission.check_acceptance(&issue_of("early")).await,
            Ok(Verdict::Accept(AcceptReason::TagsRepo))
        );

        // A check feeds nothing.
        let checked = announcement("checked");
        assert!(admission
            .check_acceptance(&checked)
            .await
            .unwrap()
            .is_accept());
        assert_eq!(
            admission.check_acceptance(&issue_of("checked")).await,
            Ok(Verdict::Reject(RejectReason::Unrelated))
        );
        // Told it was stored: now it is hosted.
        handle.catalog_event(&checked).await.unwrap();
        assert_eq!(
            handle
                .admission()
                .check_acceptance(&issue_of("checked"))
                .await,
            Ok(Verdict::Accept(AcceptReason::TagsRepo))
        );
        // Unrelated events are refused and feed nothing.
        assert_eq!(
            admission.admit(&issue_of("nowhere")).await,
            Ok(Verdict::Reject(RejectReason::Unrelated))
        );
        let status = handle.status().await.unwrap();
        assert_eq!(status.repos, 2, "{status:?}");

        handle.shutdown().await.unwrap();
        assert_eq!(
            admission.admit(&announcement("late")).await,
            Err(AdmissionError::Stopped)
        );
    }

    #[tokio::test]
    async fn admission_of_a_builder_never_started_fails() {
        let builder = Runner::builder(ServiceId::parse(SERVICE).unwrap());
        let admission = builder.admission();
        drop(builder);
        assert_eq!(
            admission.catalog_event(&announcement("x")).await,
            Err(AdmissionError::Stopped)
        );
    }
}
