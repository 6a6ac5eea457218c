//! Webhooks: events of an app POSTed to its endpoints, signed (Standard Webhooks), retried,
//! recorded, replayable; and the app's pre-send hook.
//!
//! - Endpoints and the hook are configured in the control plane and reach the node on the
//!   app-config feed ([`crate::directory`]).
//! - [`Messaging::emit`] records an event and one delivery per subscribed endpoint, in the
//!   transaction of the change it describes where there is one: an acknowledged change always
//!   has its event, whatever node dies afterwards.
//! - [`dispatch`]: every node takes due deliveries from the database under a lease, POSTs them,
//!   records the attempt, and reschedules failures on an exponential schedule (≈ 4 days by
//!   default), then dead-letters them; endpoints failing for days are disabled.
//! - [`guard`]: the SSRF guard every outbound request passes.
//! - [`presend`]: the synchronous pre-send hook.
//! - [`retention`]: old events, deliveries and attempts are deleted after a retention period.
//! - [`catalog`]: event types, payloads and their JSON Schemas.
//! - [`admin_client`]: the control plane's endpoint functions over HTTP, for the server API of
//!   a cell's node.

pub mod admin_client;
pub mod catalog;
pub mod dispatch;
pub mod guard;
pub mod presend;
pub mod retention;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use starling_core::appconfig::WebhookEndpointConfig;
use starling_core::config::WebhookConfig;
use starling_core::error::ApiError;
use starling_core::http::{Page, PageParams};
use starling_core::id::{AppId, EventId};
use starling_core::webhook::subscribed;
use starling_core::webhook_admin::WebhookAdmin;
use utoipa::ToSchema;

use crate::entity::{
    webhook_attempt, webhook_delivery, webhook_endpoint_state, webhook_event, webhook_notification,
};
use crate::service::{Messaging, Result, invalid, now};
use crate::store::scoped;

type Limiter = governor::DefaultDirectRateLimiter;

/// A node's webhook machinery: settings, the guarded HTTP client, per-endpoint rate limiters.
pub struct Webhooks {
    /// Settings.
    pub cfg: WebhookConfig,
    /// The SSRF guard.
    pub guard: Arc<guard::Guard>,
    client: reqwest::Client,
    wake: tokio::sync::Notify,
    limiters: Mutex<HashMap<String, (u32, Arc<Limiter>)>>,
    admin: std::sync::OnceLock<Arc<dyn WebhookAdmin>>,
}

/// An outbound request's outcome.
pub(crate) struct Sent {
    pub status: Option<u16>,
    pub excerpt: Option<String>,
    pub error: Option<String>,
    pub body: Option<Vec<u8>>,
}

