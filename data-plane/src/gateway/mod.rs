//! The WebSocket gateway at `/v1/connect`.
//!
//! A client connects with a user token (`?token=…`, or `Authorization: Bearer …`), gets a
//! `hello` frame, then sends JSON frames ([`ClientFrame`]) and receives `ack`/`error` replies and
//! pushed [`Event`](crate::protocol::Event)s. Each connection has a bounded outbound queue: a
//! client that reads too slowly is closed with code 4008 rather than growing the server's memory.
//! A bad frame gets an `error` frame; the connection and its other work go on.
//!
//! Close codes: 1001 node shutting down, 1009 frame too large, 4001 token revoked (reconnect
//! with a new token), 4002 heartbeat timeout, 4003 access ended (user banned, deactivated or
//! deleted, app suspended or gone), 4008 slow consumer. Access ends on every node of the cell
//! within tens of milliseconds: see [`crate::service::access`] and [`crate::hub::Ending`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use starling_core::error::{ApiError, ErrorCode};
use starling_core::id::ConnectionId;
use tokio::sync::watch;

use crate::directory::UserPrincipal;
use crate::hub::{CloseReason, ConnHandle, Outbound};
use crate::node::Node;
use crate::protocol::{ClientFrame, Event, ServerFrame};
use crate::service::message::{Actor, HistoryQuery};

/// Query of the connect URL.
#[derive(Debug, Deserialize)]
pub struct ConnectQuery {
    /// The user token (browsers cannot set headers on a WebSocket).
    pub token: Option<String>,
}

/// `GET /v1/connect`: authenticate, check limits, upgrade.
pub async fn connect(
    State(node): State<Arc<Node>>,
    Query(q): Query<ConnectQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = q
        .token
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing user token: connect with ?token=<jwt>",
            )
        })?;
    // Endings that reach this node from now on also reach this connection (see `Hub::add`).
    let checked_at = std::time::Instant::now();
    let p = node.messaging.directory.verify_token(&token)?;
    node.messaging
        .active_user(p.app_id.as_str(), &p.user_id)
        .await?;
    if node
        .messaging
        .token_revoked(p.app_id.as_str(), &p.user_id, &p.token)
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "user token was revoked; get a new one",
        ));
    }
    if let Some(cfg) = node.messaging.directory.app(&p.app_id)
        && let Some(c) = node.messaging.metering.admit_user(&cfg, &p.user_id).await?
    {
        node.messaging
            .threshold_reached(cfg.app_id.as_str(), &c)
            .await;
    }

    let conn_id = ConnectionId::generate().into_string();
    let app = p.app_id.to_string();
    let counts = node
        .messaging
        .registry
        .connect(&app, &p.user_id, &node.node_id, &conn_id)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
    let refuse = |msg: String| {
        let mut e = ApiError::new(ErrorCode::QuotaExceeded, msg);
        e.retry_after = Some(5);
        e
    };
    let over = if counts.user > node.gateway.max_connections_per_user as u64 {
        Some(refuse(format!(
            "user {} already has {} connections (the most allowed)",
            p.user_id, node.gateway.max_connections_per_user
        )))
    } else if let Some(max) = p.limits.concurrent_connections
        && counts.app > max
    {
        Some(refuse(format!(
            "app {} is at its limit of {max} concurrent connections",
            p.app_id
        )))
    } else {
        None
    };
    if let Some(e) = over {
        let _ = node
            .messaging
            .registry
            .disconnect(&app, &p.user_id, &conn_id)
            .await;
        return Err(e);
    }

    let g = &node.gateway;
    let (node2, p2, conn2) = (node.clone(), p.clone(), conn_id.clone());
    Ok(ws
        // Small buffers on purpose: an idle connection should cost kilobytes, not 100+ KiB.
        // The read buffer is also the most read per syscall; clients send small frames, and a
        // large one just takes a few more reads.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(4 * 1024)
        // What a client that stopped reading can pile up in the node, beyond the frame queue
        // (whose frames are shared with other connections): 256 KiB, or two of the largest
        // frames. Past it the write fails and the connection is dropped.
        .max_write_buffer_size((2 * g.max_frame_bytes).max(256 * 1024))
        .max_message_size(g.max_frame_bytes)
        .max_frame_size(g.max_frame_bytes)
        .on_failed_upgrade(move |e| {
            tracing::debug!(error = %e, "websocket upgrade failed");
            let (n, p, c) = (node2, p2, conn2);
            tokio::spawn(async move {
                let _ = n
                    .messaging
                    .registry
                    .disconnect(p.app_id.as_str(), &p.user_id, &c)
                    .await;
            });
        })
        .on_upgrade(move |socket| run(node, p, conn_id, checked_at, counts.user, socket))
        .into_response())
}

