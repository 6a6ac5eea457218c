//! Stripe billing: tenants ↔ Stripe customers, plans ↔ Stripe prices, subscriptions, metered
//! usage, and inbound Stripe webhooks.
//!
//! Everything Stripe-specific is in this module. Requests go through `async-stripe`'s client
//! (authentication, form encoding, idempotency keys) with its typed request parameters;
//! responses are read into the few fields used here rather than the crate's full types, which
//! follow an older Stripe API version than the one Stripe (and stripe-mock) answers with.
//!
//! Inbound webhooks are checked against the endpoint's signing secret exactly as Stripe
//! documents it (HMAC-SHA256 of `"{t}.{body}"`, `v1` signatures, a timestamp tolerance), handled
//! in one transaction that first records the event id (a replay changes nothing), and applied
//! only when newer than what was applied before (out-of-order delivery is harmless).
//!
//! A failed invoice payment starts a grace period; when it ends, [`ControlPlane::enforce_grace`]
//! suspends the tenant (every app of it is then refused by the cells with `app_suspended`); a
//! paid invoice restores a tenant that billing suspended.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use starling_core::error::{ApiError, ErrorCode};
use starling_core::id::{PlanId, TenantId};
use stripe::RequestStrategy;
use utoipa::ToSchema;

use super::{ControlPlane, Error, Result, invalid, not_found};
use crate::entity::billing::{plan_price, tenant_billing};
use crate::entity::usage::hourly;
use crate::entity::{Status, tenant};

mod webhook;
pub use webhook::verify_signature;

/// Billing settings in force.
#[derive(Clone)]
pub struct Billing {
    client: stripe::Client,
    webhook_secret: Option<String>,
    tolerance: Duration,
    grace: Duration,
    meter_event_name: String,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Billing")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Billing {
    /// Billing against the Stripe API at `api_base` with `secret_key`.
    pub fn new(
        api_base: &str,
        secret_key: &str,
        webhook_secret: Option<String>,
        tolerance_secs: u64,
        grace_secs: u64,
        meter_event_name: &str,
    ) -> Self {
        let base = api_base.trim_end_matches('/');
        Self {
            client: stripe::Client::from_url(format!("{base}/v1/").as_str(), secret_key),
            webhook_secret,
            tolerance: Duration::seconds(tolerance_secs.min(i64::MAX as u64 / 2) as i64),
            grace: Duration::seconds(grace_secs.min(i64::MAX as u64 / 2) as i64),
            meter_event_name: meter_event_name.to_owned(),
        }
    }

    fn once(&self, key: String) -> stripe::Client {
        self.client
            .clone()
            .with_strategy(RequestStrategy::Idempotent(key))
    }
}

#[derive(Debug, Deserialize)]
struct Obj {
    id: String,
}

#[derive(Debug, Deserialize)]
struct List<T> {
    data: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct Item {
    id: String,
    price: Obj,
}

#[derive(Debug, Deserialize)]
struct Sub {
    id: String,
    status: String,
    items: List<Item>,
}

/// A billing meter event (`POST /v1/billing/meter_events`).
#[derive(Serialize)]
struct MeterEvent<'a> {
    event_name: &'a str,
    identifier: &'a str,
    timestamp: i64,
    payload: MeterPayload<'a>,
}

#[derive(Serialize)]
struct MeterPayload<'a> {
    stripe_customer_id: &'a str,
    value: String,
}

fn stripe_err(e: stripe::StripeError) -> Error {
    tracing::warn!(error = %e, "stripe request failed");
    Error::Api(ApiError::new(
        ErrorCode::Unavailable,
        format!("the Stripe request failed: {e}"),
    ))
}

/// The Stripe prices of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPriceIn {
    /// The recurring Stripe price of the plan (`price_…`).
    pub price_id: String,
    /// A metered Stripe price billed per message (`price_…`), reported through the billing meter.
    #[serde(default)]
    pub metered_price_id: Option<String>,
}

/// A plan's Stripe prices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanPriceOut {
    /// The plan.
    pub plan_id: PlanId,
    /// The recurring price.
    pub price_id: String,
    /// The metered price, if any.
    pub metered_price_id: Option<String>,
}

/// Which plan to subscribe a tenant to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionIn {
    /// The plan (it must have a Stripe price).
    pub plan_id: PlanId,
}

