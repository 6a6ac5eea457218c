//! Identities on the platform's internal APIs, one per direction:
//!
//! - **Control plane → cell** (a cell's `/internal/v1`, the console's moderation): a short-lived
//!   *call token* signed with the control plane's Ed25519 key ([`crate::signing`]). It names the
//!   one cluster it is for (audience), the method, the path with its query and a hash of the
//!   body, and lives at most [`MAX_CALL_TOKEN_TTL_SECS`]. A cell holds only public keys, so a
//!   stolen cell cannot call another cell, and a token seen on the wire is good for nothing but
//!   the very request it came with, on that one cell, for a minute.
//! - **Cell → control plane** (the control plane's `/internal/v1/tenants/…`): a per-cell
//!   credential `scc_<id>.<secret>` issued by the operator (`POST /admin/v1/clusters/{id}/
//!   credentials`). The control plane stores a SHA-256 of the secret; several may be active at
//!   once, which is how a credential is rotated with an overlap.
//!
//! Neither is derived from `auth.key_hash_secret` (the old shared `sin_…` token was): rotating
//! an internal identity never touches API keys, and holding the key-hash secret (every gateway
//! does) opens no internal API.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::id::CellCredentialId;
use crate::signing::{SigningKey, Verifier};

/// The signature context of call tokens: a signature made for the config feed is no call token.
pub const CALL_CONTEXT: &str = "starling-internal-call-v1";
/// The text form's version prefix.
const PREFIX: &str = "sic1";
/// The longest lifetime a cell accepts, whatever the token says.
pub const MAX_CALL_TOKEN_TTL_SECS: i64 = 60;
/// How far a token's issue time may lie in the future (clocks of the planes differ a little).
pub const CLOCK_SKEW_SECS: i64 = 30;

/// What a call token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallClaims {
    /// The cluster (`cls_…`) the call is for.
    pub aud: String,
    /// The HTTP method, upper case.
    pub m: String,
    /// The path with its query, exactly as sent (`/internal/v1/apps/…?limit=5`).
    pub p: String,
    /// SHA-256 of the body, base64url (of the empty string when there is none).
    pub bh: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

/// The SHA-256 of a body, as a call token carries it.
pub fn body_hash(body: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(body))
}

/// Mints a call token for `method path_and_query` with `body` on cluster `audience`, valid
/// from `now` for `ttl_secs` (clamped to [`MAX_CALL_TOKEN_TTL_SECS`]).
pub fn mint_call_token(
    key: &SigningKey,
    audience: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now: i64,
    ttl_secs: i64,
) -> String {
    let claims = CallClaims {
        aud: audience.to_owned(),
        m: method.to_ascii_uppercase(),
        p: path_and_query.to_owned(),
        bh: body_hash(body),
        iat: now,
        exp: now + ttl_secs.clamp(1, MAX_CALL_TOKEN_TTL_SECS),
    };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
    let signed = format!("{PREFIX}.{payload}.{}", key.kid());
    let sig = key.sign(CALL_CONTEXT, signed.as_bytes());
    format!("{signed}.{sig}")
}

/// Why a call token was refused (the message is safe to show the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallTokenError {
    /// Not shaped like a call token at all (e.g. the old shared `sin_…` token).
    #[error("not a call token (sic1.…) signed by the control plane")]
    Malformed,
    /// Signed by an untrusted key, or the signature does not match.
    #[error("the call token's signature does not verify with auth.control_plane_public_keys")]
    BadSignature,
    /// For another cluster.
    #[error("the call token is for cluster {0}, not this one")]
    WrongAudience(String),
    /// Expired, not yet valid, or living longer than allowed.
    #[error("the call token has expired or is not valid yet")]
    Expired,
    /// For another method, path or body.
    #[error("the call token was minted for another request ({0})")]
    WrongRequest(&'static str),
}

/// What a cell checks a call against.
pub struct CallCheck<'a> {
    /// This cell's cluster id.
    pub cluster_id: &'a str,
    /// The request's method.
    pub method: &'a str,
    /// The request's path with its query, as received.
    pub path_and_query: &'a str,
    /// The request's body.
    pub body: &'a [u8],
    /// Now, Unix seconds.
    pub now: i64,
}

/// Verifies a call token; the claims when it is good for exactly this request.
pub fn verify_call_token(
    verifier: &Verifier,
    token: &str,
    check: &CallCheck<'_>,
) -> Result<CallClaims, CallTokenError> {
    let mut parts = token.split('.');
    let (Some(PREFIX), Some(payload), Some(kid), Some(sig), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(CallTokenError::Malformed);
    };
    let signed = &token[..token.len() - sig.len() - 1];
    verifier
        .verify(CALL_CONTEXT, kid, signed.as_bytes(), sig)
        .map_err(|_| CallTokenError::BadSignature)?;
    // Only signed bytes are parsed from here on.
    let claims: CallClaims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(CallTokenError::Malformed)?;
    if claims.aud != check.cluster_id {
        return Err(CallTokenError::WrongAudience(
            claims.aud.chars().take(40).collect(),
        ));
    }
    if claims.exp <= check.now
        || claims.iat > check.now + CLOCK_SKEW_SECS
        || claims.exp - claims.iat > MAX_CALL_TOKEN_TTL_SECS
    {
        return Err(CallTokenError::Expired);
    }
    if !claims.m.eq_ignore_ascii_case(check.method) {
        return Err(CallTokenError::WrongRequest("method"));
    }
    if claims.p != check.path_and_query {
        return Err(CallTokenError::WrongRequest("path"));
    }
    if !crate::secret::constant_time_eq(&claims.bh, &body_hash(check.body)) {
        return Err(CallTokenError::WrongRequest("body"));
    }
    Ok(claims)
}