/// Bytes read from a client socket at once (tungstenite keeps a buffer of this size per
/// connection).
const READ_BUFFER: usize = 1024;

/// At most this many queued frames are written before a flush.
const WRITE_BATCH: usize = 64;

fn frame_text(f: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(f).expect("server frames serialize"))
}

async fn run(
    node: Arc<Node>,
    p: UserPrincipal,
    conn_id: String,
    checked_at: std::time::Instant,
    user_conns: u64,
    socket: WebSocket,
) {
    let app = p.app_id.to_string();
    let user = p.user_id.clone();
    let g = &node.gateway;
    let (tx, rx) = flume::bounded::<Outbound>(g.outbound_queue);
    let (close_tx, close_rx) = watch::channel(CloseReason::Open);
    let close_tx = Arc::new(close_tx);
    node.hub.add(
        &app,
        &user,
        ConnHandle {
            id: conn_id.clone(),
            tx: tx.clone(),
            close: close_tx.clone(),
            token: p.token.clone(),
            checked_at,
        },
    );
    // A config update applied during the upgrade (suspension, retired secret) ends it too.
    if let Some(why) = node.messaging.directory.session_ended(&app, &p.token) {
        let _ = close_tx.send(CloseReason::Ended(why));
    }
    metrics::gauge!("starling_ws_connections").increment(1.0);
    node.messaging.metering.connection_opened(&app, &user);

    let hello = frame_text(&ServerFrame::Hello {
        connection_id: conn_id.clone(),
        user_id: user.clone(),
        app_id: app.clone(),
        heartbeat_ms: g.heartbeat_secs * 1000,
        max_frame_bytes: g.max_frame_bytes,
    });
    let _ = tx.try_send(Outbound::Frame(hello));
    // The writer starts first: pushes flow while the presence work below waits its turn.
    let (sink, mut stream) = socket.split();
    let timing = WriterTiming {
        heartbeat: Duration::from_secs(g.heartbeat_secs),
        delay: Duration::from_millis(g.write_delay_ms),
    };
    let writer_close = close_tx.clone();
    let writer = tokio::spawn(write_loop(sink, rx, close_rx, timing, writer_close));

    // Heavy futures are boxed so that they do not sit inline in this task's state for the
    // connection's whole life: an idle connection then costs ~1.6 KiB of task instead of
    // ~10 KiB. The announcement comes before the reader starts, so it always precedes the
    // offline one.
    if user_conns == 1 {
        let _permit = node.presence_gate.acquire().await;
        Box::pin(node.announce_presence(&app, &user, true, None)).await;
    }

    // Reader: frames from the client, in order; replies go through the same queue.
    let mut close_watch = close_tx.subscribe();
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(timing.heartbeat * 3, stream.next()) => n,
            _ = close_watch.changed() => break,
        };
        let msg = match next {
            Err(_) => {
                let _ = tx.try_send(Outbound::Frame(frame_text(&ServerFrame::Error {
                    id: None,
                    code: "heartbeat_timeout".into(),
                    message: "no frame or pong within three heartbeats".into(),
                })));
                let _ = close_tx.send(CloseReason::HeartbeatTimeout);
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "websocket read failed");
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        // Access ended while this frame arrived: it is not handled.
        if *close_tx.borrow() != CloseReason::Open {
            break;
        }
        let reply = match msg {
            Message::Text(t) => {
                // One span per frame: the trace of a send continues on the receivers' nodes.
                let span =
                    tracing::info_span!("ws_frame", app_id = %p.app_id, user_id = %p.user_id);
                Some(
                    Box::pin(tracing::Instrument::instrument(
                        handle_text(&node, &p, t.as_str()),
                        span,
                    ))
                    .await,
                )
            }
            Message::Binary(_) => Some(ServerFrame::Error {
                id: None,
                code: "invalid_frame".into(),
                message: "binary frames are not supported; send JSON text".into(),
            }),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => None,
        };
        if let Some(r) = reply {
            match tx.try_send(Outbound::Frame(frame_text(&r))) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(_)) => {
                    let _ = close_tx.send(CloseReason::SlowConsumer);
                    break;
                }
                Err(flume::TrySendError::Disconnected(_)) => break,
            }
        }
    }

    node.hub.remove(&app, &user, &conn_id);
    drop(tx);
    // The socket's read half goes now: with the writer's half (dropped when it ends), the
    // socket closes before the bookkeeping below, which may wait for the presence gate.
    drop(stream);
    Box::pin(finish(node, app, user, conn_id, writer)).await;
}

