//! Ed25519 signatures for what the control plane tells cells: the app-configuration feed and its
//! calls to cells' internal APIs.
//!
//! The control plane holds the one signing key (`auth.control_plane_signing_key`); cells hold
//! only public keys (`auth.control_plane_public_keys`), so a cell — or anyone on the bus — can
//! check what the control plane said but can say nothing in its name. Several public keys may
//! be trusted at once, so the signing key can be rotated with an overlap; a key id derived from
//! the public key (not chosen by the signer) says which one signed.
//!
//! Every signature is over a *context* string and the message, so a signature made for one
//! purpose (an app-config update) cannot be replayed as another (an internal call).
//!
//! Chosen: `ed25519-dalek` (RustCrypto-adjacent, already in the tree through `jsonwebtoken`):
//! small keys and signatures, fast verification (one per config update and internal call),
//! deterministic signing with no randomness to get wrong.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, Verifier as _};
use sha2::{Digest, Sha256};

/// A key or signature could not be read, or a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// A key in configuration is not what it should be.
    #[error("{0}")]
    BadKey(String),
    /// The signature names a key id that is not trusted.
    #[error("signed with key {0}, which is not trusted here")]
    UnknownKey(String),
    /// The signature is malformed or does not match.
    #[error("signature does not verify")]
    BadSignature,
}

fn key_id(public: &ed25519_dalek::VerifyingKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    format!("cpk_{}", hex::encode(&digest[..8]))
}

fn message(context: &str, msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + msg.len());
    m.extend_from_slice(context.as_bytes());
    m.push(0);
    m.extend_from_slice(msg);
    m
}

/// The control plane's signing key.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        let seed: [u8; 32] = crate::secret::random_bytes(32)
            .try_into()
            .expect("32 bytes asked, 32 given");
        Self::from_seed(seed)
    }

    fn from_seed(seed: [u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        Self {
            kid: key_id(&key.verifying_key()),
            key,
        }
    }

    /// The key from its text form (base64url of the 32-byte seed, as [`Self::to_text`] writes).
    pub fn from_text(text: &str) -> Result<Self, SigningError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| SigningError::BadKey("not base64url".into()))?;
        let seed: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            SigningError::BadKey(format!("expected 32 bytes, got {}", b.len()))
        })?;
        Ok(Self::from_seed(seed))
    }

    /// The text form of the private key: keep it secret.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.to_bytes())
    }

    /// The key id (derived from the public key).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key that verifies this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `msg` for `context`; the signature in base64url.
    pub fn sign(&self, context: &str, msg: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.key.sign(&message(context, msg)).to_bytes())
    }
}

/// A public key that verifies the control plane's signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    key: ed25519_dalek::VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.kid)
    }
}

impl PublicKey {
    /// The key from its text form (base64url of the 32-byte public key).
    pub fn from_text(text: &str) -> Result<Self, SigningError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| SigningError::BadKey("not base64url".into()))?;
        let raw: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            SigningError::BadKey(format!("expected 32 bytes, got {}", b.len()))
        })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map_err(|_| SigningError::BadKey("not an Ed25519 public key".into()))?;
        Ok(Self {
            kid: key_id(&key),
            key,
        })
    }

    /// The text form, safe to publish.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.as_bytes())
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// The public keys a cell trusts (more than one during a rotation).
#[derive(Clone, Debug, Default)]
pub struct Verifier {
    keys: HashMap<String, ed25519_dalek::VerifyingKey>,
}

impl Verifier {
    /// Trusts exactly these keys.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.kid, k.key)).collect(),
        }
    }

    /// Reads keys in text form; the error names the one that is wrong.
    pub fn from_texts<S: AsRef<str>>(texts: &[S]) -> Result<Self, SigningError> {
        let keys = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                PublicKey::from_text(t.as_ref())
                    .map_err(|e| SigningError::BadKey(format!("key {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(keys))
    }

    /// Whether no key is trusted (then nothing verifies).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks that the key `kid` signed `msg` for `context`.
    pub fn verify(
        &self,
        context: &str,
        kid: &str,
        msg: &[u8],
        signature: &str,
    ) -> Result<(), SigningError> {
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| SigningError::UnknownKey(kid.chars().take(40).collect()))?;
        let raw: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SigningError::BadSignature)?;
        key.verify(
            &message(context, msg),
            &ed25519_dalek::Signature::from_bytes(&raw),
        )
        .map_err(|_| SigningError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_context_and_message() {
        let k = SigningKey::generate();
        let v = Verifier::new([k.public_key()]);
        let sig = k.sign("ctx-a", b"hello");
        assert_eq!(v.verify("ctx-a", k.kid(), b"hello", &sig), Ok(()));
        assert_eq!(
            v.verify("ctx-a", k.kid(), b"hellO", &sig),
            Err(SigningError::BadSignature)
        );
        assert_eq!(
            v.verify("ctx-b", k.kid(), b"hello", &sig),
            Err(SigningError::BadSignature),
            "a signature made for one purpose is not valid for another"
        );
        let other = SigningKey::generate();
        assert!(matches!(
            v.verify(
                "ctx-a",
                other.kid(),
                b"hello",
                &other.sign("ctx-a", b"hello")
            ),
            Err(SigningError::UnknownKey(_))
        ));
        // Another key's signature presented under the trusted key's id.
        assert_eq!(
            v.verify("ctx-a", k.kid(), b"hello", &other.sign("ctx-a", b"hello")),
            Err(SigningError::BadSignature)
        );
        assert_eq!(
            v.verify("ctx-a", k.kid(), b"hello", "not base64!"),
            Err(SigningError::BadSignature)
        );
    }

    #[test]
    fn keys_round_trip_through_text_and_ids_follow_the_public_key() {
        let k = SigningKey::generate();
        let again = SigningKey::from_text(&k.to_text()).unwrap();
        assert_eq!(again.kid(), k.kid());
        let p = PublicKey::from_text(&k.public_key().to_text()).unwrap();
        assert_eq!(p, k.public_key());
        assert!(k.kid().starts_with("cpk_"));
        assert_ne!(k.kid(), SigningKey::generate().kid());
        assert!(SigningKey::from_text("short").is_err());
        assert!(PublicKey::from_text("!!").is_err());
        let e = Verifier::from_texts(&[k.public_key().to_text(), "AAAA".into()]).unwrap_err();
        assert!(e.to_string().contains("key 2"), "{e}");
        // Rotation: two trusted keys, either verifies.
        let k2 = SigningKey::generate();
        let v = Verifier::new([k.public_key(), k2.public_key()]);
        assert!(v.verify("c", k2.kid(), b"m", &k2.sign("c", b"m")).is_ok());
        assert!(v.verify("c", k.kid(), b"m", &k.sign("c", b"m")).is_ok());
    }
}