/// A cell credential just issued: the full text is shown once.
#[derive(Debug, Clone)]
pub struct NewCellCredential {
    /// The public id (`scc_…`).
    pub id: CellCredentialId,
    /// The stored form of the secret ([`hash_cell_secret`]).
    pub secret_hash: String,
    /// `scc_<id>.<secret>`: what the cell is configured with.
    pub credential: String,
}

/// Makes a new cell credential: 256 random bits.
pub fn generate_cell_credential() -> NewCellCredential {
    let id = CellCredentialId::generate();
    let secret = URL_SAFE_NO_PAD.encode(crate::secret::random_bytes(32));
    NewCellCredential {
        secret_hash: hash_cell_secret(&secret),
        credential: format!("{id}.{secret}"),
        id,
    }
}

/// The stored form of a cell credential's secret: plain SHA-256, hex. The secret is 256 bits
/// from the OS's random source, so nothing can be guessed from its hash and no key or slow
/// hash adds anything (unlike passwords); keeping it unkeyed means the control plane's other
/// secrets can be rotated without touching cell credentials.
pub fn hash_cell_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits a presented credential into id and secret; `None` when it is not shaped like one.
pub fn split_cell_credential(text: &str) -> Option<(CellCredentialId, &str)> {
    let (id, secret) = text.split_once('.')?;
    let id = CellCredentialId::parse(id).ok()?;
    (secret.len() == 43 && URL_SAFE_NO_PAD.decode(secret).is_ok()).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<'a>(path: &'a str, body: &'a [u8], now: i64) -> CallCheck<'a> {
        CallCheck {
            cluster_id: "cls_x",
            method: "POST",
            path_and_query: path,
            body,
            now,
        }
    }

    #[test]
    fn a_call_token_is_good_for_its_request_only() {
        let k = SigningKey::generate();
        let v = Verifier::new([k.public_key()]);
        let t = mint_call_token(&k, "cls_x", "post", "/internal/v1/a?b=1", b"{}", 1000, 30);
        assert!(t.starts_with("sic1."));
        let ok = verify_call_token(&v, &t, &check("/internal/v1/a?b=1", b"{}", 1010)).unwrap();
        assert_eq!(ok.aud, "cls_x");
        let e = |c: CallCheck<'_>| verify_call_token(&v, &t, &c).unwrap_err();
        assert_eq!(
            e(check("/internal/v1/a?b=2", b"{}", 1010)),
            CallTokenError::WrongRequest("path")
        );
        assert_eq!(
            e(check("/internal/v1/a?b=1", b"{\"x\":1}", 1010)),
            CallTokenError::WrongRequest("body")
        );
        assert_eq!(
            e(CallCheck {
                method: "DELETE",
                ..check("/internal/v1/a?b=1", b"{}", 1010)
            }),
            CallTokenError::WrongRequest("method")
        );
        assert_eq!(
            e(CallCheck {
                cluster_id: "cls_y",
                ..check("/internal/v1/a?b=1", b"{}", 1010)
            }),
            CallTokenError::WrongAudience("cls_x".into())
        );
        assert_eq!(
            e(check("/internal/v1/a?b=1", b"{}", 1030)),
            CallTokenError::Expired
        );
        assert_eq!(
            e(check("/internal/v1/a?b=1", b"{}", 900)),
            CallTokenError::Expired,
            "issued too far in the future"
        );
        // Another key, or a tampered payload, does not verify.
        let other = SigningKey::generate();
        let t2 = mint_call_token(
            &other,
            "cls_x",
            "POST",
            "/internal/v1/a?b=1",
            b"{}",
            1000,
            30,
        );
        assert_eq!(
            verify_call_token(&v, &t2, &check("/internal/v1/a?b=1", b"{}", 1010)),
            Err(CallTokenError::BadSignature)
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&CallClaims {
                aud: "cls_y".into(),
                ..ok.clone()
            })
            .unwrap(),
        );
        parts[1] = &forged;
        assert_eq!(
            verify_call_token(
                &v,
                &parts.join("."),
                &check("/internal/v1/a?b=1", b"{}", 1010)
            ),
            Err(CallTokenError::BadSignature)
        );
        for junk in ["", "sin_abc", "sic1.a.b", "sic1.a.b.c.d"] {
            assert!(verify_call_token(&v, junk, &check("/", b"", 1010)).is_err());
        }
    }

    #[test]
    fn lifetimes_are_capped() {
        let k = SigningKey::generate();
        let v = Verifier::new([k.public_key()]);
        let t = mint_call_token(&k, "cls_x", "GET", "/p", b"", 0, 3600);
        let c = CallClaims {
            ..verify_call_token(
                &v,
                &t,
                &CallCheck {
                    method: "GET",
                    ..check("/p", b"", 59)
                },
            )
            .unwrap()
        };
        assert_eq!(c.exp, MAX_CALL_TOKEN_TTL_SECS);
    }

    #[test]
    fn cell_credentials_split_and_hash() {
        let c = generate_cell_credential();
        let (id, secret) = split_cell_credential(&c.credential).unwrap();
        assert_eq!(id, c.id);
        assert!(c.credential.starts_with("scc_"));
        assert_eq!(hash_cell_secret(secret), c.secret_hash);
        assert!(split_cell_credential("scc_nope.x").is_none());
        assert!(split_cell_credential(&format!("{}.short", c.id)).is_none());
    }
}
