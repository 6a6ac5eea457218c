//! Inbound Stripe webhooks: the signature checked exactly as Stripe documents it
//! (HMAC-SHA256 of `"{t}.{body}"`, `v1` signatures, a timestamp tolerance), the event handled
//! in one transaction that records its id (a replay changes nothing), applied only when newer
//! than what was applied before (out-of-order delivery is harmless).

use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TryInsertResult,
};
use serde::Deserialize;
use sha2::Sha256;
use starling_core::error::{ApiError, ErrorCode};
use starling_core::id::TenantId;

use super::WebhookOut;
use crate::entity::billing::{plan_price, stripe_event, tenant_billing};
use crate::entity::{Status, tenant};
use crate::service::{ControlPlane, Error, Result, invalid, not_found};

type HmacSha256 = Hmac<Sha256>;

/// Checks a `Stripe-Signature` header (`t=…,v1=…[,v1=…]`) over `payload`: a `v1` signature must
/// be the HMAC-SHA256 of `"{t}.{payload}"` with `secret`, and `t` within `tolerance` of `now`.
pub fn verify_signature(
    payload: &[u8],
    header: &str,
    secret: &str,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> std::result::Result<(), String> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or("no timestamp (t=) in the Stripe-Signature header")?;
    if sigs.is_empty() {
        return Err("no v1 signature in the Stripe-Signature header".into());
    }
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let expected = hex::encode(mac.finalize().into_bytes());
    if !sigs
        .iter()
        .any(|s| starling_core::secret::constant_time_eq(s, &expected))
    {
        return Err("the signature does not match the payload".into());
    }
    let at = Utc
        .timestamp_opt(t, 0)
        .single()
        .ok_or("the signature timestamp is out of range")?;
    if (now - at).abs() > tolerance {
        return Err(format!(
            "the signature timestamp {t} is outside the tolerance of {} s",
            tolerance.num_seconds()
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: serde_json::Value,
}

fn str_field<'a>(v: &'a serde_json::Value, f: &str) -> Option<&'a str> {
    v.get(f).and_then(|x| x.as_str())
}

impl ControlPlane {
    /// Handles an inbound Stripe webhook: verifies its signature (a bad or stale one is a 400
    /// and changes nothing), then applies it once.
    pub async fn handle_stripe_webhook(
        &self,
        payload: &[u8],
        signature: Option<&str>,
    ) -> Result<WebhookOut> {
        let billing = self
            .billing
            .clone()
            .ok_or_else(|| not_found("route", "/stripe/webhook"))?;
        let secret = billing.webhook_secret.as_deref().ok_or_else(|| {
            Error::Api(ApiError::new(
                ErrorCode::Unavailable,
                "billing.stripe_webhook_secret is not configured; webhooks cannot be verified",
            ))
        })?;
        let bad = |m: String| {
            let mut e = ApiError::new(ErrorCode::InvalidRequest, format!("stripe-signature: {m}"));
            e.field = Some("stripe-signature".into());
            Error::Api(e)
        };
        let sig = signature.ok_or_else(|| bad("the header is missing".into()))?;
        verify_signature(payload, sig, secret, self.clock.now(), billing.tolerance).map_err(bad)?;
        let ev: Event = serde_json::from_slice(payload).map_err(|e| {
            Error::Api(ApiError::new(
                ErrorCode::InvalidJson,
                format!("not a Stripe event: {e}"),
            ))
        })?;
        let created = Utc
            .timestamp_opt(ev.created, 0)
            .single()
            .ok_or_else(|| invalid("created", "out of range"))?;
        let obj = &ev.data.object;
        let customer = str_field(obj, "customer").map(str::to_owned);
        let txn = starling_core::db::begin_write(&self.db).await?;
        let first = stripe_event::Entity::insert(stripe_event::ActiveModel {
            id: Set(ev.id.clone()),
            kind: Set(ev.kind.clone()),
            received_at: Set(crate::service::now()),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await?;
        if !matches!(first, TryInsertResult::Inserted(n) if n > 0) {
            txn.rollback().await?;
            return Ok(WebhookOut {
                status: "duplicate".into(),
            });
        }
        let row = match &customer {
            Some(c) => {
                tenant_billing::Entity::find()
                    .filter(tenant_billing::Column::StripeCustomerId.eq(c.as_str()))
                    .one(&txn)
                    .await?
            }
            None => None,
        };
        let Some(b) = row else {
            txn.commit().await?;
            tracing::info!(event = %ev.id, kind = %ev.kind, "stripe event for no known tenant ignored");
            return Ok(WebhookOut {
                status: "ignored".into(),
            });
        };
        let tenant = TenantId::from_trusted(b.tenant_id.clone());
        let mut new_plan: Option<String> = None;
        let mut restore = false;
        let status = match ev.kind.as_str() {
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => {
                if b.subscription_event_at.is_some_and(|at| at > created) {
                    "stale"
                } else {
                    let deleted = ev.kind == "customer.subscription.deleted";
                    let price = obj
                        .pointer("/items/data/0/price/id")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned);
                    let mut am: tenant_billing::ActiveModel = b.clone().into();
                    am.subscription_event_at = Set(Some(created));
                    am.stripe_subscription_id = Set(str_field(obj, "id")
                        .map(str::to_owned)
                        .or(b.stripe_subscription_id.clone()));
                    am.subscription_status = Set(Some(if deleted {
                        "canceled".to_owned()
                    } else {
                        str_field(obj, "status").unwrap_or("active").to_owned()
                    }));
                    am.updated_at = Set(crate::service::now());
                    am.update(&txn).await?;
                    if deleted {
                        new_plan = self.default_plan().await?.map(|p| p.id);
                    } else if let Some(price) = price {
                        new_plan = plan_price::Entity::find()
                            .filter(plan_price::Column::StripePriceId.eq(price))
                            .one(&txn)
                            .await?
                            .map(|p| p.plan_id);
                    }
                    "applied"
                }
            }
            "invoice.payment_failed" | "invoice.paid" | "invoice.payment_succeeded" => {
                if b.invoice_event_at.is_some_and(|at| at > created) {
                    "stale"
                } else {
                    let mut am: tenant_billing::ActiveModel = b.clone().into();
                    am.invoice_event_at = Set(Some(created));
                    if ev.kind == "invoice.payment_failed" {
                        if b.payment_failed_at.is_none() {
                            am.payment_failed_at = Set(Some(created));
                            am.grace_until = Set(Some(created + billing.grace));
                        }
                    } else {
                        am.payment_failed_at = Set(None);
                        am.grace_until = Set(None);
                        if b.suspended_by_billing {
                            am.suspended_by_billing = Set(false);
                            restore = true;
                        }
                    }
                    am.updated_at = Set(crate::service::now());
                    am.update(&txn).await?;
                    "applied"
                }
            }
            _ => "ignored",
        };
        // The tenant's changes commit with the event's id, or not at all: a plan change that
        // fails leaves the event unrecorded, Stripe delivers it again (it retries any answer
        // but 2xx), and the retry applies it.
        let mut publish = restore;
        if restore || new_plan.is_some() {
            let t = tenant::Entity::find_by_id(tenant.to_string())
                .one(&txn)
                .await?
                .ok_or_else(|| not_found("tenant", &tenant))?;
            let plan_changes = new_plan.as_ref().is_some_and(|p| *p != t.plan_id);
            publish |= plan_changes;
            let mut am: tenant::ActiveModel = t.into();
            if restore {
                am.status = Set(Status::Active);
            }
            if let Some(p) = new_plan.filter(|_| plan_changes) {
                am.plan_id = Set(p);
            }
            am.updated_at = Set(crate::service::now());
            am.update(&txn).await?;
        }
        txn.commit().await?;
        tracing::info!(event = %ev.id, kind = %ev.kind, tenant_id = %tenant, status, "stripe event");
        if publish {
            self.publish_tenant(tenant.as_str()).await;
        }
        // A grace period that is already over (a late event, or no grace configured).
        self.enforce_grace().await?;
        Ok(WebhookOut {
            status: status.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(payload: &[u8], secret: &str, t: i64) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(payload);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures() {
        let now = Utc::now();
        let tol = Duration::seconds(300);
        let p = br#"{"id":"evt_1"}"#;
        let h = sign(p, "whsec_a", now.timestamp());
        verify_signature(p, &h, "whsec_a", now, tol).unwrap();
        assert!(
            verify_signature(p, &h, "whsec_b", now, tol).is_err(),
            "wrong secret"
        );
        assert!(
            verify_signature(b"{}", &h, "whsec_a", now, tol).is_err(),
            "other payload"
        );
        let old = sign(p, "whsec_a", now.timestamp() - 301);
        assert!(
            verify_signature(p, &old, "whsec_a", now, tol)
                .unwrap_err()
                .contains("tolerance")
        );
        assert!(verify_signature(p, "v1=abc", "whsec_a", now, tol).is_err());
        assert!(verify_signature(p, "t=1", "whsec_a", now, tol).is_err());
    }
}
