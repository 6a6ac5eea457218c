//! Secrets sealed at rest: envelope encryption of the secrets a database row holds.
//!
//! A [`Sealer`] encrypts a secret under the deployment's sealing key (XChaCha20-Poly1305, a
//! fresh random 24-byte nonce per value: random nonces of that size never collide in practice,
//! so no counter has to be kept anywhere) and writes it as self-describing text:
//!
//! ```text
//! sealed:v1:<kid>:<base64url(nonce || ciphertext || tag)>
//! ```
//!
//! The key id (`kid`) names the key a value was sealed under, so the key can be rotated: a new
//! key becomes current, the old ones stay in the sealer for opening until every value is
//! resealed (`starling secrets reseal`). The caller binds each value to where it is stored (the
//! table, column and row) as associated data: a sealed value copied into another column or row
//! does not open, so someone who can write the database cannot move one app's secret to
//! another app. The key itself is held outside the database (config or env).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// What every sealed value starts with.
pub const PREFIX: &str = "sealed:";
const V1: &str = "sealed:v1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Why a value could not be sealed or opened, or a key not parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value is not sealed text at all (e.g. a secret still in clear).
    #[error("not a sealed value (expected sealed:v1:<kid>:<data>)")]
    NotSealed,
    /// Sealed text, but not of a form this version reads.
    #[error("malformed sealed value: {0}")]
    Malformed(&'static str),
    /// Sealed under a key this process does not have.
    #[error(
        "sealed under key id {0:?}, which is neither auth.sealing_key nor in auth.previous_sealing_keys"
    )]
    UnknownKey(String),
    /// The key is right but the value was altered, or it belongs to another place
    /// (different associated data).
    #[error("sealed value does not open under key id {0:?}: altered, or moved from another row")]
    Tampered(String),
    /// A key in configuration is not `kid:base64-of-32-bytes`.
    #[error("{0}")]
    BadKey(String),
}

/// One sealing key: its id and 32 secret bytes.
#[derive(Clone)]
pub struct SealKey {
    kid: String,
    key: [u8; 32],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({:?}, ***)", self.kid)
    }
}

/// Whether `kid` is usable as a key id: 1..=32 of `A-Z a-z 0-9 - _` (no `:`, it is a separator).
pub fn valid_kid(kid: &str) -> bool {
    (1..=32).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl SealKey {
    /// A key from its id and bytes.
    pub fn new(kid: &str, key: [u8; 32]) -> Result<Self, SealError> {
        if !valid_kid(kid) {
            return Err(SealError::BadKey(format!(
                "key id {kid:?} must be 1..=32 characters of A-Z, a-z, 0-9, '-' and '_'"
            )));
        }
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    /// A new random key with id `kid`.
    pub fn generate(kid: &str) -> Result<Self, SealError> {
        let mut key = [0u8; 32];
        key.copy_from_slice(&crate::secret::random_bytes(32));
        Self::new(kid, key)
    }

    /// Parses `kid:base64` (standard or URL-safe base64, padded or not, of exactly 32 bytes),
    /// e.g. `k2026:$(openssl rand -base64 32)`.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let Some((kid, b64)) = text.split_once(':') else {
            return Err(SealError::BadKey(
                "must be <key id>:<base64 of 32 random bytes>, e.g. k1:$(openssl rand -base64 32)"
                    .into(),
            ));
        };
        let bytes = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|e| e.decode(b64.trim()).ok())
            .ok_or_else(|| SealError::BadKey("the key after ':' is not base64".into()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            SealError::BadKey(format!(
                "the key after ':' must be 32 bytes, it is {} (openssl rand -base64 32)",
                b.len()
            ))
        })?;
        Self::new(kid, key)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `kid:base64`, the form [`SealKey::parse`] reads (to write a generated key to a file).
    pub fn to_config_string(&self) -> String {
        format!("{}:{}", self.kid, STANDARD.encode(self.key))
    }
}

struct Inner {
    current: SealKey,
    /// Every key that opens values, the current one included.
    all: Vec<(String, XChaCha20Poly1305)>,
}

