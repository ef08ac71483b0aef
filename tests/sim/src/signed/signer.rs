//! Deterministic keys and BIP-340 signatures for the datasets: the same
//! inputs give the same bytes, so datasets and their snapshots are stable.

use std::sync::LazyLock;

use nostr::event::{Event, EventId, Kind, Signature, Tag, Tags};
use nostr::key::{Keys, SecretKey};
use nostr::types::Timestamp;
use secp256k1::{All, Secp256k1};

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fake 40-hex-digit git commit id derived from `n`.
pub(super) fn commit(n: u64) -> String {
    let a = mix(n ^ 0xc0);
    let b = mix(n ^ 0xc1);
    let c = mix(n ^ 0xc2);
    format!("{a:016x}{b:016x}{:08x}", c as u32)
}

/// Signs events deterministically with one shared secp256k1 context.
pub struct Signer {
    secp: Secp256k1<All>,
}

impl Default for Signer {
    fn default() -> Self {
        Signer::new()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

/// The process-wide signer (building a secp256k1 context costs a few ms).
pub fn signer() -> &'static Signer {
    static SIGNER: LazyLock<Signer> = LazyLock::new(Signer::new);
    &SIGNER
}

impl Signer {
    /// A signer with a fresh (unrandomised, deterministic) context.
    pub fn new() -> Self {
        Signer {
            secp: Secp256k1::new(),
        }
    }

    /// Deterministic keys number `n` of the key family `seed`: the secret
    /// bytes are a hash-like expansion of `(seed, n)`.
    pub fn keys(&self, seed: u64, n: u64) -> Keys {
        let mut attempt = 0u64;
        loop {
            let mut bytes = [0u8; 32];
            let base = mix(seed ^ mix(n.wrapping_add(attempt << 48)));
            for (i, chunk) in bytes.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&mix(base ^ (i as u64) << 56).to_be_bytes());
            }
            // Out of range (zero or above the curve order) is astronomically
            // rare; try the next expansion if it happens.
            if let Ok(sk) = SecretKey::from_slice(&bytes) {
                return Keys::new_with_ctx(&self.secp, sk);
            }
            attempt += 1;
        }
    }

    /// A signed event. `tags` are raw tag arrays (`["a", "30617:..."]`).
    /// Signing is deterministic: the BIP-340 auxiliary data is the event id.
    pub fn sign(
        &self,
        keys: &Keys,
        created_at: u64,
        kind: u16,
        tags: Vec<Vec<String>>,
        content: &str,
    ) -> Event {
        let tags = Tags::from_list(
            tags.into_iter()
                .map(|t| Tag::parse(t).expect("dataset tags are valid"))
                .collect(),
        );
        let pubkey = keys.public_key();
        let created_at = Timestamp::from_secs(created_at);
        let kind = Kind::from(kind);
        let id = EventId::compute(&pubkey, &created_at, &kind, &tags, content);
        let sig = keys.sign_schnorr_with_aux_rand(&self.secp, id.as_bytes(), id.as_bytes());
        Event::new(id, pubkey, created_at, kind, tags, content, sig)
    }
}

/// A copy of `event` with the same id and a signature that does not verify
/// (one bit of `s` flipped). Its id is still right, so only signature
/// verification can catch it.
pub fn forge_signature(event: &Event) -> Event {
    let mut sig = event.sig.to_bytes();
    sig[63] ^= 0x01;
    Event::new(
        event.id,
        event.pubkey,
        event.created_at,
        event.kind,
        event.tags.clone(),
        event.content.clone(),
        Signature::from_byte_array(sig),
    )
}
