//! Secrets: random tokens, API keys, keyed hashing and constant-time comparison.
//!
//! An API key is shown to its owner once as `key_<ulid>.<secret>`: the part before the dot is the
//! public key id (safe to log), the part after is 32 random bytes in base64url. Only a keyed hash
//! of the secret is stored (HMAC-SHA256 under the deployment's key-hash secret), so a leaked
//! database alone does not let anyone use the keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::id::ApiKeyId;

type HmacSha256 = Hmac<Sha256>;

/// `n` bytes from the operating system's random source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    buf
}

/// A random token: `prefix` followed by 32 random bytes in base64url (43 characters).
pub fn random_token(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes(32)))
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A freshly made API key: the id, and the full token to show once.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The public id of the key.
    pub id: ApiKeyId,
    /// The secret part alone (hash this).
    pub secret: String,
    /// `id.secret`: what the customer puts in `Authorization: Bearer …`.
    pub token: String,
}

/// Makes a new API key.
pub fn generate_api_key() -> NewApiKey {
    let id = ApiKeyId::generate();
    let secret = URL_SAFE_NO_PAD.encode(random_bytes(32));
    let token = format!("{id}.{secret}");
    NewApiKey { id, secret, token }
}

/// Splits a presented API key into its id and secret; `None` if it is not shaped like one.
pub fn split_api_key(token: &str) -> Option<(ApiKeyId, &str)> {
    let (id, secret) = token.split_once('.')?;
    let id = ApiKeyId::parse(id).ok()?;
    (secret.len() == 43 && URL_SAFE_NO_PAD.decode(secret).is_ok()).then_some((id, secret))
}

/// Hashes key secrets under a deployment-wide secret (HMAC-SHA256, hex).
#[derive(Clone)]
pub struct KeyHasher {
    key: Vec<u8>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    /// A hasher keyed with `key` (at least 32 bytes of entropy expected).
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        Self {
            key: key.as_ref().to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("hmac takes keys of any length")
    }

    /// The stored form of a secret.
    pub fn hash(&self, secret: &str) -> String {
        let mut mac = self.mac();
        mac.update(secret.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `secret` matches a stored hash, in constant time.
    pub fn verify(&self, secret: &str, stored_hex: &str) -> bool {
        let Some(expected) = unhex(stored_hex) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(secret.as_bytes());
        mac.verify_slice(&expected).is_ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_split_and_verify() {
        let hasher = KeyHasher::new(random_bytes(32));
        let key = generate_api_key();
        let stored = hasher.hash(&key.secret);
        let (id, secret) = split_api_key(&key.token).expect("well-formed");
        assert_eq!(id, key.id);
        assert!(hasher.verify(secret, &stored));
        assert!(!hasher.verify("x", &stored));
        assert!(
            !KeyHasher::new(b"other").verify(secret, &stored),
            "the hash is keyed"
        );
        assert!(split_api_key("nonsense").is_none());
        assert!(split_api_key(&format!("{}.short", key.id)).is_none());
    }

    #[test]
    fn tokens_are_random_and_compare_in_constant_time() {
        let a = random_token("sop_");
        let b = random_token("sop_");
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 43);
        assert!(constant_time_eq(&a, &a.clone()));
        assert!(!constant_time_eq(&a, &b));
    }
}