/// A tenant's billing state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BillingOut {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its plan.
    pub plan_id: PlanId,
    /// Its Stripe customer, once it has one.
    pub stripe_customer_id: Option<String>,
    /// Its Stripe subscription, if any.
    pub stripe_subscription_id: Option<String>,
    /// The subscription's status as Stripe last said (`active`, `past_due`, `canceled`…).
    pub subscription_status: Option<String>,
    /// When the unpaid invoice's payment failed.
    pub payment_failed_at: Option<DateTime<Utc>>,
    /// When the tenant's apps are suspended unless a payment arrives.
    pub grace_until: Option<DateTime<Utc>>,
    /// Whether billing suspended the tenant (a payment restores it).
    pub suspended_by_billing: bool,
}

/// What a webhook did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookOut {
    /// `applied`, `duplicate` (seen before), `stale` (older than what is applied), or
    /// `ignored` (a type or customer not handled here).
    pub status: String,
}

impl ControlPlane {
    /// Turns Stripe billing on.
    pub fn with_billing(mut self, billing: Billing) -> Self {
        self.billing = Some(std::sync::Arc::new(billing));
        self
    }

    fn billing(&self) -> Result<&Billing> {
        self.billing.as_deref().ok_or_else(|| {
            Error::Conflict(
                "billing is not configured (set billing.stripe_secret_key; see docs/BILLING.md)"
                    .into(),
            )
        })
    }

