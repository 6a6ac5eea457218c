//! Sealing what the control plane tells one cell to that cell's key, so that the secrets inside
//! an app's configuration (user-token secrets, webhook and pre-send hook secrets) cross the bus
//! readable by that cell's nodes only: not by the broker, not by anyone holding a role on the
//! bus, not by another cell.
//!
//! Each cell has an X25519 key pair. Its nodes hold the secret key (`gateway.config_keys`,
//! several during a rotation); the control plane holds only the public key, registered with the
//! cluster (`config_public_key`). A message is sealed as an ephemeral-static Diffie-Hellman
//! exchange: a fresh ephemeral key per message, the shared secret run through HKDF-SHA256
//! (salted with both public keys, the purpose as info) into a XChaCha20-Poly1305 key, the purpose
//! also bound as associated data. The result is self-contained:
//!
//! ```text
//! base64url(ephemeral public key (32) || nonce (24) || ciphertext || tag (16))
//! ```
//!
//! The key id (`cek_<hex>`, derived from the public key, never chosen) says which of a node's
//! keys opens it. Sealing gives confidentiality only: who sealed is proven by the control
//! plane's Ed25519 signature over the sealed text (see `appconfig::SignedUpdate`).
//!
//! Chosen: `x25519-dalek` (on the `curve25519-dalek` that `ed25519-dalek` already brings),
//! `hkdf` and `chacha20poly1305` from RustCrypto (the latter already seals secrets at rest).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// A key could not be read, or a sealed message not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CellKeyError {
    /// A key in configuration is not 32 bytes of base64url.
    #[error("{0}")]
    BadKey(String),
    /// Sealed to a key this node does not hold.
    #[error("sealed to cell key {0}, which this node does not hold (gateway.config_keys)")]
    UnknownKey(String),
    /// Malformed, altered, or sealed for another purpose.
    #[error("sealed message does not open: malformed, altered, or sealed for another purpose")]
    DoesNotOpen,
}

fn key_id(public: &x25519_dalek::PublicKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    format!("cek_{}", hex::encode(&digest[..8]))
}

fn decode32(text: &str) -> Result<[u8; 32], CellKeyError> {
    let b = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|e| CellKeyError::BadKey(format!("not base64url: {e}")))?;
    b.try_into()
        .map_err(|b: Vec<u8>| CellKeyError::BadKey(format!("expected 32 bytes, got {}", b.len())))
}

fn aead_key(
    shared: &x25519_dalek::SharedSecret,
    ephemeral: &x25519_dalek::PublicKey,
    recipient: &x25519_dalek::PublicKey,
    context: &str,
) -> XChaCha20Poly1305 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral.as_bytes());
    salt[32..].copy_from_slice(recipient.as_bytes());
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand(context.as_bytes(), &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    XChaCha20Poly1305::new((&okm).into())
}

/// A cell's secret key (its nodes hold it).
#[derive(Clone)]
pub struct CellSecretKey {
    kid: String,
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
}

impl std::fmt::Debug for CellSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellSecretKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl CellSecretKey {
    /// A new random key.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = crate::secret::random_bytes(32)
            .try_into()
            .expect("32 bytes asked, 32 given");
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = x25519_dalek::PublicKey::from(&secret);
        Self {
            kid: key_id(&public),
            secret,
            public,
        }
    }

    /// Reads the text form ([`Self::to_text`]).
    pub fn from_text(text: &str) -> Result<Self, CellKeyError> {
        Ok(Self::from_bytes(decode32(text)?))
    }

    /// The text form: the 32 secret bytes in unpadded base64url.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.secret.as_bytes())
    }

    /// The key id (`cek_…`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, for the control plane.
    pub fn public_key(&self) -> CellPublicKey {
        CellPublicKey {
            kid: self.kid.clone(),
            key: self.public,
        }
    }

    fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, CellKeyError> {
        let data = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| CellKeyError::DoesNotOpen)?;
        if data.len() < 32 + NONCE_LEN + TAG_LEN {
            return Err(CellKeyError::DoesNotOpen);
        }
        let (eph, rest) = data.split_at(32);
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let eph: [u8; 32] = eph.try_into().expect("split at 32");
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let eph = x25519_dalek::PublicKey::from(eph);
        let shared = self.secret.diffie_hellman(&eph);
        if !shared.was_contributory() {
            return Err(CellKeyError::DoesNotOpen);
        }
        aead_key(&shared, &eph, &self.public, context)
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CellKeyError::DoesNotOpen)
    }
}

/// A cell's public key (the control plane seals to it).
#[derive(Clone, PartialEq, Eq)]
pub struct CellPublicKey {
    kid: String,
    key: x25519_dalek::PublicKey,
}

