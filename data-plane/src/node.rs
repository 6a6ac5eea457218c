//! A gateway node: the messaging services, this node's connections, its inbox on the bus, and
//! the HTTP routes (server API and WebSocket gateway).

use std::sync::Arc;

use axum::Router;
use sea_orm::DatabaseConnection;
use starling_core::config::GatewayConfig;

use crate::bus::Bus;
use crate::directory::Directory;
use crate::hub::Hub;
use crate::metering::Metering;
use crate::quota::InProcessQuotas;
use crate::ratelimit::{InProcessLimiter, RateLimiter};
use crate::registry::Registry;
use crate::service::Messaging;

/// A running node.
pub struct Node {
    /// This node's id in its cell.
    pub node_id: String,
    /// Gateway settings.
    pub gateway: GatewayConfig,
    /// The messaging services.
    pub messaging: Messaging,
    /// Connections open on this node.
    pub hub: Arc<Hub>,
    /// Per-key request rate limits of the server API.
    pub rate_limits: Arc<dyn RateLimiter>,
    /// Bounds how many connections do their database work of coming online or going offline
    /// (presence, last seen) at once ([`PRESENCE_CONCURRENCY`]). When thousands of clients
    /// connect or drop together, the others wait with a few hundred bytes of state each
    /// instead of each holding a pending query (~10 KiB), which is what made a mass
    /// disconnect grow the node's memory by ~12 KiB per connection, and the handshakes and
    /// sends still find free database connections.
    pub presence_gate: tokio::sync::Semaphore,
}

/// Connections doing their online/offline database work at once, per node: well below the
/// database pool (20 by default, 8 on SQLite), so that handshakes and sends still get
/// connections while a wave of presence work drains.
pub const PRESENCE_CONCURRENCY: usize = 8;

impl Node {
    /// Migrates the database, takes this node's inbox on the bus and starts pushing its
    /// deliveries to local connections.
    pub async fn start(
        db: DatabaseConnection,
        directory: Arc<Directory>,
        bus: Arc<dyn Bus>,
        registry: Arc<dyn Registry>,
        gateway: GatewayConfig,
    ) -> anyhow::Result<Arc<Node>> {
        Self::start_with(
            db,
            directory,
            bus,
            registry,
            Arc::new(InProcessLimiter::default()),
            gateway,
        )
        .await
    }

    /// [`Node::start`] with a given rate limiter (Redis in a cell).
    pub async fn start_with(
        db: DatabaseConnection,
        directory: Arc<Directory>,
        bus: Arc<dyn Bus>,
        registry: Arc<dyn Registry>,
        rate_limits: Arc<dyn RateLimiter>,
        gateway: GatewayConfig,
    ) -> anyhow::Result<Arc<Node>> {
        let metering = Arc::new(Metering::new(
            &gateway.node_id,
            starling_core::clock::system(),
            Arc::new(InProcessQuotas::default()),
            None,
        ));
        Self::start_metered(db, directory, bus, registry, rate_limits, metering, gateway).await
    }