/// When a connection's writer writes.
#[derive(Clone, Copy)]
struct WriterTiming {
    /// Between pings.
    heartbeat: Duration,
    /// Least time between two writes of a busy connection (`gateway.write_delay_ms`).
    delay: Duration,
}

/// The writer of one connection: queued frames, heartbeats, and the close when asked.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    rx: flume::Receiver<Outbound>,
    mut close_rx: watch::Receiver<CloseReason>,
    timing: WriterTiming,
    writer_close: Arc<watch::Sender<CloseReason>>,
) {
    let mut tick = tokio::time::interval(timing.heartbeat);
    tick.tick().await;
    let mut last_write: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            biased;
            changed = close_rx.changed() => {
                let reason = if changed.is_ok() { *close_rx.borrow() } else { CloseReason::Shutdown };
                let (code, text) = match reason {
                    CloseReason::SlowConsumer => (4008, "slow consumer: frames were not read in time"),
                    CloseReason::Shutdown => (1001, "node shutting down"),
                    CloseReason::HeartbeatTimeout => (4002, "heartbeat timeout"),
                    CloseReason::Ended(why) => (why.close_code(), why.reason()),
                    CloseReason::Open => continue,
                };
                // Nothing more reaches a session whose access ended, and a client that
                // stopped reading cannot take it.
                if matches!(reason, CloseReason::HeartbeatTimeout | CloseReason::Shutdown) {
                    // Flush what is queued (e.g. the error that explains the close), briefly.
                    let flush = async {
                        while let Ok(Outbound::Frame(f)) = rx.try_recv() {
                            if sink.send(Message::Text(f)).await.is_err() {
                                break;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
                }
                // A client that stopped reading cannot take even the close frame.
                let close = sink.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(text) })));
                let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
                break;
            }
            out = rx.recv_async() => match out {
                Ok(Outbound::Frame(f)) => {
                    // Write what else is queued too, then flush once: one syscall for a
                    // burst instead of one per frame. With a write delay, a busy connection
                    // writes at most once per delay: the frames that arrive meanwhile join
                    // the burst (and, as the queue is not watched while waiting, do not wake
                    // this task either). A quiet connection writes at once.
                    if let Some(next) = last_write.and_then(|t| t.checked_add(timing.delay))
                        && next > tokio::time::Instant::now()
                    {
                        tokio::time::sleep_until(next).await;
                    }
                    let mut ok = sink.feed(Message::Text(f)).await.is_ok();
                    let mut more = WRITE_BATCH;
                    while ok && more > 0 && let Ok(Outbound::Frame(f)) = rx.try_recv() {
                        ok = sink.feed(Message::Text(f)).await.is_ok();
                        more -= 1;
                    }
                    if !ok || sink.flush().await.is_err() {
                        break;
                    }
                    if !timing.delay.is_zero() {
                        last_write = Some(tokio::time::Instant::now());
                    }
                }
                Err(flume::RecvError::Disconnected) => break,
            },
            _ = tick.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = writer_close.send(CloseReason::Shutdown);
}