/// Seals and opens secrets. Cheap to clone.
#[derive(Clone)]
pub struct Sealer(Arc<Inner>);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("current", &self.0.current.kid)
            .field(
                "kids",
                &self.0.all.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Sealer {
    /// Seals under `current`; opens values sealed under `current` or any of `previous`.
    /// Two keys with one id are refused: which one a value was sealed under would be ambiguous.
    pub fn new(current: SealKey, previous: Vec<SealKey>) -> Result<Self, SealError> {
        let mut all: Vec<(String, XChaCha20Poly1305)> = Vec::with_capacity(1 + previous.len());
        for k in std::iter::once(&current).chain(previous.iter()) {
            if all.iter().any(|(kid, _)| *kid == k.kid) {
                return Err(SealError::BadKey(format!(
                    "key id {:?} is used by two keys; give each key its own id",
                    k.kid
                )));
            }
            all.push((k.kid.clone(), XChaCha20Poly1305::new(&k.key.into())));
        }
        Ok(Self(Arc::new(Inner { current, all })))
    }

    /// A sealer with one new random key (tests, and a standalone process's first start).
    pub fn generate() -> Self {
        Self::new(
            SealKey::generate("k1").expect("k1 is a valid key id"),
            vec![],
        )
        .expect("one key")
    }

    /// A 32-byte key for another purpose of the control plane alone (e.g. console session
    /// tokens), derived from the current sealing key (HMAC-SHA256 under it of a fixed label and
    /// `purpose`): cells never hold the sealing key, so they cannot derive it — unlike anything
    /// derived from `key_hash_secret`, which every cell node holds. Rotating the sealing key
    /// changes it.
    pub fn subkey(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0.current.key)
            .expect("HMAC takes any key length");
        mac.update(b"starling-sealing-subkey-v1\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The id of the key new values are sealed under.
    pub fn current_kid(&self) -> &str {
        &self.0.current.kid
    }

    /// Seals `secret`, bound to `aad` (where it is stored; the same `aad` must open it).
    pub fn seal(&self, aad: &str, secret: &str) -> String {
        let kid = &self.0.current.kid;
        let cipher = &self.0.all[0].1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&crate::secret::random_bytes(NONCE_LEN));
        let header = format!("{V1}{kid}:");
        let ct = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &associated(&header, aad),
                },
            )
            .expect("XChaCha20-Poly1305 seals any message shorter than 256 GiB");
        let mut data = Vec::with_capacity(NONCE_LEN + ct.len());
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&ct);
        format!("{header}{}", URL_SAFE_NO_PAD.encode(data))
    }

    /// Opens a value made by [`Sealer::seal`] with the same `aad`.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<String, SealError> {
        let (kid, data) = parse(sealed)?;
        let cipher = self
            .0
            .all
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, c)| c)
            .ok_or_else(|| SealError::UnknownKey(kid.to_owned()))?;
        let (nonce, ct) = data.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let header = format!("{V1}{kid}:");
        let clear = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: &associated(&header, aad),
                },
            )
            .map_err(|_| SealError::Tampered(kid.to_owned()))?;
        String::from_utf8(clear).map_err(|_| SealError::Malformed("the secret is not UTF-8"))
    }

    /// Whether `value` is sealed text under the current key (nothing to reseal).
    pub fn is_current(&self, value: &str) -> bool {
        kid_of(value) == Some(self.current_kid())
    }
}

/// Whether `value` is sealed text (of any version), as opposed to a secret in clear.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// The key id a sealed value names, if it is sealed text.
pub fn kid_of(value: &str) -> Option<&str> {
    parse_header(value).ok().map(|(kid, _)| kid)
}

/// The header is authenticated too: a value whose key id was rewritten does not open.
fn associated(header: &str, aad: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(header.len() + aad.len());
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(aad.as_bytes());
    v
}

fn parse_header(value: &str) -> Result<(&str, &str), SealError> {
    if !is_sealed(value) {
        return Err(SealError::NotSealed);
    }
    let rest = value.strip_prefix(V1).ok_or(SealError::Malformed(
        "unknown version (this build reads v1)",
    ))?;
    let (kid, data) = rest
        .split_once(':')
        .ok_or(SealError::Malformed("no key id"))?;
    if !valid_kid(kid) {
        return Err(SealError::Malformed("bad key id"));
    }
    Ok((kid, data))
}