    /// [`Node::start_with`] with given metering (quota counters in Redis and usage sent to the
    /// control plane in a cell; an injected clock in tests). Starts its flush task.
    pub async fn start_metered(
        db: DatabaseConnection,
        directory: Arc<Directory>,
        bus: Arc<dyn Bus>,
        registry: Arc<dyn Registry>,
        rate_limits: Arc<dyn RateLimiter>,
        metering: Arc<Metering>,
        gateway: GatewayConfig,
    ) -> anyhow::Result<Arc<Node>> {
        crate::store::migrate(&db).await?;
        metering.spawn(std::time::Duration::from_millis(
            gateway.usage_flush_ms.max(10),
        ));
        let hub = Arc::new(Hub::new());
        let mut inbox = bus.subscribe(&gateway.node_id).await?;
        let h = hub.clone();
        tokio::spawn(async move {
            // A conversation's new messages go out in seq order, whichever node sent them.
            let mut order = crate::sequencer::Sequencer::default();
            loop {
                let deadline = order.deadline();
                let ready = tokio::select! {
                    d = inbox.recv() => match d {
                        Some(d) => order.offer(d, std::time::Instant::now()),
                        None => break,
                    },
                    _ = async {
                        match deadline {
                            Some(t) => tokio::time::sleep_until(t.into()).await,
                            None => std::future::pending().await,
                        }
                    } => order.expire(std::time::Instant::now()),
                };
                for d in ready {
                    push_delivery(&h, d);
                }
            }
        });
        // Keep this node's connections alive in a registry whose entries expire.
        let (reg, h, node_id, every) = (
            registry.clone(),
            hub.clone(),
            gateway.node_id.clone(),
            std::time::Duration::from_secs(gateway.registry_ttl_secs)
                .max(std::time::Duration::from_secs(3))
                / 3,
        );
        tokio::spawn(heartbeat_loop(reg, h, node_id, every));
        // Sessions the app's configuration no longer allows (a suspended or removed app, a
        // retired token secret) end as soon as the update is applied here, and a secret that
        // expires by time is caught within a second.
        tokio::spawn(sweep_loop(directory.clone(), hub.clone()));
        let webhooks = Arc::new(crate::webhook::Webhooks::new(gateway.webhooks.clone())?);
        let (outbox_cleared, mut cleared_rx) =
            tokio::sync::mpsc::channel::<(String, String)>(65_536);
        let (committer, commit_rx) = crate::service::commit::Committer::new(gateway.send_queue);
        let node = Arc::new(Node {
            node_id: gateway.node_id.clone(),
            gateway,
            messaging: Messaging {
                db,
                registry,
                bus,
                directory,
                webhooks,
                outbox_cleared,
                committer,
                metering,
            },
            hub,
            rate_limits,
            presence_gate: tokio::sync::Semaphore::new(PRESENCE_CONCURRENCY),
        });
        // Write sends' messages, several per transaction (group commit).
        tokio::spawn(crate::service::commit::run(
            node.messaging.clone(),
            commit_rx,
            node.gateway.send_batch_max,
            std::time::Duration::from_millis(node.gateway.commit_timeout_ms),
        ));
        // Clear published messages' outbox rows in batches, off the send path.
        let m = node.messaging.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(512);
            while cleared_rx.recv_many(&mut buf, 512).await > 0 {
                m.clear_outbox(std::mem::take(&mut buf)).await;
            }
        });
        // Webhook delivery, shared by every node of the cell through the database.
        if node.gateway.webhooks.deliver {
            tokio::spawn(crate::webhook::dispatch::run(node.messaging.clone()));
        }
        // The outbox relay: messages whose publication was not confirmed within 3 s.
        let m = node.messaging.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                match m.relay_outbox(std::time::Duration::from_secs(3), 200).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(relayed = n, "outbox relayed messages"),
                    Err(e) => tracing::warn!(error = %e.message, "outbox relay failed"),
                }
            }
        });
        Ok(node)
    }

    /// The node's HTTP routes: `/v1/connect` and the server API under `/v1`.
    pub fn router(self: &Arc<Self>) -> Router {
        crate::api::router(self.clone())
    }

    /// The internal API (`/internal/v1`, the control plane's moderation calls), for the node's
    /// internal listener only; every call needs a call token signed for `auth.cluster_id`.
    pub fn internal_router(self: &Arc<Self>, auth: crate::api::internal::InternalAuth) -> Router {
        crate::api::internal::router(self.clone(), auth)
    }

    /// Closes every connection (code 1001) so clients reconnect elsewhere.
    pub fn shutdown(&self) {
        self.hub.close_all();
    }
}