impl std::fmt::Debug for CellPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CellPublicKey({})", self.kid)
    }
}

impl CellPublicKey {
    /// Reads the text form ([`Self::to_text`]).
    pub fn from_text(text: &str) -> Result<Self, CellKeyError> {
        let key = x25519_dalek::PublicKey::from(decode32(text)?);
        // A low-order point would make every shared secret predictable.
        if key.as_bytes().iter().all(|b| *b == 0) {
            return Err(CellKeyError::BadKey(
                "the all-zero point is not a key".into(),
            ));
        }
        Ok(Self {
            kid: key_id(&key),
            key,
        })
    }

    /// The text form: 32 bytes in unpadded base64url.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.as_bytes())
    }

    /// The key id (`cek_…`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Seals `plaintext` for `context` (a purpose string) to this key.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let eph_bytes: [u8; 32] = crate::secret::random_bytes(32)
            .try_into()
            .expect("32 bytes asked, 32 given");
        let eph = x25519_dalek::StaticSecret::from(eph_bytes);
        let eph_public = x25519_dalek::PublicKey::from(&eph);
        let shared = eph.diffie_hellman(&self.key);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&crate::secret::random_bytes(NONCE_LEN));
        let ct = aead_key(&shared, &eph_public, &self.key, context)
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory input");
        let mut out = Vec::with_capacity(32 + NONCE_LEN + ct.len());
        out.extend_from_slice(eph_public.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        URL_SAFE_NO_PAD.encode(out)
    }
}

/// The secret keys a node holds, by key id (two during a rotation).
#[derive(Clone, Debug, Default)]
pub struct CellKeys {
    keys: HashMap<String, CellSecretKey>,
}

impl CellKeys {
    /// These keys.
    pub fn new(keys: impl IntoIterator<Item = CellSecretKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.kid.clone(), k)).collect(),
        }
    }

    /// Reads keys in text form; an error names the key by position.
    pub fn from_texts<S: AsRef<str>>(texts: &[S]) -> Result<Self, CellKeyError> {
        let keys = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                CellSecretKey::from_text(t.as_ref())
                    .map_err(|e| CellKeyError::BadKey(format!("key {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(keys))
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Opens `sealed` (sealed for `context` to the key `kid`).
    pub fn open(&self, kid: &str, context: &str, sealed: &str) -> Result<Vec<u8>, CellKeyError> {
        self.keys
            .get(kid)
            .ok_or_else(|| CellKeyError::UnknownKey(kid.to_owned()))?
            .open(context, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_to_a_cell_opens_with_its_key_only() {
        let (a, b) = (CellSecretKey::generate(), CellSecretKey::generate());
        let sealed = a.public_key().seal("ctx", b"whsec_top-secret");
        assert!(!sealed.contains("top-secret"));
        let keys_a = CellKeys::new([a.clone()]);
        assert_eq!(
            keys_a.open(a.kid(), "ctx", &sealed).unwrap(),
            b"whsec_top-secret"
        );
        // Another cell's key, even when labelled with the right id, does not open it.
        let mut wrong = CellKeys::new([b.clone()]);
        wrong.keys.insert(a.kid().to_owned(), b.clone());
        assert_eq!(
            wrong.open(a.kid(), "ctx", &sealed),
            Err(CellKeyError::DoesNotOpen)
        );
        assert_eq!(
            CellKeys::new([b]).open(a.kid(), "ctx", &sealed),
            Err(CellKeyError::UnknownKey(a.kid().to_owned()))
        );
        // Another purpose, or one flipped bit, does not open.
        assert_eq!(
            keys_a.open(a.kid(), "other", &sealed),
            Err(CellKeyError::DoesNotOpen)
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            keys_a.open(a.kid(), "ctx", &URL_SAFE_NO_PAD.encode(raw)),
            Err(CellKeyError::DoesNotOpen)
        );
        assert_eq!(
            keys_a.open(a.kid(), "ctx", "short"),
            Err(CellKeyError::DoesNotOpen)
        );
    }

    #[test]
    fn each_seal_is_fresh_and_keys_round_trip_as_text() {
        let k = CellSecretKey::generate();
        let p = k.public_key();
        assert_ne!(p.seal("c", b"x"), p.seal("c", b"x"));
        let k2 = CellSecretKey::from_text(&k.to_text()).unwrap();
        assert_eq!(k2.kid(), k.kid());
        assert_eq!(CellPublicKey::from_text(&p.to_text()).unwrap(), p);
        assert!(k.kid().starts_with("cek_"));
        assert!(CellPublicKey::from_text("AAAA").is_err());
        assert!(CellPublicKey::from_text(&URL_SAFE_NO_PAD.encode([0u8; 32])).is_err());
        assert!(CellKeys::from_texts(&["nope"]).is_err());
    }
}