fn parse(value: &str) -> Result<(&str, Vec<u8>), SealError> {
    let (kid, data) = parse_header(value)?;
    let data = URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|_| SealError::Malformed("the data is not base64url"))?;
    if data.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Malformed("too short"));
    }
    Ok((kid, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_each_seal_differs() {
        let s = Sealer::generate();
        let a = s.seal("t.c:1", "whsec_abc");
        let b = s.seal("t.c:1", "whsec_abc");
        assert!(a.starts_with("sealed:v1:k1:"), "{a}");
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(!a.contains("whsec_abc"));
        assert_eq!(s.open("t.c:1", &a).unwrap(), "whsec_abc");
        assert_eq!(s.open("t.c:1", &b).unwrap(), "whsec_abc");
        assert!(is_sealed(&a) && s.is_current(&a));
        assert_eq!(s.open("t.c:1", &s.seal("t.c:1", "")).unwrap(), "");
    }

    #[test]
    fn tampering_is_detected() {
        let s = Sealer::generate();
        let v = s.seal("t.c:1", "secret");
        let (head, data) = v.rsplit_once(':').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(data).unwrap();
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            let t = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&bytes));
            assert_eq!(
                s.open("t.c:1", &t),
                Err(SealError::Tampered("k1".into())),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        assert!(matches!(
            s.open("t.c:1", &v[..v.len() - 30]),
            Err(SealError::Tampered(_) | SealError::Malformed(_))
        ));
        assert_eq!(s.open("t.c:1", "secret"), Err(SealError::NotSealed));
        assert!(matches!(
            s.open("t.c:1", "sealed:v9:k1:AAAA"),
            Err(SealError::Malformed(_))
        ));
    }

    #[test]
    fn other_associated_data_does_not_open() {
        let s = Sealer::generate();
        let v = s.seal("webhook_endpoint.secret:tnt_a/app_a/whe_1", "secret");
        assert_eq!(
            s.open("webhook_endpoint.previous_secret:tnt_a/app_a/whe_1", &v),
            Err(SealError::Tampered("k1".into()))
        );
        assert_eq!(
            s.open("webhook_endpoint.secret:tnt_b/app_b/whe_2", &v),
            Err(SealError::Tampered("k1".into()))
        );
    }

    #[test]
    fn unknown_key_id_is_named() {
        let old = Sealer::new(SealKey::generate("old").unwrap(), vec![]).unwrap();
        let new = Sealer::new(SealKey::generate("new").unwrap(), vec![]).unwrap();
        let v = old.seal("a", "secret");
        let e = new.open("a", &v).unwrap_err();
        assert_eq!(e, SealError::UnknownKey("old".into()));
        assert!(e.to_string().contains("\"old\""), "{e}");
        // Rewriting the key id to one the sealer has does not help: the header is authenticated.
        let forged = v.replacen(":old:", ":new:", 1);
        assert_eq!(
            new.open("a", &forged),
            Err(SealError::Tampered("new".into()))
        );
    }

    #[test]
    fn rotation_keeps_old_values_open() {
        let k1 = SealKey::generate("k1").unwrap();
        let before = Sealer::new(k1.clone(), vec![]).unwrap();
        let v1 = before.seal("a", "secret");
        let after = Sealer::new(SealKey::generate("k2").unwrap(), vec![k1]).unwrap();
        assert_eq!(after.open("a", &v1).unwrap(), "secret");
        assert!(!after.is_current(&v1));
        let v2 = after.seal("a", "secret");
        assert!(after.is_current(&v2));
        assert_eq!(kid_of(&v2), Some("k2"));
        assert_eq!(
            before.open("a", &v2),
            Err(SealError::UnknownKey("k2".into()))
        );
    }

    #[test]
    fn keys_parse_from_config() {
        let k = SealKey::generate("k-2026_a").unwrap();
        let text = k.to_config_string();
        let back = SealKey::parse(&text).unwrap();
        assert_eq!(back.kid(), "k-2026_a");
        assert_eq!(back.key, k.key);
        let url = format!("k1:{}", URL_SAFE_NO_PAD.encode(k.key));
        assert_eq!(SealKey::parse(&url).unwrap().key, k.key);
        for bad in [
            "nokid",
            ":AAAA",
            "k:c2hvcnQ=",
            "k:not base64!",
            "k:y:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(
                matches!(SealKey::parse(bad), Err(SealError::BadKey(_))),
                "{bad}"
            );
        }
        assert!(Sealer::new(k.clone(), vec![k]).is_err(), "duplicate kid");
    }
}
