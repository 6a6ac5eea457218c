//! Plans and their limits.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};

use starling_core::http::{Page, PageParams};
use starling_core::id::PlanId;
use utoipa::ToSchema;

use super::{ControlPlane, Result, check_code, check_name, invalid, not_found, paginate};
use crate::entity::{plan, tenant};

pub use starling_core::limits::Limits;

/// Checks every set limit; `prefix` is the JSON path of the limits object.
pub fn validate_limits(limits: &Limits, prefix: &str) -> Result<()> {
    let path = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    for (name, v) in limits.fields() {
        if v == Some(0) {
            return Err(invalid(
                &path(name),
                "must be at least 1 (omit it for unlimited)",
            ));
        }
        if v.is_some_and(|v| v > i64::MAX as u64) {
            return Err(invalid(&path(name), "is too large"));
        }
    }
    if limits
        .max_message_bytes
        .is_some_and(|b| b > 16 * 1024 * 1024)
    {
        return Err(invalid(
            &path("max_message_bytes"),
            "must be at most 16777216 (16 MiB)",
        ));
    }
    Ok(())
}

/// A new plan.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanIn {
    /// Stable machine name, unique (e.g. `pro`); later mapped to a Stripe price.
    #[schema(example = "pro")]
    pub code: String,
    /// Display name.
    #[schema(example = "Pro")]
    pub name: String,
    /// The limits; omitted ones are unlimited.
    #[serde(default)]
    pub limits: Limits,
    /// Make this the plan new tenants get when they name none.
    #[serde(default)]
    pub is_default: bool,
    /// Limits that only warn (counted, threshold events raised, never refused):
    /// `messages_per_month`, `monthly_active_users`. The others are hard.
    #[serde(default)]
    pub soft_limits: Vec<String>,
}

/// Changes to a plan; omitted fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    /// New display name.
    pub name: Option<String>,
    /// The new limits, replacing all the old ones.
    pub limits: Option<Limits>,
    /// `true` makes this the default plan (the old default stops being one).
    pub is_default: Option<bool>,
    /// The new soft limits, replacing the old ones.
    pub soft_limits: Option<Vec<String>>,
}

