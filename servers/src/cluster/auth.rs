//! The mesh's authentication: the hello's challenge–response proofs and the per-frame tags
//! of an authenticated link, both HMAC-SHA256 keyed by the cluster's shared secret.
//!
//! - **Proof.** Each side of a new link sends a fresh 32-byte random nonce (in its
//!   `Challenge`), then `HMAC(secret, "chatbench-mesh-v2 proof" ‖ transcript)` where the
//!   transcript is the sender's node id, incarnation and nonce, then the receiver's (fixed
//!   widths, so no two transcripts read alike). The secret never crosses the wire; a proof is
//!   good for one pair of nonces only (no replay), and names its sender, so a node's own proof
//!   reflected back at it is never accepted (a node refuses a peer claiming its own id).
//! - **Frame tags.** After both proofs check, every frame each way is followed by a 16-byte
//!   tag, `HMAC(k, sequence number ‖ frame)` truncated, with a key per direction derived from
//!   the secret and the same transcript (`k = HMAC(secret, "chatbench-mesh-v2 frames" ‖
//!   transcript in the sender's order)`). So a process that relays two handshakes between
//!   real nodes, or that hijacks the TCP connection, cannot add, change, drop, reorder or
//!   replay a frame without the link being closed. Frames are authenticated, not encrypted.
//!
//! Without a secret (allowed on loopback only, see `ClusterConfig::validate`) the same
//! exchange runs with an empty key and no frame tags: it tells a chatbench node from a stray
//! connection, and authenticates nothing.
//!
//! Crates: `hmac` and `sha2` from RustCrypto (the maintained pure-Rust implementations; SHA-NI
//! when the CPU has it); comparisons through `Mac::verify_slice` / `verify_truncated_left`,
//! which are constant-time. Nonces come from `rand::rng()`, a CSPRNG seeded from the OS.

use hmac::{KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof (a full HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// Bytes of the tag after each frame of an authenticated link.
pub const TAG_LEN: usize = 16;

const PROOF_LABEL: &[u8] = b"chatbench-mesh-v2 proof";
const FRAMES_LABEL: &[u8] = b"chatbench-mesh-v2 frames";

/// One side of a handshake: who it says it is and its fresh nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Party {
    /// Node id (from its `Hello`).
    pub node_id: u64,
    /// Random per process: tells a restarted or second process from a second link.
    pub incarnation: u64,
    /// Fresh per link.
    pub nonce: [u8; NONCE_LEN],
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut n);
    n
}

/// A random process incarnation.
pub fn incarnation() -> u64 {
    rand::rng().next_u64()
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

fn transcript(mut mac: HmacSha256, label: &[u8], from: &Party, to: &Party) -> HmacSha256 {
    mac.update(label);
    for p in [from, to] {
        mac.update(&p.node_id.to_be_bytes());
        mac.update(&p.incarnation.to_be_bytes());
        mac.update(&p.nonce);
    }
    mac
}

/// The proof `from` sends `to` (its `Auth` frame).
pub fn proof(secret: &[u8], from: &Party, to: &Party) -> [u8; PROOF_LEN] {
    transcript(keyed(secret), PROOF_LABEL, from, to)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is what `from` must send `to` (constant-time comparison).
pub fn check_proof(secret: &[u8], from: &Party, to: &Party, proof: &[u8]) -> bool {
    transcript(keyed(secret), PROOF_LABEL, from, to)
        .verify_slice(proof)
        .is_ok()
}

/// The tags of one direction of an authenticated link: a keyed state and the next sequence
/// number (both ends count the frames of a direction alike).
#[derive(Clone)]
pub struct FrameTags {
    key: HmacSha256,
    seq: u64,
}

impl FrameTags {
    /// The tags of frames `from` sends `to` on the link whose handshake was `from`, `to`.
    pub fn new(secret: &[u8], from: &Party, to: &Party) -> FrameTags {
        let k: [u8; 32] = transcript(keyed(secret), FRAMES_LABEL, from, to)
            .finalize()
            .into_bytes()
            .into();
        FrameTags {
            key: keyed(&k),
            seq: 0,
        }
    }

    fn mac(&self, frame: &[&[u8]]) -> HmacSha256 {
        let mut m = self.key.clone();
        m.update(&self.seq.to_be_bytes());
        for part in frame {
            m.update(part);
        }
        m
    }

    /// The tag of the next frame sent (its bytes, length prefix included, in `parts`).
    pub fn sign(&mut self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let full = self.mac(parts).finalize().into_bytes();
        self.seq += 1;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Whether `tag` is the next received frame's (constant-time comparison).
    pub fn verify(&mut self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let ok = self.mac(parts).verify_truncated_left(tag).is_ok() && tag.len() == TAG_LEN;
        self.seq += 1;
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(id: u64) -> Party {
        Party {
            node_id: id,
            incarnation: id * 10,
            nonce: nonce(),
        }
    }

    #[test]
    fn a_proof_checks_only_with_the_same_secret_nonces_and_direction() {
        let (a, b) = (party(1), party(2));
        let p = proof(b"secret-secret-secret", &a, &b);
        assert!(check_proof(b"secret-secret-secret", &a, &b, &p));
        assert!(!check_proof(b"another-secret-here!", &a, &b, &p));
        // Reflected: the same proof does not pass as b's to a.
        assert!(!check_proof(b"secret-secret-secret", &b, &a, &p));
        // Replayed on a link with another nonce.
        let a2 = Party {
            nonce: nonce(),
            ..a
        };
        assert!(!check_proof(b"secret-secret-secret", &a2, &b, &p));
        assert!(!check_proof(b"secret-secret-secret", &a, &b, &p[..31]));
        assert_ne!(a.nonce, a2.nonce, "nonces are fresh");
    }

    #[test]
    fn frame_tags_catch_changed_reordered_and_replayed_frames() {
        let (a, b) = (party(1), party(2));
        let mut send = FrameTags::new(b"k-k-k-k-k-k-k-k-k", &a, &b);
        let mut recv = send.clone();
        let t0 = send.sign(&[b"one"]);
        let t1 = send.sign(&[b"two"]);
        assert!(recv.clone().verify(&[b"one"], &t0));
        assert!(!recv.clone().verify(&[b"two"], &t1), "out of order");
        assert!(!recv.clone().verify(&[b"onf"], &t0), "changed");
        assert!(recv.verify(&[b"one"], &t0));
        assert!(!recv.clone().verify(&[b"one"], &t0), "replayed");
        assert!(recv.verify(&[b"t", b"wo"], &t1), "split parts read alike");
        // The other direction has another key.
        let mut back = FrameTags::new(b"k-k-k-k-k-k-k-k-k", &b, &a);
        assert_ne!(back.sign(&[b"one"]), t0);
    }
}