    /// Links a plan to its Stripe prices.
    pub async fn set_plan_price(&self, plan_id: &str, input: PlanPriceIn) -> Result<PlanPriceOut> {
        self.plan_model(plan_id).await?;
        let check = |field: &str, v: &str| {
            if v.starts_with("price_") && v.len() <= 255 && !v.contains(char::is_whitespace) {
                Ok(())
            } else {
                Err(invalid(field, "must be a Stripe price id (price_…)"))
            }
        };
        check("price_id", &input.price_id)?;
        if let Some(m) = &input.metered_price_id {
            check("metered_price_id", m)?;
        }
        let am = plan_price::ActiveModel {
            plan_id: Set(plan_id.to_owned()),
            stripe_price_id: Set(input.price_id.clone()),
            stripe_metered_price_id: Set(input.metered_price_id.clone()),
            updated_at: Set(super::now()),
        };
        plan_price::Entity::insert(am)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(plan_price::Column::PlanId)
                    .update_columns([
                        plan_price::Column::StripePriceId,
                        plan_price::Column::StripeMeteredPriceId,
                        plan_price::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(PlanPriceOut {
            plan_id: PlanId::from_trusted(plan_id.to_owned()),
            price_id: input.price_id,
            metered_price_id: input.metered_price_id,
        })
    }

    async fn billing_row(&self, tenant: &TenantId) -> Result<Option<tenant_billing::Model>> {
        Ok(tenant_billing::Entity::find_by_id(tenant.to_string())
            .one(&self.db)
            .await?)
    }

    /// A tenant's billing state.
    pub async fn get_billing(&self, tenant: &TenantId) -> Result<BillingOut> {
        let t = self.tenant_model(tenant).await?;
        let b = self.billing_row(tenant).await?;
        Ok(BillingOut {
            tenant_id: tenant.clone(),
            plan_id: PlanId::from_trusted(t.plan_id),
            stripe_customer_id: b.as_ref().map(|b| b.stripe_customer_id.clone()),
            stripe_subscription_id: b.as_ref().and_then(|b| b.stripe_subscription_id.clone()),
            subscription_status: b.as_ref().and_then(|b| b.subscription_status.clone()),
            payment_failed_at: b.as_ref().and_then(|b| b.payment_failed_at),
            grace_until: b.as_ref().and_then(|b| b.grace_until),
            suspended_by_billing: b.as_ref().is_some_and(|b| b.suspended_by_billing),
        })
    }

    /// The tenant's Stripe customer, created on first use (idempotently: a retry after a lost
    /// answer gets the same customer).
    async fn ensure_customer(&self, t: &tenant::Model) -> Result<tenant_billing::Model> {
        let tid = TenantId::from_trusted(t.id.clone());
        if let Some(b) = self.billing_row(&tid).await? {
            return Ok(b);
        }
        let billing = self.billing()?;
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("tenant_id".to_owned(), t.id.clone());
        let params = stripe::CreateCustomer {
            name: Some(&t.name),
            metadata: Some(metadata),
            ..Default::default()
        };
        let c: Obj = billing
            .once(format!("starling-customer-{}", t.id))
            .post_form("/customers", params)
            .await
            .map_err(stripe_err)?;
        let am = tenant_billing::ActiveModel {
            tenant_id: Set(t.id.clone()),
            stripe_customer_id: Set(c.id),
            stripe_subscription_id: Set(None),
            subscription_status: Set(None),
            subscription_item_id: Set(None),
            metered_item_id: Set(None),
            subscription_event_at: Set(None),
            invoice_event_at: Set(None),
            payment_failed_at: Set(None),
            grace_until: Set(None),
            usage_reported_until: Set(None),
            suspended_by_billing: Set(false),
            updated_at: Set(super::now()),
        };
        tenant_billing::Entity::insert(am)
            .on_conflict_do_nothing()
            .exec_without_returning(&self.db)
            .await?;
        self.billing_row(&tid)
            .await?
            .ok_or_else(|| Error::Conflict("the tenant's billing record vanished".into()))
    }

    async fn plan_prices(&self, plan_id: &str) -> Result<plan_price::Model> {
        self.plan_model(plan_id)
            .await
            .map_err(|_| invalid("plan_id", format!("plan {plan_id} not found")))?;
        plan_price::Entity::find_by_id(plan_id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| {
                invalid(
                    "plan_id",
                    format!(
                        "plan {plan_id} has no Stripe price; set one with PUT /admin/v1/plans/{plan_id}/price"
                    ),
                )
            })
    }

    async fn store_subscription(
        &self,
        tenant: &TenantId,
        sub: &Sub,
        prices: &plan_price::Model,
    ) -> Result<()> {
        let b = self
            .billing_row(tenant)
            .await?
            .ok_or_else(|| not_found("billing of tenant", tenant))?;
        let base = sub
            .items
            .data
            .iter()
            .find(|i| i.price.id == prices.stripe_price_id)
            .or(sub.items.data.first());
        let metered = prices.stripe_metered_price_id.as_ref().and_then(|m| {
            sub.items
                .data
                .iter()
                .find(|i| &i.price.id == m && Some(i.id.as_str()) != base.map(|b| b.id.as_str()))
        });
        let mut am: tenant_billing::ActiveModel = b.into();
        am.stripe_subscription_id = Set(Some(sub.id.clone()));
        am.subscription_status = Set(Some(sub.status.clone()));
        am.subscription_item_id = Set(base.map(|i| i.id.clone()));
        am.metered_item_id = Set(metered.map(|i| i.id.clone()));
        am.updated_at = Set(super::now());
        am.update(&self.db).await?;
        Ok(())
    }

    async fn set_tenant_plan(&self, tenant: &TenantId, plan_id: &str) -> Result<()> {
        let t = self.tenant_model(tenant).await?;
        if t.plan_id != plan_id {
            let mut am: tenant::ActiveModel = t.into();
            am.plan_id = Set(plan_id.to_owned());
            am.updated_at = Set(super::now());
            am.update(&self.db).await?;
            self.publish_tenant(tenant.as_str()).await;
        }
        Ok(())
    }

    /// Subscribes a tenant to a plan in Stripe (creating its customer on first use) and puts
    /// the tenant on the plan.
    pub async fn create_subscription(
        &self,
        tenant: &TenantId,
        input: SubscriptionIn,
    ) -> Result<BillingOut> {
        let billing = self.billing()?.clone();
        let t = self.tenant_model(tenant).await?;
        let prices = self.plan_prices(input.plan_id.as_str()).await?;
        let b = self.ensure_customer(&t).await?;
        if b.stripe_subscription_id.is_some()
            && b.subscription_status.as_deref() != Some("canceled")
        {
            return Err(Error::Conflict(format!(
                "tenant {tenant} already has a subscription; change it with PATCH or cancel it first"
            )));
        }
        let customer: stripe::CustomerId = b
            .stripe_customer_id
            .parse()
            .map_err(|_| Error::Conflict("the stored Stripe customer id is malformed".into()))?;
        let mut params = stripe::CreateSubscription::new(customer);
        let mut items = vec![stripe::CreateSubscriptionItems {
            price: Some(prices.stripe_price_id.clone()),
            ..Default::default()
        }];
        if let Some(m) = &prices.stripe_metered_price_id {
            items.push(stripe::CreateSubscriptionItems {
                price: Some(m.clone()),
                ..Default::default()
            });
        }
        params.items = Some(items);
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("tenant_id".to_owned(), t.id.clone());
        params.metadata = Some(metadata);
        // One key per attempt of this change: a network retry inside the client reuses it.
        let sub: Sub = billing
            .once(format!("starling-subscribe-{}-{}", t.id, ulid::Ulid::new()))
            .post_form("/subscriptions", params)
            .await
            .map_err(stripe_err)?;
        self.store_subscription(tenant, &sub, &prices).await?;
        self.set_tenant_plan(tenant, input.plan_id.as_str()).await?;
        self.get_billing(tenant).await
    }

    /// Moves a tenant's subscription to another plan's prices.
    pub async fn change_subscription(
        &self,
        tenant: &TenantId,
        input: SubscriptionIn,
    ) -> Result<BillingOut> {
        let billing = self.billing()?.clone();
        self.tenant_model(tenant).await?;
        let prices = self.plan_prices(input.plan_id.as_str()).await?;
        let b = self
            .billing_row(tenant)
            .await?
            .filter(|b| {
                b.stripe_subscription_id.is_some()
                    && b.subscription_status.as_deref() != Some("canceled")
            })
            .ok_or_else(|| {
                Error::Conflict(format!("tenant {tenant} has no subscription; create one"))
            })?;
        let sub_id = b.stripe_subscription_id.clone().unwrap_or_default();
        let mut items = vec![stripe::UpdateSubscriptionItems {
            id: b.subscription_item_id.clone(),
            price: Some(prices.stripe_price_id.clone()),
            ..Default::default()
        }];
        match (&b.metered_item_id, &prices.stripe_metered_price_id) {
            (Some(item), Some(price)) => items.push(stripe::UpdateSubscriptionItems {
                id: Some(item.clone()),
                price: Some(price.clone()),
                ..Default::default()
            }),
            (Some(item), None) => items.push(stripe::UpdateSubscriptionItems {
                id: Some(item.clone()),
                deleted: Some(true),
                ..Default::default()
            }),
            (None, Some(price)) => items.push(stripe::UpdateSubscriptionItems {
                price: Some(price.clone()),
                ..Default::default()
            }),
            (None, None) => {}
        }
        let params = stripe::UpdateSubscription {
            items: Some(items),
            ..Default::default()
        };
        let sub: Sub = billing
            .once(format!("starling-change-{}-{}", tenant, ulid::Ulid::new()))
            .post_form(&format!("/subscriptions/{sub_id}"), params)
            .await
            .map_err(stripe_err)?;
        self.store_subscription(tenant, &sub, &prices).await?;
        self.set_tenant_plan(tenant, input.plan_id.as_str()).await?;
        self.get_billing(tenant).await
    }

    /// Cancels a tenant's subscription at once; the tenant goes back to the default plan.
    pub async fn cancel_subscription(&self, tenant: &TenantId) -> Result<BillingOut> {
        let billing = self.billing()?.clone();
        self.tenant_model(tenant).await?;
        let b = self
            .billing_row(tenant)
            .await?
            .filter(|b| {
                b.stripe_subscription_id.is_some()
                    && b.subscription_status.as_deref() != Some("canceled")
            })
            .ok_or_else(|| Error::Conflict(format!("tenant {tenant} has no subscription")))?;
        let sub_id = b.stripe_subscription_id.clone().unwrap_or_default();
        let _: Obj = billing
            .once(format!("starling-cancel-{sub_id}"))
            .delete(&format!("/subscriptions/{sub_id}"))
            .await
            .map_err(stripe_err)?;
        let mut am: tenant_billing::ActiveModel = b.into();
        am.subscription_status = Set(Some("canceled".into()));
        am.updated_at = Set(super::now());
        am.update(&self.db).await?;
        if let Some(p) = self.default_plan().await? {
            self.set_tenant_plan(tenant, &p.id).await?;
        }
        self.get_billing(tenant).await
    }

    /// Suspends every tenant whose grace period after a failed payment is over. Returns how
    /// many were suspended.
    pub async fn enforce_grace(&self) -> Result<usize> {
        let now = self.clock.now();
        let due = tenant_billing::Entity::find()
            .filter(tenant_billing::Column::GraceUntil.lte(now))
            .filter(tenant_billing::Column::SuspendedByBilling.eq(false))
            .all(&self.db)
            .await?;
        let mut n = 0;
        for b in due {
            let txn = starling_core::db::begin_write(&self.db).await?;
            let Some(t) = tenant::Entity::find_by_id(b.tenant_id.clone())
                .one(&txn)
                .await?
            else {
                continue;
            };
            let mut bm: tenant_billing::ActiveModel = b.clone().into();
            // A tenant the operator suspended already stays the operator's to restore.
            bm.suspended_by_billing = Set(t.status == Status::Active);
            bm.grace_until = Set(None);
            bm.updated_at = Set(super::now());
            bm.update(&txn).await?;
            if t.status == Status::Active {
                let mut am: tenant::ActiveModel = t.into();
                am.status = Set(Status::Suspended);
                am.updated_at = Set(super::now());
                am.update(&txn).await?;
                n += 1;
            }
            txn.commit().await?;
            tracing::warn!(tenant_id = %b.tenant_id, "payment grace period over; tenant suspended");
            self.publish_tenant(&b.tenant_id).await;
        }
        Ok(n)
    }

    /// Reports metered usage (messages per hour) of subscribed tenants to Stripe's billing
    /// meter, for hours that ended more than `settle` ago. Each hour is one meter event whose
    /// identifier (and idempotency key) is derived from the tenant and the hour, so a retry
    /// after a lost answer or a crash is counted once by Stripe. Returns events sent.
    pub async fn report_metered_usage(&self, settle: Duration) -> Result<usize> {
        let billing = self.billing()?.clone();
        let now = self.clock.now();
        let until = starling_core::clock::hour_start(now - settle);
        let rows = tenant_billing::Entity::find()
            .filter(tenant_billing::Column::StripeSubscriptionId.is_not_null())
            .all(&self.db)
            .await?;
        let mut sent = 0;
        for b in rows {
            if b.subscription_status.as_deref() == Some("canceled") {
                continue;
            }
            // Only tenants whose plan has a metered price are billed per message.
            let Some(t) = tenant::Entity::find_by_id(b.tenant_id.clone())
                .one(&self.db)
                .await?
            else {
                continue;
            };
            let metered = plan_price::Entity::find_by_id(t.plan_id)
                .one(&self.db)
                .await?
                .is_some_and(|p| p.stripe_metered_price_id.is_some());
            if !metered {
                continue;
            }
            let from = b
                .usage_reported_until
                .unwrap_or_else(|| starling_core::clock::month_start(now));
            if from >= until {
                continue;
            }
            let hours = hourly::Entity::find()
                .filter(hourly::Column::TenantId.eq(b.tenant_id.as_str()))
                .filter(hourly::Column::Hour.gte(from))
                .filter(hourly::Column::Hour.lt(until))
                .all(&self.db)
                .await?;
            let mut per_hour: std::collections::BTreeMap<DateTime<Utc>, i64> = Default::default();
            for h in hours {
                *per_hour.entry(h.hour).or_default() += h.messages;
            }
            for (hour, messages) in per_hour.into_iter().filter(|(_, m)| *m > 0) {
                let identifier = format!("starling-{}-{}", b.tenant_id, hour.timestamp());
                let form = MeterEvent {
                    event_name: &billing.meter_event_name,
                    identifier: &identifier,
                    timestamp: hour.timestamp(),
                    payload: MeterPayload {
                        stripe_customer_id: &b.stripe_customer_id,
                        value: messages.to_string(),
                    },
                };
                let _: serde_json::Value = billing
                    .once(identifier.clone())
                    .post_form("/billing/meter_events", form)
                    .await
                    .map_err(stripe_err)?;
                sent += 1;
            }
            let mut am: tenant_billing::ActiveModel = b.into();
            am.usage_reported_until = Set(Some(until));
            am.update(&self.db).await?;
        }
        Ok(sent)
    }

    /// Runs the billing chores every `every`: grace enforcement, then metered usage.
    pub fn spawn_billing(&self, every: std::time::Duration) {
        if self.billing.is_none() {
            return;
        }
        let cp = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = cp.enforce_grace().await {
                    tracing::warn!(error = %e, "billing grace enforcement failed");
                }
                // Hours are reported once they ended and late reports of cells had time to
                // arrive.
                if let Err(e) = cp.report_metered_usage(Duration::minutes(10)).await {
                    tracing::warn!(error = %e, "reporting metered usage failed");
                }
            }
        });
    }
}