/// A plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanOut {
    /// Id.
    pub id: PlanId,
    /// Machine name.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Whether new tenants get this plan when they name none.
    pub is_default: bool,
    /// The limits; absent ones are unlimited.
    pub limits: Limits,
    /// Limits that only warn; the others are hard (refused with `quota_exceeded`).
    pub soft_limits: Vec<String>,
    /// When it was created.
    pub created_at: chrono::DateTime<Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<plan::Model> for PlanOut {
    fn from(m: plan::Model) -> Self {
        let soft_limits = soft_limits_of(&m);
        PlanOut {
            id: PlanId::from_trusted(m.id),
            code: m.code,
            name: m.name,
            is_default: m.is_default,
            limits: Limits::from_json(&m.limits),
            soft_limits,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

impl ControlPlane {
    /// Creates a plan.
    pub async fn create_plan(&self, input: PlanIn) -> Result<PlanOut> {
        let code = check_code("code", &input.code)?;
        let name = check_name("name", &input.name)?;
        validate_limits(&input.limits, "limits")?;
        let soft = check_soft_limits(&input.soft_limits)?;
        if plan::Entity::find()
            .filter(plan::Column::Code.eq(&code))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(super::Error::Conflict(format!(
                "a plan with code {code:?} already exists"
            )));
        }
        let now = super::now();
        let txn = starling_core::db::begin_write(&self.db).await?;
        if input.is_default {
            clear_default(&txn).await?;
        }
        let m = plan::ActiveModel {
            id: Set(PlanId::generate().into_string()),
            code: Set(code),
            name: Set(name),
            is_default: Set(input.is_default),
            limits: Set(input.limits.to_json()),
            soft_limits: Set(soft),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(m.into())
    }

    /// Lists plans, oldest first.
    pub async fn list_plans(&self, page: &PageParams) -> Result<Page<PlanOut>> {
        paginate(
            &self.db,
            plan::Entity::find(),
            plan::Column::Id,
            page,
            PlanOut::from,
            |p| p.id.as_str(),
        )
        .await
    }

    pub(crate) async fn plan_model(&self, id: &str) -> Result<plan::Model> {
        plan::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| not_found("plan", id))
    }

    /// One plan.
    pub async fn get_plan(&self, id: &str) -> Result<PlanOut> {
        Ok(self.plan_model(id).await?.into())
    }

    /// Changes a plan.
    pub async fn update_plan(&self, id: &str, patch: PlanPatch) -> Result<PlanOut> {
        let current = self.plan_model(id).await?;
        let txn = starling_core::db::begin_write(&self.db).await?;
        let mut m: plan::ActiveModel = current.clone().into();
        if let Some(name) = patch.name {
            m.name = Set(check_name("name", &name)?);
        }
        if let Some(limits) = patch.limits {
            validate_limits(&limits, "limits")?;
            m.limits = Set(limits.to_json());
        }
        if let Some(soft) = &patch.soft_limits {
            m.soft_limits = Set(check_soft_limits(soft)?);
        }
        match patch.is_default {
            Some(true) if !current.is_default => {
                clear_default(&txn).await?;
                m.is_default = Set(true);
            }
            Some(false) if current.is_default => {
                return Err(invalid(
                    "is_default",
                    "cannot unset the default plan; make another plan the default instead",
                ));
            }
            _ => {}
        }
        m.updated_at = Set(super::now());
        let m = m.update(&txn).await?;
        txn.commit().await?;
        self.publish_plan(&m.id).await;
        Ok(m.into())
    }

    /// Deletes a plan that no tenant uses and that is not the default.
    pub async fn delete_plan(&self, id: &str) -> Result<()> {
        let current = self.plan_model(id).await?;
        if current.is_default {
            return Err(super::Error::Conflict(format!(
                "plan {id} is the default plan; make another plan the default first"
            )));
        }
        let users = tenant::Entity::find()
            .filter(tenant::Column::PlanId.eq(id))
            .count(&self.db)
            .await?;
        if users > 0 {
            return Err(super::Error::Conflict(format!(
                "plan {id} is used by {users} tenant(s)"
            )));
        }
        plan::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The default plan, if one is set.
    pub async fn default_plan(&self) -> Result<Option<plan::Model>> {
        Ok(plan::Entity::find()
            .filter(plan::Column::IsDefault.eq(true))
            .one(&self.db)
            .await?)
    }

    /// Creates the `free` default plan when there are no plans at all (first start).
    pub async fn ensure_default_plan(&self) -> Result<()> {
        if plan::Entity::find().count(&self.db).await? > 0 {
            return Ok(());
        }
        self.create_plan(PlanIn {
            code: "free".into(),
            name: "Free".into(),
            is_default: true,
            limits: Limits {
                monthly_active_users: Some(1_000),
                messages_per_month: Some(100_000),
                concurrent_connections: Some(100),
                api_requests_per_second: Some(10),
                max_group_members: Some(100),
                max_message_bytes: Some(16 * 1024),
            },
            soft_limits: vec![],
        })
        .await?;
        Ok(())
    }
}

/// Limits a plan may mark soft.
pub const SOFTENABLE_LIMITS: [&str; 2] = ["messages_per_month", "monthly_active_users"];

fn check_soft_limits(names: &[String]) -> Result<serde_json::Value> {
    for (i, n) in names.iter().enumerate() {
        if !SOFTENABLE_LIMITS.contains(&n.as_str()) {
            return Err(invalid(
                &format!("soft_limits[{i}]"),
                format!("{n:?} is not a limit that can be soft; use one of {SOFTENABLE_LIMITS:?}"),
            ));
        }
    }
    let mut v = names.to_vec();
    v.sort();
    v.dedup();
    Ok(serde_json::json!(v))
}

/// The soft limits of a plan row.
pub(crate) fn soft_limits_of(m: &plan::Model) -> Vec<String> {
    serde_json::from_value(m.soft_limits.clone()).unwrap_or_default()
}

async fn clear_default(txn: &sea_orm::DatabaseTransaction) -> Result<()> {
    use sea_orm::sea_query::Expr;
    plan::Entity::update_many()
        .col_expr(plan::Column::IsDefault, Expr::value(false))
        .filter(plan::Column::IsDefault.eq(true))
        .exec(txn)
        .await?;
    Ok(())
}
