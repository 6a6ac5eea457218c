//! What both planes share about webhooks: the catalog of event types, the secret format and
//! the [Standard Webhooks](https://www.standardwebhooks.com/) signature.
//!
//! A signature is `v1,` + base64(HMAC-SHA256(key, `{webhook-id}.{webhook-timestamp}.{body}`)),
//! where the key is the base64 part of a `whsec_…` secret. While a secret rotates, a request
//! carries one signature per valid secret, separated by spaces.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One event type of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    /// The `type` of the event, e.g. `message.created`.
    pub name: &'static str,
    /// Opt-in types reach only endpoints that list them explicitly (an endpoint with an empty
    /// list of types gets every type that is not opt-in).
    pub opt_in: bool,
}

/// Every event type there is, in catalog order.
pub const EVENT_TYPES: &[EventType] = &[
    EventType {
        name: "message.created",
        opt_in: false,
    },
    EventType {
        name: "message.updated",
        opt_in: false,
    },
    EventType {
        name: "message.deleted",
        opt_in: false,
    },
    EventType {
        name: "reaction.added",
        opt_in: false,
    },
    EventType {
        name: "reaction.removed",
        opt_in: false,
    },
    EventType {
        name: "conversation.created",
        opt_in: false,
    },
    EventType {
        name: "conversation.updated",
        opt_in: false,
    },
    EventType {
        name: "conversation.deleted",
        opt_in: false,
    },
    EventType {
        name: "member.added",
        opt_in: false,
    },
    EventType {
        name: "member.removed",
        opt_in: false,
    },
    EventType {
        name: "member.role_changed",
        opt_in: false,
    },
    EventType {
        name: "user.created",
        opt_in: false,
    },
    EventType {
        name: "user.updated",
        opt_in: false,
    },
    EventType {
        name: "user.deleted",
        opt_in: false,
    },
    EventType {
        name: "user.banned",
        opt_in: false,
    },
    EventType {
        name: "read_receipt.updated",
        opt_in: true,
    },
    EventType {
        name: "usage.threshold_reached",
        opt_in: false,
    },
    EventType {
        name: "webhook.endpoint_disabled",
        opt_in: false,
    },
];

/// The catalog entry of `name`, if it is one.
pub fn event_type(name: &str) -> Option<&'static EventType> {
    EVENT_TYPES.iter().find(|t| t.name == name)
}

/// Whether an endpoint subscribed to `types` (empty: every type not opt-in) gets `name`.
pub fn subscribed(types: &[String], name: &str) -> bool {
    if types.is_empty() {
        event_type(name).is_some_and(|t| !t.opt_in)
    } else {
        types.iter().any(|t| t == name)
    }
}

/// A new signing secret: `whsec_` + base64 of 24 random bytes.
pub fn generate_secret() -> String {
    format!("whsec_{}", STANDARD.encode(crate::secret::random_bytes(24)))
}

/// The HMAC key of a `whsec_…` secret (a secret without the prefix is taken as base64 too).
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()
        .filter(|k| !k.is_empty())
}

/// One `v1,<base64>` signature of `body` sent as message `id` at `timestamp` (seconds).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = secret_key(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a str>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .filter_map(|s| sign(s, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks an endpoint URL: `http` or `https`, a host, at most 2048 bytes, nothing odd.
/// (Where it may point is the SSRF guard's business, at send time, after DNS resolution.)
pub fn check_url(url: &str) -> Result<(), &'static str> {
    if url.len() > 2048 {
        return Err("must be at most 2048 bytes");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must be an http:// or https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry credentials");
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') {
            h
        } else {
            authority
        }
    });
    if host.is_empty() || host == "[]" {
        return Err("must name a host");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signs_like_the_specification() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_round_trip_and_types_are_known() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 24);
        assert!(secret_key("whsec_").is_none());
        assert!(subscribed(&[], "message.created"));
        assert!(!subscribed(&[], "read_receipt.updated"), "opt-in");
        assert!(subscribed(
            &["read_receipt.updated".into()],
            "read_receipt.updated"
        ));
        assert!(!subscribed(&["user.created".into()], "message.created"));
        let two = signature_header(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &s], "m", 1, b"x");
        assert_eq!(two.split(' ').count(), 2);
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://example.com/hook").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x?y=1").is_ok());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("https://u:p@example.com").is_err());
        assert!(check_url("https://exa mple.com").is_err());
    }
}
