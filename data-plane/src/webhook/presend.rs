//! The pre-send hook: before a message is stored, the app's hook gets it (a signed POST, like
//! a webhook, type `message.pre_send`) and answers within its timeout:
//!
//! - `{"action": "accept"}` (or an empty 2xx body): store it as it is;
//! - `{"action": "reject", "reason": "…"}`: refuse it; the sender sees `message_rejected` with
//!   the reason;
//! - `{"action": "rewrite", "text": "…", "custom": {…}}`: store it with these fields replaced.
//!
//! On a timeout, an error, a non-2xx answer or an unreadable body, the app's setting decides:
//! fail open (store the message unchanged) or fail closed (refuse it, `unavailable`).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use starling_core::error::{ApiError, ErrorCode};
use starling_core::id::{AppId, EventId};

use crate::protocol::MessageContent;
use crate::service::{Messaging, Result};

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Verdict {
    Accept,
    Reject {
        #[serde(default)]
        reason: Option<String>,
    },
    Rewrite {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        custom: Option<Value>,
    },
}

impl Messaging {
    /// Asks the app's pre-send hook about a message (no hook: accepted). May change `content`.
    pub(crate) async fn pre_send(
        &self,
        app: &str,
        conversation_id: &str,
        sender: Option<&str>,
        content: &mut MessageContent,
    ) -> Result<()> {
        let Some(hook) = self
            .directory
            .app(&AppId::from_trusted(app.to_owned()))
            .and_then(|c| c.pre_send_hook.clone())
        else {
            return Ok(());
        };
        let timeout = Duration::from_millis(
            hook.timeout_ms
                .min(self.webhooks.cfg.max_pre_send_timeout_ms)
                .max(1),
        );
        let id = EventId::generate().into_string();
        let body = json!({
            "id": id,
            "type": "message.pre_send",
            "app_id": app,
            "timestamp": super::now_rfc3339(),
            "version": 1,
            "data": {
                "conversation_id": conversation_id,
                "sender_id": sender,
                "message": content,
            },
        })
        .to_string();
        let started = Instant::now();
        let sent = self
            .webhooks
            .post(
                &hook.url,
                &id,
                &[hook.secret.secret.as_str()],
                body.as_bytes(),
                timeout,
                true,
            )
            .await;
        metrics::histogram!("starling_pre_send_hook_seconds")
            .record(started.elapsed().as_secs_f64());
        let verdict = match (sent.status, &sent.body) {
            (Some(s), Some(b)) if (200..300).contains(&s) => {
                if b.iter().all(u8::is_ascii_whitespace) {
                    Ok(Verdict::Accept)
                } else {
                    serde_json::from_slice::<Verdict>(b)
                        .map_err(|e| format!("unreadable answer: {e}"))
                }
            }
            (Some(s), _) => Err(format!("answered {s}")),
            _ => Err(sent.error.unwrap_or_else(|| "no answer".into())),
        };
        match verdict {
            Ok(Verdict::Accept) => Ok(()),
            Ok(Verdict::Reject { reason }) => {
                metrics::counter!("starling_pre_send_rejections_total").increment(1);
                let reason = reason
                    .map(|r| r.chars().take(512).collect::<String>())
                    .unwrap_or_else(|| "no reason given".into());
                Err(ApiError::new(
                    ErrorCode::MessageRejected,
                    format!("the message was rejected: {reason}"),
                ))
            }
            Ok(Verdict::Rewrite { text, custom }) => {
                if text.is_none() && custom.is_none() {
                    return Ok(());
                }
                if let Some(t) = text {
                    content.text = Some(t);
                }
                if let Some(c) = custom {
                    content.custom = Some(c);
                }
                Ok(())
            }
            Err(why) => {
                metrics::counter!("starling_pre_send_failures_total").increment(1);
                if hook.fail_open {
                    tracing::warn!(app_id = app, error = %why, "pre-send hook failed; message accepted (fail open)");
                    Ok(())
                } else {
                    tracing::warn!(app_id = app, error = %why, "pre-send hook failed; message refused (fail closed)");
                    Err(ApiError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "the app's pre-send hook did not answer usably ({why}); the message was not stored"
                        ),
                    ))
                }
            }
        }
    }
}