impl Node {
    /// `/healthz`, `/readyz` (the database answers) and `/metrics` for a node process.
    pub fn ops_router(
        self: &Arc<Self>,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> Router {
        use axum::routing::get;
        let node = self.clone();
        Router::new()
            .route(
                "/healthz",
                get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
            )
            .route(
                "/readyz",
                get(move || {
                    let node = node.clone();
                    async move {
                        let db = node.messaging.db.ping().await.is_ok();
                        let body = serde_json::json!({
                            "status": if db { "ok" } else { "unavailable" },
                            "checks": {"database": if db { "ok" } else { "unavailable" }},
                            "node_id": node.node_id,
                            "connections": node.hub.len(),
                        });
                        let code = if db {
                            axum::http::StatusCode::OK
                        } else {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        };
                        (code, axum::Json(body))
                    }
                }),
            )
            .route(
                "/metrics",
                get(move || {
                    let m = metrics.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            m.render(),
                        )
                    }
                }),
            )
    }
}

/// Keeps this node's connections registered, every `every`. When the registry was unreachable
/// or had lost some of them, pushes meant for them may have gone nowhere: those connections are
/// told to `resync`. After a failure it retries sooner, to shorten the time nobody is reachable.
async fn heartbeat_loop(
    reg: Arc<dyn Registry>,
    hub: Arc<Hub>,
    node_id: String,
    every: std::time::Duration,
) {
    let retry = every.min(std::time::Duration::from_millis(250));
    let mut failed = false;
    loop {
        tokio::time::sleep(if failed { retry } else { every }).await;
        let conns = hub.connections();
        match reg.heartbeat(&node_id, &conns).await {
            Err(e) => {
                if !failed {
                    tracing::warn!(error = %e, "registry heartbeat failed; retrying");
                }
                failed = true;
            }
            Ok(restored) => {
                let reason = if failed {
                    "registry_unavailable"
                } else if !restored.is_empty() {
                    "registry_lost_state"
                } else {
                    continue;
                };
                let restored: std::collections::HashSet<String> = restored.into_iter().collect();
                let frame = resync_frame(reason, conns.len());
                let told = if failed {
                    hub.push_where(&frame, |_| true)
                } else {
                    hub.push_where(&frame, |c| restored.contains(c))
                };
                tracing::info!(reason, told, "registry back; connections told to resync");
                metrics::counter!("starling_registry_resyncs_total", "reason" => reason)
                    .increment(told as u64);
                failed = false;
            }
        }
    }
}

/// Ends the sessions the directory no longer allows, after every applied update and once a
/// second.
async fn sweep_loop(directory: Arc<Directory>, hub: Arc<Hub>) {
    let mut applied = directory.applied();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            r = applied.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
        }
        let n = hub.sweep(|app, token| directory.session_ended(app, token));
        if n > 0 {
            tracing::info!(closed = n, "sessions ended by the app's configuration");
        }
    }
}

/// The `resync` frame: clients spread their catch-up over a time that grows with the number of
/// connections told (1 s per 5,000, at most 10 s).
fn resync_frame(reason: &str, conns: usize) -> crate::hub::Utf8Bytes {
    let spread_ms = (conns as u64 / 5).clamp(100, 10_000);
    let f = crate::protocol::ServerFrame::Resync {
        reason: reason.to_owned(),
        spread_ms,
    };
    crate::hub::Utf8Bytes::from(serde_json::to_string(&f).unwrap_or_default())
}

/// Pushes one delivery from the bus to this node's connections.
fn push_delivery(hub: &Hub, d: crate::bus::Delivery) {
    // Continue the sender's trace on this node (one span per delivery to this node, not per
    // recipient).
    let span = tracing::info_span!("push", app_id = %d.app_id, users = d.users.len());
    if let Some(tp) = &d.trace {
        starling_core::telemetry::extract_into(&span, tp);
    }
    let _g = span.enter();
    if let Some(ending) = &d.end {
        let n = hub.end(&d.app_id, &d.users, ending);
        tracing::info!(why = ?ending.why, closed = n, "sessions ended");
        return;
    }
    // One copy of the frame per delivery to this node; its connections share it.
    let frame = crate::hub::Utf8Bytes::from(d.frame.as_ref());
    let n = hub.push(&d.app_id, &d.users, &frame);
    metrics::counter!("starling_ws_frames_pushed_total").increment(n as u64);
}