/// The text of an error with its causes (reqwest hides the interesting part in sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Webhooks {
    /// The machinery for `cfg`.
    pub fn new(cfg: WebhookConfig) -> anyhow::Result<Self> {
        let guard = Arc::new(guard::Guard::new(&cfg.allow_networks));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(guard::GuardedResolver(guard.clone())))
            // A proxy would resolve names itself, past the guard.
            .no_proxy()
            // A redirect could lead anywhere; receivers answer, they do not send us on.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(cfg.attempt_timeout_ms.min(10_000)))
            // Keep-alive: every connection a busy node opened to a receiver stays for reuse.
            .pool_max_idle_per_host(cfg.concurrency)
            .tcp_nodelay(true)
            .user_agent(concat!("Starling-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            cfg,
            guard,
            client,
            wake: tokio::sync::Notify::new(),
            limiters: Mutex::new(HashMap::new()),
            admin: std::sync::OnceLock::new(),
        })
    }

    /// Lets the server API manage endpoints through the control plane's functions: in its
    /// process (standalone) or over HTTP ([`admin_client`], a cell's node with
    /// `gateway.control_plane_url`). Only the first call counts.
    pub fn set_admin(&self, admin: Arc<dyn WebhookAdmin>) {
        let _ = self.admin.set(admin);
    }

    /// The control plane's endpoint functions, when this node has them.
    pub fn admin(&self) -> Result<&Arc<dyn WebhookAdmin>> {
        self.admin.get().ok_or_else(|| {
            ApiError::new(
                starling_core::error::ErrorCode::Unavailable,
                "this node has no control plane to manage webhook endpoints with (set \
                 gateway.control_plane_url): use the admin API or the console (docs/WEBHOOKS.md)",
            )
        })
    }

    /// Tells the dispatcher there is work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether a delivery to `endpoint` may go now under its rate limit.
    fn allow(&self, endpoint: &str, per_second: u32) -> bool {
        let Some(n) = NonZeroU32::new(per_second) else {
            return true;
        };
        let lim = {
            let mut m = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(endpoint.to_owned()).or_insert_with(|| {
                (
                    per_second,
                    Arc::new(Limiter::direct(governor::Quota::per_second(n))),
                )
            });
            if e.0 != per_second {
                *e = (
                    per_second,
                    Arc::new(Limiter::direct(governor::Quota::per_second(n))),
                );
            }
            e.1.clone()
        };
        lim.check().is_ok()
    }

    /// POSTs a signed body; `timeout` bounds the whole exchange.
    pub(crate) async fn post(
        &self,
        url: &str,
        id: &str,
        secrets: &[&str],
        body: &[u8],
        timeout: Duration,
        want_body: bool,
    ) -> Sent {
        let failed = |e: String| Sent {
            status: None,
            excerpt: None,
            error: Some(cut(&e, 500)),
            body: None,
        };
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return failed(format!("invalid url: {e}")),
        };
        if let Err(e) = self.guard.check_url(&parsed) {
            return failed(e.to_string());
        }
        let ts = Utc::now().timestamp();
        let sig = starling_core::webhook::signature_header(secrets.iter().copied(), id, ts, body);
        let req = self
            .client
            .post(parsed)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.to_vec());
        let run = async {
            let mut res = req.send().await?;
            let status = res.status().as_u16();
            let limit = if want_body { 64 * 1024 } else { 1024 };
            let mut buf = Vec::new();
            while buf.len() < limit {
                match res.chunk().await? {
                    Some(c) => buf.extend_from_slice(&c),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>((status, buf))
        };
        match run.await {
            Ok((status, buf)) => {
                let text = String::from_utf8_lossy(&buf[..buf.len().min(1024)]).into_owned();
                Sent {
                    status: Some(status),
                    excerpt: (!text.is_empty()).then(|| cut(&text, 1024)),
                    error: None,
                    body: want_body.then_some(buf),
                }
            }
            Err(e) => failed(if e.is_timeout() {
                format!("timed out after {} ms", timeout.as_millis())
            } else {
                chain(&e)
            }),
        }
    }
}

pub(crate) fn now_rfc3339() -> String {
    now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The secrets that sign now, newest first.
pub(crate) fn signing_secrets(ep: &WebhookEndpointConfig) -> Vec<&str> {
    let now = Utc::now();
    ep.secrets
        .iter()
        .filter(|s| s.expires_at.is_none_or(|e| e > now))
        .map(|s| s.secret.as_str())
        .collect()
}

/// A delivery id. Ordered endpoints get their deliveries in the order of these ids, so they
/// are monotonic within the process (a plain ULID's random part may sort two ids of the same
/// millisecond backwards); across nodes they follow the clocks.
pub(crate) fn delivery_id() -> String {
    static GEN: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut g = GEN.lock().unwrap_or_else(|p| p.into_inner());
    let id = g
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        // Only when 2^80 ids were made in one millisecond.
        .unwrap_or_else(|_| ulid::Ulid::new());
    format!("dlv_{}", id.to_string().to_lowercase())
}

pub(crate) fn new_delivery(
    app: &str,
    event: &str,
    endpoint: &str,
) -> webhook_delivery::ActiveModel {
    let now = now();
    webhook_delivery::ActiveModel {
        app_id: Set(app.to_owned()),
        id: Set(delivery_id()),
        event_id: Set(event.to_owned()),
        endpoint_id: Set(endpoint.to_owned()),
        status: Set("pending".into()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        lease_until: Set(None),
        last_status_code: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// A recorded event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookEventOut {
    /// Event id (`evt_…`).
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// The body as delivered (envelope with `data`).
    pub payload: serde_json::Value,
}

/// An event on its way to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryOut {
    /// Delivery id (`dlv_…`).
    pub id: String,
    /// The event.
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// `pending`, `delivered`, `dead` (retries used up: a dead letter) or `skipped` (the
    /// endpoint was removed or disabled).
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: DateTime<Utc>,
    /// HTTP status of the last attempt, if it got one.
    pub last_status_code: Option<i32>,
    /// Error of the last attempt, if any.
    pub last_error: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One attempt to deliver an event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptOut {
    /// Attempt id (`atm_…`).
    pub id: String,
    /// The delivery.
    pub delivery_id: String,
    /// The event.
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// When.
    pub attempted_at: DateTime<Utc>,
    /// Whether the endpoint answered 2xx.
    pub ok: bool,
    /// The HTTP status, when there was an answer.
    pub status_code: Option<i32>,
    /// How long it took, in milliseconds.
    pub latency_ms: i64,
    /// The first KiB of the answer.
    pub response_excerpt: Option<String>,
    /// What went wrong without an answer (timeout, refused, blocked by the SSRF guard).
    pub error: Option<String>,
}

/// An endpoint as this cell sees it (configured in the control plane).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointStatusOut {
    /// Endpoint id.
    pub id: String,
    /// Where events go.
    pub url: String,
    /// Subscribed event types (empty: every type that is not opt-in).
    pub event_types: Vec<String>,
    /// Enabled in its configuration.
    pub enabled: bool,
    /// One event at a time, in order.
    pub ordered: bool,
    /// Most deliveries per second, if limited.
    pub rate_limit_per_second: Option<u32>,
    /// Failing without a success since then.
    pub failing_since: Option<DateTime<Utc>>,
    /// Disabled automatically then, for failing too long (enable it to lift this).
    pub disabled_at: Option<DateTime<Utc>>,
}

/// What to send again.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayIn {
    /// One event; or give `since` (and `until`) for a time range.
    pub event_id: Option<String>,
    /// Events from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Events before this time (default: now).
    pub until: Option<DateTime<Utc>>,
    /// Only to this endpoint (default: every enabled endpoint subscribed to the event's type).
    pub endpoint_id: Option<String>,
}

/// What a replay queued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayOut {
    /// Events found.
    pub events: usize,
    /// Deliveries queued.
    pub deliveries: usize,
}

