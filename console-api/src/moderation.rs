//! The console's client of the data plane's internal moderation API (`/internal/v1`, served by
//! every gateway node of a cell). The console never touches a cell's storage: it asks the cell the
//! app lives on, over HTTP, with the internal token both planes derive from
//! `auth.key_hash_secret` (see `starling_core::secret::internal_api_token`).
//!
//! The cell's base URL is its cluster's `endpoint` with `ws`→`http` (`wss`→`https`).

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use starling_core::error::{ErrorBody, ErrorCode};

use crate::error::{Fail, Result};

/// An end user of an app, as the data plane shows them to moderators.
#[derive(Debug, Clone, Deserialize, SimpleObject)]
pub struct EndUser {
    /// The customer's id of the user.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `active` or `deactivated`.
    pub status: String,
    /// Banned from the whole app now.
    pub banned: bool,
    /// When a temporary ban ends.
    pub banned_until: Option<DateTime<Utc>>,
    /// Connected now.
    pub online: bool,
    /// Last seen connected.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

/// A message, as moderators see it.
#[derive(Debug, Clone, Deserialize, SimpleObject)]
pub struct ChatMessage {
    /// Id.
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Position in the conversation.
    pub seq: i64,
    /// The sender (none for system messages).
    pub sender_id: Option<String>,
    /// `text`, `system`, …
    pub kind: String,
    /// The text (none once deleted).
    pub text: Option<String>,
    /// Sent at.
    pub created_at: DateTime<Utc>,
    /// Deleted (a tombstone).
    pub deleted: bool,
}

/// A conversation a user is in.
#[derive(Debug, Clone, Deserialize, SimpleObject)]
pub struct ChatConversation {
    /// Id.
    pub id: String,
    /// `direct`, `group`, …
    pub kind: String,
    /// Display name, if any.
    pub name: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UserConversation {
    pub conversation: ChatConversation,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageOf<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Messages {
    pub messages: Vec<ChatMessage>,
}

/// A client of cells' internal APIs.
#[derive(Clone)]
pub struct CellClient {
    http: reqwest::Client,
    token: String,
}

impl std::fmt::Debug for CellClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellClient").finish_non_exhaustive()
    }
}

/// The HTTP base of a cell from its cluster endpoint.
pub fn base_url(endpoint: &str) -> Option<String> {
    let e = endpoint.trim_end_matches('/');
    if let Some(rest) = e.strip_prefix("ws://") {
        Some(format!("http://{rest}"))
    } else if let Some(rest) = e.strip_prefix("wss://") {
        Some(format!("https://{rest}"))
    } else if e.starts_with("http://") || e.starts_with("https://") {
        Some(e.to_owned())
    } else {
        None
    }
}

impl CellClient {
    /// A client that presents `token`.
    pub fn new(token: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self { http, token }
    }

    /// Calls `method path` on the cell at `base` for `app`; the data plane's error code and
    /// message pass through for client errors (not found, validation), anything else is
    /// `unavailable`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        base: &str,
        app: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let url = format!("{base}/internal/v1/apps/{app}{path}");
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| {
            tracing::warn!(error = %e, %url, "data plane unreachable");
            Fail::new(
                ErrorCode::Unavailable,
                "the app's data-plane cluster is unreachable; retry shortly",
            )
        })?;
        let status = res.status();
        if status.is_success() {
            return res.json::<T>().await.map_err(Fail::internal);
        }
        let body: Option<ErrorBody> = res.json().await.ok();
        match (status, body) {
            (s, Some(b))
                if s.is_client_error()
                    && s != StatusCode::UNAUTHORIZED
                    && s != StatusCode::FORBIDDEN =>
            {
                let code = match b.code.as_str() {
                    "not_found" => ErrorCode::NotFound,
                    "conflict" => ErrorCode::Conflict,
                    "invalid_request" => ErrorCode::InvalidRequest,
                    _ => ErrorCode::ValidationFailed,
                };
                let mut f = Fail::new(code, b.message);
                f.field = b.field;
                Err(f)
            }
            (s, b) => {
                tracing::error!(status = %s, body = ?b.map(|b| b.message), %url, "data plane refused an internal call");
                Err(Fail::new(
                    ErrorCode::Unavailable,
                    "the app's data-plane cluster did not answer as expected; retry shortly",
                ))
            }
        }
    }
}

/// Percent-encodes a path segment (user ids are the customer's, they may hold anything).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