/// After the reader stopped: ends the writer, unregisters the connection and, for the user's
/// last one, announces them offline.
async fn finish(
    node: Arc<Node>,
    app: String,
    user: String,
    conn_id: String,
    mut writer: tokio::task::JoinHandle<()>,
) {
    // The writer may be stuck writing to a client that stopped reading: end it, which drops
    // the socket, rather than leave it (and its buffers) behind.
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    metrics::gauge!("starling_ws_connections").decrement(1.0);
    node.messaging.metering.connection_closed(&app);
    let _permit = node.presence_gate.acquire().await;
    let left = node
        .messaging
        .registry
        .disconnect(&app, &user, &conn_id)
        .await
        .unwrap_or(0);
    if left == 0 {
        let seen = node.messaging.touch_last_seen(&app, &user).await;
        node.announce_presence(&app, &user, false, seen).await;
    }
}

fn error_frame(id: Option<String>, e: ApiError) -> ServerFrame {
    ServerFrame::Error {
        id,
        code: e.code.as_str().to_owned(),
        message: e.message,
    }
}

/// Handles one text frame; never fails: problems become `error` frames.
pub async fn handle_text(node: &Node, p: &UserPrincipal, text: &str) -> ServerFrame {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return ServerFrame::Error {
                id: None,
                code: "invalid_json".into(),
                message: format!("frame is not valid JSON: {e}"),
            };
        }
    };
    let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
    let frame: ClientFrame = match serde_json::from_value(v.clone()) {
        Ok(f) => f,
        Err(e) => {
            return ServerFrame::Error {
                id,
                code: "invalid_frame".into(),
                message: e.to_string(),
            };
        }
    };
    // serde cannot refuse unknown fields through `flatten`: compare with what was understood.
    if let (Some(sent), Ok(Value::Object(known))) = (v.as_object(), serde_json::to_value(&frame))
        && let Some(k) = sent.keys().find(|k| !known.contains_key(*k))
    {
        let ty = known.get("type").and_then(Value::as_str).unwrap_or("?");
        return ServerFrame::Error {
            id,
            code: "invalid_frame".into(),
            message: format!("unknown field `{k}` in a {ty} frame"),
        };
    }
    match handle(node, p, frame).await {
        Ok(result) => ServerFrame::Ack { id, result },
        Err(e) => error_frame(id, e),
    }
}