/// A notice for the app's owners (e.g. an endpoint was disabled), ready to be mailed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationOut {
    /// Notification id.
    pub id: String,
    /// The tenant to notify.
    pub tenant_id: String,
    /// The endpoint concerned.
    pub endpoint_id: String,
    /// `endpoint_disabled`.
    pub kind: String,
    /// Mail subject.
    pub subject: String,
    /// Mail body (plain text).
    pub body: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Filters of the attempt and delivery lists.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookFilter {
    /// Only this event's.
    pub event_id: Option<String>,
    /// Only this endpoint's.
    pub endpoint_id: Option<String>,
}

fn delivery_out(m: webhook_delivery::Model) -> DeliveryOut {
    DeliveryOut {
        id: m.id,
        event_id: m.event_id,
        endpoint_id: m.endpoint_id,
        status: m.status,
        attempts: m.attempts,
        next_attempt_at: m.next_attempt_at,
        last_status_code: m.last_status_code,
        last_error: m.last_error,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn attempt_out(m: webhook_attempt::Model) -> AttemptOut {
    AttemptOut {
        id: m.id,
        delivery_id: m.delivery_id,
        event_id: m.event_id,
        endpoint_id: m.endpoint_id,
        attempted_at: m.attempted_at,
        ok: m.ok,
        status_code: m.status_code,
        latency_ms: m.latency_ms,
        response_excerpt: m.response_excerpt,
        error: m.error,
    }
}

fn event_out(m: webhook_event::Model) -> WebhookEventOut {
    WebhookEventOut {
        id: m.id,
        event_type: m.event_type,
        created_at: m.created_at,
        payload: serde_json::from_str(&m.payload).unwrap_or(serde_json::Value::Null),
    }
}

impl Messaging {
    fn endpoints_of(&self, app: &str) -> Vec<WebhookEndpointConfig> {
        self.directory
            .app(&AppId::from_trusted(app.to_owned()))
            .map(|c| c.webhooks.clone())
            .unwrap_or_default()
    }

    /// Whether an enabled endpoint of `app` wants `event_type` now (a hot path may skip the
    /// transaction an event would need when none does).
    pub(crate) fn wants(&self, app: &str, event_type: &str) -> bool {
        self.endpoints_of(app)
            .iter()
            .any(|e| e.enabled && subscribed(&e.event_types, event_type))
    }

    /// Records an event of `app` for every enabled endpoint subscribed to `event_type`, on
    /// `conn` (the transaction of the change, where there is one). Nothing is written when no
    /// endpoint wants it.
    pub async fn emit(
        &self,
        conn: &impl ConnectionTrait,
        app: &str,
        event_type: &str,
        data: &impl Serialize,
    ) -> Result<()> {
        let Some((event, deliveries)) = self.event_rows(app, event_type, data) else {
            return Ok(());
        };
        event.insert(conn).await?;
        webhook_delivery::Entity::insert_many(deliveries)
            .exec(conn)
            .await?;
        metrics::counter!("starling_webhook_events_total").increment(1);
        self.webhooks.wake();
        Ok(())
    }

    /// The rows [`Messaging::emit`] writes for an event (the event and one delivery per
    /// enabled endpoint subscribed to `event_type`), for a caller that writes many events at
    /// once; `None` when no endpoint wants it.
    pub(crate) fn event_rows(
        &self,
        app: &str,
        event_type: &str,
        data: &impl Serialize,
    ) -> Option<(
        webhook_event::ActiveModel,
        Vec<webhook_delivery::ActiveModel>,
    )> {
        let eps: Vec<String> = self
            .endpoints_of(app)
            .into_iter()
            .filter(|e| e.enabled && subscribed(&e.event_types, event_type))
            .map(|e| e.id)
            .collect();
        if eps.is_empty() {
            return None;
        }
        let id = EventId::generate().into_string();
        let at = now();
        let payload = serde_json::json!({
            "id": id,
            "type": event_type,
            "app_id": app,
            "timestamp": at,
            "version": catalog::DATA_VERSION,
            "data": data,
        })
        .to_string();
        let event = webhook_event::ActiveModel {
            app_id: Set(app.to_owned()),
            id: Set(id.clone()),
            event_type: Set(event_type.to_owned()),
            payload: Set(payload),
            created_at: Set(at),
        };
        let deliveries = eps.iter().map(|e| new_delivery(app, &id, e)).collect();
        Some((event, deliveries))
    }

    /// Commits the transaction of a change that recorded events with [`Messaging::emit`], then
    /// wakes the dispatcher: woken before the commit, it could look before the rows are visible
    /// and wait for its next poll.
    pub(crate) async fn commit_events(&self, txn: sea_orm::DatabaseTransaction) -> Result<()> {
        txn.commit().await?;
        self.webhooks.wake();
        Ok(())
    }

    /// [`Messaging::emit`] after the change was committed: a failure is logged, not returned
    /// (the change stands).
    pub(crate) async fn emit_after(&self, app: &str, event_type: &str, data: &impl Serialize) {
        if let Err(e) = self.emit(&self.db, app, event_type, data).await {
            tracing::error!(error = %e.message, app_id = app, event_type, "recording a webhook event failed");
        }
    }

    /// The app's endpoints as this cell sees them.
    pub async fn webhook_endpoints(&self, app: &str) -> Result<Vec<EndpointStatusOut>> {
        let states: HashMap<String, webhook_endpoint_state::Model> =
            scoped::<webhook_endpoint_state::Entity>(app)
                .all(&self.db)
                .await?
                .into_iter()
                .map(|s| (s.endpoint_id.clone(), s))
                .collect();
        Ok(self
            .endpoints_of(app)
            .into_iter()
            .map(|e| {
                let st = states.get(&e.id);
                EndpointStatusOut {
                    failing_since: st.and_then(|s| s.failing_since),
                    disabled_at: st.and_then(|s| s.disabled_at).filter(|d| *d > e.enabled_at),
                    id: e.id,
                    url: e.url,
                    event_types: e.event_types,
                    enabled: e.enabled,
                    ordered: e.ordered,
                    rate_limit_per_second: e.rate_limit_per_second,
                }
            })
            .collect())
    }

    /// Recorded events, oldest first.
    pub async fn webhook_events(
        &self,
        app: &str,
        page: &PageParams,
    ) -> Result<Page<WebhookEventOut>> {
        starling_core::db::paginate(
            &self.db,
            scoped::<webhook_event::Entity>(app),
            webhook_event::Column::Id,
            page,
            event_out,
            |e| e.id.as_str(),
        )
        .await
    }

    /// One event.
    pub async fn webhook_event(&self, app: &str, id: &str) -> Result<WebhookEventOut> {
        scoped::<webhook_event::Entity>(app)
            .filter(webhook_event::Column::Id.eq(id))
            .one(&self.db)
            .await?
            .map(event_out)
            .ok_or_else(|| ApiError::not_found("event", id))
    }

    /// Deliveries (of an event, to an endpoint), oldest first; `status` narrows them.
    pub async fn webhook_deliveries(
        &self,
        app: &str,
        filter: &WebhookFilter,
        status: Option<&str>,
        page: &PageParams,
    ) -> Result<Page<DeliveryOut>> {
        let mut q = scoped::<webhook_delivery::Entity>(app);
        if let Some(e) = &filter.event_id {
            q = q.filter(webhook_delivery::Column::EventId.eq(e));
        }
        if let Some(e) = &filter.endpoint_id {
            q = q.filter(webhook_delivery::Column::EndpointId.eq(e));
        }
        if let Some(s) = status {
            q = q.filter(webhook_delivery::Column::Status.eq(s));
        }
        starling_core::db::paginate(
            &self.db,
            q,
            webhook_delivery::Column::Id,
            page,
            delivery_out,
            |d| d.id.as_str(),
        )
        .await
    }

    /// Attempts (of an event, to an endpoint), oldest first.
    pub async fn webhook_attempts(
        &self,
        app: &str,
        filter: &WebhookFilter,
        page: &PageParams,
    ) -> Result<Page<AttemptOut>> {
        let mut q = scoped::<webhook_attempt::Entity>(app);
        if let Some(e) = &filter.event_id {
            q = q.filter(webhook_attempt::Column::EventId.eq(e));
        }
        if let Some(e) = &filter.endpoint_id {
            q = q.filter(webhook_attempt::Column::EndpointId.eq(e));
        }
        starling_core::db::paginate(
            &self.db,
            q,
            webhook_attempt::Column::Id,
            page,
            attempt_out,
            |a| a.id.as_str(),
        )
        .await
    }

    /// Notices for the app's owners, oldest first.
    pub async fn webhook_notifications(
        &self,
        app: &str,
        page: &PageParams,
    ) -> Result<Page<NotificationOut>> {
        starling_core::db::paginate(
            &self.db,
            scoped::<webhook_notification::Entity>(app),
            webhook_notification::Column::Id,
            page,
            |n| NotificationOut {
                id: n.id,
                tenant_id: n.tenant_id,
                endpoint_id: n.endpoint_id,
                kind: n.kind,
                subject: n.subject,
                body: n.body,
                created_at: n.created_at,
            },
            |n| n.id.as_str(),
        )
        .await
    }

    /// Queues events again: one event, or those of a time range (at most 10,000), to every
    /// enabled endpoint subscribed to their type, or to one endpoint. Receivers see the same
    /// event ids as before.
    pub async fn replay(&self, app: &str, input: ReplayIn) -> Result<ReplayOut> {
        const MAX: u64 = 10_000;
        let eps: Vec<WebhookEndpointConfig> = match &input.endpoint_id {
            Some(id) => {
                let e = self
                    .endpoints_of(app)
                    .into_iter()
                    .find(|e| &e.id == id)
                    .ok_or_else(|| {
                        invalid("endpoint_id", format!("no endpoint {id} in this app"))
                    })?;
                vec![e]
            }
            None => self
                .endpoints_of(app)
                .into_iter()
                .filter(|e| e.enabled)
                .collect(),
        };
        let events: Vec<webhook_event::Model> = match (&input.event_id, input.since) {
            (Some(id), None) => vec![
                scoped::<webhook_event::Entity>(app)
                    .filter(webhook_event::Column::Id.eq(id))
                    .one(&self.db)
                    .await?
                    .ok_or_else(|| ApiError::not_found("event", id))?,
            ],
            (None, Some(since)) => {
                let until = input.until.unwrap_or_else(Utc::now);
                if until <= since {
                    return Err(invalid("until", "must be after since"));
                }
                let rows = scoped::<webhook_event::Entity>(app)
                    .filter(webhook_event::Column::CreatedAt.gte(since))
                    .filter(webhook_event::Column::CreatedAt.lt(until))
                    .order_by_asc(webhook_event::Column::CreatedAt)
                    .limit(MAX + 1)
                    .all(&self.db)
                    .await?;
                if rows.len() as u64 > MAX {
                    return Err(invalid(
                        "since",
                        format!("the range holds more than {MAX} events; replay a shorter one"),
                    ));
                }
                rows
            }
            (Some(_), Some(_)) => {
                return Err(invalid("event_id", "give event_id or since, not both"));
            }
            (None, None) => return Err(invalid("event_id", "give event_id or since")),
        };
        let mut rows = Vec::new();
        for ev in &events {
            for ep in &eps {
                if input.endpoint_id.is_some() || subscribed(&ep.event_types, &ev.event_type) {
                    rows.push(new_delivery(app, &ev.id, &ep.id));
                }
            }
        }
        let n = rows.len();
        for chunk in rows.chunks(500) {
            webhook_delivery::Entity::insert_many(chunk.to_vec())
                .exec(&self.db)
                .await?;
        }
        self.webhooks.wake();
        Ok(ReplayOut {
            events: events.len(),
            deliveries: n,
        })
    }
}
