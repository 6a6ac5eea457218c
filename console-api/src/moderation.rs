//! The console's client of the data plane's internal moderation API (`/internal/v1`, served by
//! every gateway node of a cell on its internal listener). The console never touches a cell's
//! storage: it asks the cell the app lives on, over HTTP, at the cluster's `internal_endpoint`
//! (`https://` unless the operator marked a development cluster), each call with a fresh call
//! token signed by the control plane's key for that cluster and that request alone
//! (`starling_core::internal_auth`).

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use starling_core::error::{ErrorBody, ErrorCode};

use starling_core::signing::SigningKey;

use crate::error::{Fail, Result};

/// Lifetime of a call token: one request, sent at once.
const CALL_TOKEN_TTL_SECS: i64 = 30;

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
    key: Option<SigningKey>,
}

impl std::fmt::Debug for CellClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellClient").finish_non_exhaustive()
    }
}

impl CellClient {
    /// A client that signs its calls with `key` (the control plane's signing key; `None`:
    /// every call answers `unavailable`, naming the missing setting).
    pub fn new(key: Option<SigningKey>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            // Never follow a redirect: the token is for this URL and this cell only.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { http, key }
    }

    /// Calls `method path` for `app` on the cell `cluster_id` whose internal API is at `base`;
    /// the data plane's error code and message pass through for client errors (not found,
    /// validation), anything else is `unavailable`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        base: &str,
        cluster_id: &str,
        app: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let Some(key) = &self.key else {
            return Err(Fail::new(
                ErrorCode::Unavailable,
                "moderation needs the control plane's signing key (auth.control_plane_signing_key)",
            ));
        };
        let url = reqwest::Url::parse(&format!("{base}/internal/v1/apps/{app}{path}"))
            .map_err(|e| Fail::internal(format!("internal URL of cluster {cluster_id}: {e}")))?;
        let bytes = match &body {
            Some(b) => serde_json::to_vec(b).map_err(Fail::internal)?,
            None => Vec::new(),
        };
        // The token covers the path and query exactly as sent.
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let token = starling_core::internal_auth::mint_call_token(
            key,
            cluster_id,
            method.as_str(),
            &path_and_query,
            &bytes,
            chrono::Utc::now().timestamp(),
            CALL_TOKEN_TTL_SECS,
        );
        let mut req = self.http.request(method, url.clone()).bearer_auth(token);
        if body.is_some() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
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
