//! Typed, prefixed identifiers.
//!
//! An id is its prefix, an underscore and a lowercase ULID: `tnt_01jdq3v9k6b2c8x4m7n5p0r1st`.
//! ULIDs sort by creation time, which makes them good cursors for pagination. Each id type
//! checks its prefix when parsed, so an app id can never be passed where a tenant id is wanted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid id of some type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an id of the form {prefix}_<26 base32 characters>, got {got:?}")]
pub struct IdParseError {
    /// The prefix the id type wants (without the underscore).
    pub prefix: &'static str,
    /// The offending input (cut to 80 characters).
    pub got: String,
}

const ULID_LEN: usize = 26;

fn check(prefix: &'static str, s: &str) -> Result<(), IdParseError> {
    let err = || IdParseError {
        prefix,
        got: s.chars().take(80).collect(),
    };
    let rest = s
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .ok_or_else(err)?;
    if rest.len() != ULID_LEN {
        return Err(err());
    }
    // Crockford base32, lowercase; the first character encodes the top 3 bits only.
    if !rest
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'h' | b'j' | b'k' | b'm' | b'n' | b'p'..=b't' | b'v'..=b'z'))
        || rest.as_bytes()[0] > b'7'
    {
        return Err(err());
    }
    Ok(())
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix of this id type, without the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new, unique id (time-ordered).
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, ulid::Ulid::new().to_string().to_ascii_lowercase()))
            }

            /// Parses and checks an id.
            pub fn parse(s: &str) -> Result<Self, IdParseError> {
                check($prefix, s)?;
                Ok(Self(s.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Wraps text read back from our own storage without checking it again.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            /// The id as owned text.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        // Hash and Eq are the inner string's, so maps keyed by the id answer lookups by `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "_[0-7][0-9a-hjkmnp-tv-z]{25}$")))
                    .examples([serde_json::json!(concat!($prefix, "_01jdq3v9k6b2c8x4m7n5p0r1st"))])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

typed_id!(
    /// A tenant: one customer of the platform.
    TenantId,
    "tnt"
);
typed_id!(
    /// An app within a tenant: the unit of isolation for users and messages.
    AppId,
    "app"
);
typed_id!(
    /// An API key of an app (the public part of the key).
    ApiKeyId,
    "key"
);
typed_id!(
    /// A plan: a named set of limits.
    PlanId,
    "pln"
);
typed_id!(
    /// A data-plane cluster (cell).
    ClusterId,
    "cls"
);
typed_id!(
    /// A cell's credential for the control plane's internal API (the public part).
    CellCredentialId,
    "scc"
);

typed_id!(
    /// A secret that signs an app's user tokens (the JWT `kid`).
    TokenSecretId,
    "tks"
);
typed_id!(
    /// A user token minted by the server API (its JWT `jti`), for revoking that one token.
    UserTokenId,
    "utk"
);
typed_id!(
    /// A conversation.
    ConversationId,
    "cnv"
);
typed_id!(
    /// A message.
    MessageId,
    "msg"
);
typed_id!(
    /// A WebSocket connection.
    ConnectionId,
    "con"
);

typed_id!(
    /// A webhook endpoint of an app: `ep_…`.
    WebhookEndpointId,
    "ep"
);

typed_id!(
    /// A webhook event (the `webhook-id` header): `evt_…`.
    EventId,
    "evt"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_sort_by_time() {
        let a = TenantId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = TenantId::generate();
        assert_eq!(TenantId::parse(a.as_str()).unwrap(), a);
        assert!(a < b, "{a} should sort before {b}");
        assert!(a.as_str().starts_with("tnt_"));
        assert_eq!(a.as_str().len(), 4 + 26);
    }

    #[test]
    fn wrong_prefix_or_shape_is_refused() {
        let app = AppId::generate();
        assert!(TenantId::parse(app.as_str()).is_err());
        assert!(TenantId::parse("tnt_").is_err());
        assert!(
            TenantId::parse("tnt_01JDQ3V9K6B2C8X4M7N5P0R1ST").is_err(),
            "uppercase is refused"
        );
        assert!(
            TenantId::parse("tnt_01jdq3v9k6b2c8x4m7n5p0r1su").is_err(),
            "u is not base32"
        );
        assert!(
            TenantId::parse("tnt_81jdq3v9k6b2c8x4m7n5p0r1st").is_err(),
            "overflows 128 bits"
        );
        assert!(TenantId::parse("tnt_01jdq3v9k6b2c8x4m7n5p0r1st").is_ok());
    }

    #[test]
    fn serde_checks_the_prefix() {
        let err =
            serde_json::from_str::<TenantId>("\"app_01jdq3v9k6b2c8x4m7n5p0r1st\"").unwrap_err();
        assert!(err.to_string().contains("tnt_"), "{err}");
    }
}