async fn handle(node: &Node, p: &UserPrincipal, frame: ClientFrame) -> Result<Value, ApiError> {
    let m = &node.messaging;
    let app = p.app_id.as_str();
    let user = p.user_id.as_str();
    // The app's current state, not the one at connect time.
    let cfg = m
        .directory
        .app(&p.app_id)
        .ok_or_else(|| ApiError::new(ErrorCode::AppSuspended, "the app no longer exists"))?;
    if let Some(why) = &cfg.suspended {
        return Err(ApiError::new(
            ErrorCode::AppSuspended,
            format!("app {app} is suspended ({why})"),
        ));
    }
    let limits = &cfg.limits;
    // A user whose access ended (banned, deactivated, deleted) is refused even in the moment
    // before the close reaches this connection. `send` checks the user in its own query;
    // `edit`, `delete` and `react` in the service, for every door.
    if matches!(
        frame,
        ClientFrame::Sync { .. }
            | ClientFrame::Read { .. }
            | ClientFrame::Typing { .. }
            | ClientFrame::Subscribe { .. }
            | ClientFrame::Unsubscribe { .. }
    ) {
        m.active_user(app, user).await?;
    }
    Ok(match frame {
        ClientFrame::Send {
            conversation_id,
            content,
            ..
        } => {
            let (msg, duplicate) = m
                .send(app, limits, &conversation_id, Actor::User(user), content)
                .await?;
            json!({"message": msg, "duplicate": duplicate})
        }
        ClientFrame::Edit {
            conversation_id,
            message_id,
            edit,
            ..
        } => {
            json!({"message": m.edit(app, limits, &conversation_id, &message_id, Actor::User(user), edit).await?})
        }
        ClientFrame::Delete {
            conversation_id,
            message_id,
            ..
        } => {
            json!({"message": m.delete_message(app, &conversation_id, &message_id, Actor::User(user)).await?})
        }
        ClientFrame::React {
            conversation_id,
            message_id,
            emoji,
            remove,
            ..
        } => {
            json!({"reactions": m.react(app, &conversation_id, &message_id, user, &emoji, remove).await?})
        }
        ClientFrame::Read {
            conversation_id,
            seq,
            ..
        } => {
            json!({"last_read_seq": m.mark_read(app, &conversation_id, user, seq).await?})
        }
        ClientFrame::Typing {
            conversation_id,
            state,
            ..
        } => {
            m.typing(app, &conversation_id, user, &state).await?;
            json!({})
        }
        ClientFrame::Subscribe {
            conversation_id, ..
        } => {
            json!({"member": m.join_room(app, &conversation_id, user).await?})
        }
        ClientFrame::Unsubscribe {
            conversation_id, ..
        } => {
            m.leave_room(app, &conversation_id, user).await?;
            json!({})
        }
        ClientFrame::Sync {
            conversation_id,
            after_seq,
            limit,
            ..
        } => {
            m.require_member(app, &conversation_id, user).await?;
            let q = HistoryQuery {
                after_seq: Some(after_seq),
                before_seq: None,
                limit: Some(limit.unwrap_or(100)),
                order: Some("asc".into()),
            };
            serde_json::to_value(m.history(app, &conversation_id, &q).await?).expect("serializes")
        }
        ClientFrame::Ping { .. } => json!({"pong": true}),
    })
}

impl Node {
    /// Tells the people a user talks with (direct and group conversations) that the user came
    /// online or went offline.
    pub async fn announce_presence(
        &self,
        app: &str,
        user: &str,
        online: bool,
        last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        match self.messaging.contacts(app, user).await {
            Ok(mut to) => {
                to.push(user.to_owned());
                self.messaging
                    .deliver(
                        app,
                        &to,
                        &Event::Presence {
                            user_id: user.to_owned(),
                            online,
                            last_seen_at,
                        },
                    )
                    .await;
            }
            Err(e) => tracing::warn!(error = %e.message, "presence audience lookup failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, E, G, F: std::future::Future>(
        _: impl FnOnce(A, B, C, D, E, G) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }
    fn future_size5<A, B, C, D, E, F: std::future::Future>(
        _: impl FnOnce(A, B, C, D, E) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// Each open connection keeps its reader's and writer's state for its whole life, so both
    /// must stay small: the per-frame work (a message send is ~9 KiB of future) is boxed and
    /// lives only while a frame is handled.
    #[test]
    fn an_idle_connection_keeps_little_task_state() {
        let reader = future_size(run);
        let writer = future_size5(write_loop);
        eprintln!("reader {reader} bytes, writer {writer} bytes");
        assert!(reader <= 2048, "the reader's state is {reader} bytes");
        assert!(writer <= 1024, "the writer's state is {writer} bytes");
    }
}
