//! Apps within a tenant: their environment, status, placement and quota overrides.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use starling_core::http::{Page, PageParams};
use starling_core::id::{AppId, ClusterId, PlanId, TenantId};
use utoipa::ToSchema;

use super::plan::Limits;
use super::{ControlPlane, Error, Result, check_code, check_name, not_found, paginate};
use crate::entity::{Environment, Status, api_key, app};
use crate::store::scoped;

/// A new app.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppIn {
    /// Display name, unique within the tenant.
    #[schema(example = "Acme Chat")]
    pub name: String,
    /// Default `development`.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// Place the app on this cluster; otherwise Starling picks one.
    pub cluster_id: Option<ClusterId>,
    /// When Starling picks the cluster: pick one in this region.
    #[schema(example = "eu-west-1")]
    pub region: Option<String>,
    /// Limits that replace the plan's for this app.
    #[serde(default)]
    pub quota_overrides: Limits,
}

/// Changes to an app; omitted fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    /// New display name.
    pub name: Option<String>,
    /// New environment.
    pub environment: Option<Environment>,
    /// `suspended` makes the data plane refuse the app's traffic with `app_suspended`.
    pub status: Option<Status>,
}

/// An app.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppOut {
    /// Id.
    pub id: AppId,
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// Display name.
    pub name: String,
    /// Environment.
    pub environment: Environment,
    /// Status.
    pub status: Status,
    /// The data-plane cluster the app lives on.
    pub cluster_id: ClusterId,
    /// When it was created.
    pub created_at: chrono::DateTime<Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<app::Model> for AppOut {
    fn from(m: app::Model) -> Self {
        AppOut {
            id: AppId::from_trusted(m.id),
            tenant_id: TenantId::from_trusted(m.tenant_id),
            name: m.name,
            environment: m.environment,
            status: m.status,
            cluster_id: ClusterId::from_trusted(m.cluster_id),
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// An app's limits: its plan's, its overrides, and what is in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotasOut {
    /// The tenant's plan.
    pub plan_id: PlanId,
    /// The plan's machine name.
    pub plan_code: String,
    /// The plan's limits.
    pub plan_limits: Limits,
    /// This app's overrides.
    pub overrides: Limits,
    /// The limits in force: overrides over the plan. Absent means unlimited.
    pub effective: Limits,
}

/// Changes to an app's quota overrides: a number sets an override, `null` removes it (the plan's
/// limit applies again), an omitted field stays as it is.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverridesPatch {
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<u64>)]
    /// Override of `monthly_active_users`.
    pub monthly_active_users: Option<Option<u64>>,
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<u64>)]
    /// Override of `messages_per_month`.
    pub messages_per_month: Option<Option<u64>>,
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<u64>)]
    /// Override of `concurrent_connections`.
    pub concurrent_connections: Option<Option<u64>>,
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<u64>)]
    /// Override of `api_requests_per_second`.
    pub api_requests_per_second: Option<Option<u64>>,
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<u64>)]
    /// Override of `max_group_members`.
    pub max_group_members: Option<Option<u64>>,
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<u64>)]
    /// Override of `max_message_bytes`.
    pub max_message_bytes: Option<Option<u64>>,
}

impl QuotaOverridesPatch {
    fn apply(self, mut l: Limits) -> Limits {
        fn set(slot: &mut Option<u64>, v: Option<Option<u64>>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        set(&mut l.monthly_active_users, self.monthly_active_users);
        set(&mut l.messages_per_month, self.messages_per_month);
        set(&mut l.concurrent_connections, self.concurrent_connections);
        set(&mut l.api_requests_per_second, self.api_requests_per_second);
        set(&mut l.max_group_members, self.max_group_members);
        set(&mut l.max_message_bytes, self.max_message_bytes);
        l
    }
}

/// Where to move an app.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementIn {
    /// The target cluster; it must be active and have free capacity.
    pub cluster_id: ClusterId,
}

impl ControlPlane {
    /// Creates an app in a tenant and places it on a cluster.
    pub async fn create_app(&self, tenant: &TenantId, input: AppIn) -> Result<AppOut> {
        self.tenant_model(tenant).await?;
        let name = check_name("name", &input.name)?;
        let region = input
            .region
            .as_deref()
            .map(|r| check_code("region", r))
            .transpose()?;
        super::plan::validate_limits(&input.quota_overrides, "quota_overrides")?;
        if scoped::<app::Entity>(tenant)
            .filter(app::Column::Name.eq(&name))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(Error::Conflict(format!(
                "tenant {tenant} already has an app named {name:?}"
            )));
        }
        let cluster = self
            .place(
                input.cluster_id.as_ref().map(ClusterId::as_str),
                region.as_deref(),
            )
            .await?;
        let now = super::now();
        let m = app::ActiveModel {
            tenant_id: Set(tenant.as_str().to_owned()),
            id: Set(AppId::generate().into_string()),
            name: Set(name),
            environment: Set(input.environment.unwrap_or(Environment::Development)),
            status: Set(Status::Active),
            cluster_id: Set(cluster.id),
            quota_overrides: Set(input.quota_overrides.to_json()),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let txn = starling_core::db::begin_write(&self.db).await?;
        let m = m.insert(&txn).await?;
        super::token_secret::insert_secret(&txn, &self.sealer, &m.tenant_id, &m.id).await?;
        txn.commit().await?;
        self.publish_app(&m.tenant_id, &m.id).await;
        Ok(m.into())
    }

    /// Lists a tenant's apps, oldest first.
    pub async fn list_apps(&self, tenant: &TenantId, page: &PageParams) -> Result<Page<AppOut>> {
        self.tenant_model(tenant).await?;
        paginate(
            &self.db,
            scoped::<app::Entity>(tenant),
            app::Column::Id,
            page,
            AppOut::from,
            |a| a.id.as_str(),
        )
        .await
    }

    pub(crate) async fn app_model(&self, tenant: &TenantId, id: &AppId) -> Result<app::Model> {
        scoped::<app::Entity>(tenant)
            .filter(app::Column::Id.eq(id.as_str()))
            .one(&self.db)
            .await?
            .ok_or_else(|| not_found("app", id))
    }

    /// One app of a tenant.
    pub async fn get_app(&self, tenant: &TenantId, id: &AppId) -> Result<AppOut> {
        Ok(self.app_model(tenant, id).await?.into())
    }

    /// Changes an app.
    pub async fn update_app(
        &self,
        tenant: &TenantId,
        id: &AppId,
        patch: AppPatch,
    ) -> Result<AppOut> {
        let current = self.app_model(tenant, id).await?;
        let mut m: app::ActiveModel = current.clone().into();
        if let Some(name) = patch.name {
            let name = check_name("name", &name)?;
            if name != current.name
                && scoped::<app::Entity>(tenant)
                    .filter(app::Column::Name.eq(&name))
                    .one(&self.db)
                    .await?
                    .is_some()
            {
                return Err(Error::Conflict(format!(
                    "tenant {tenant} already has an app named {name:?}"
                )));
            }
            m.name = Set(name);
        }
        if let Some(e) = patch.environment {
            m.environment = Set(e);
        }
        if let Some(s) = patch.status {
            m.status = Set(s);
        }
        m.updated_at = Set(super::now());
        let m = m.update(&self.db).await?;
        self.publish_app(&m.tenant_id, &m.id).await;
        Ok(m.into())
    }

    /// Deletes an app and its API keys.
    pub async fn delete_app(&self, tenant: &TenantId, id: &AppId) -> Result<()> {
        let old = self.app_model(tenant, id).await?;
        let txn = starling_core::db::begin_write(&self.db).await?;
        api_key::Entity::delete_many()
            .filter(api_key::Column::TenantId.eq(tenant.as_str()))
            .filter(api_key::Column::AppId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        app::Entity::delete_many()
            .filter(app::Column::TenantId.eq(tenant.as_str()))
            .filter(app::Column::Id.eq(id.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.publish_removal(&old.cluster_id, id.as_str()).await;
        Ok(())
    }

    /// The app's limits.
    pub async fn get_quotas(&self, tenant: &TenantId, id: &AppId) -> Result<QuotasOut> {
        let a = self.app_model(tenant, id).await?;
        let t = self.tenant_model(tenant).await?;
        let p = self.plan_model(&t.plan_id).await?;
        let plan_limits = Limits::from_json(&p.limits);
        let overrides = Limits::from_json(&a.quota_overrides);
        Ok(QuotasOut {
            plan_id: PlanId::from_trusted(p.id),
            plan_code: p.code,
            effective: plan_limits.with_overrides(&overrides),
            plan_limits,
            overrides,
        })
    }

    /// Changes the app's quota overrides.
    pub async fn update_quotas(
        &self,
        tenant: &TenantId,
        id: &AppId,
        patch: QuotaOverridesPatch,
    ) -> Result<QuotasOut> {
        let a = self.app_model(tenant, id).await?;
        let next = patch.apply(Limits::from_json(&a.quota_overrides));
        super::plan::validate_limits(&next, "")?;
        let mut m: app::ActiveModel = a.into();
        m.quota_overrides = Set(next.to_json());
        m.updated_at = Set(super::now());
        m.update(&self.db).await?;
        self.publish_app(tenant.as_str(), id.as_str()).await;
        self.get_quotas(tenant, id).await
    }

    /// Moves an app to another cluster. (Its data moves with the data plane's migration tooling;
    /// here the control plane records where it now lives.)
    pub async fn place_app(
        &self,
        tenant: &TenantId,
        id: &AppId,
        input: PlacementIn,
    ) -> Result<AppOut> {
        let a = self.app_model(tenant, id).await?;
        if a.cluster_id == input.cluster_id.as_str() {
            return Ok(a.into());
        }
        let c = self.place(Some(input.cluster_id.as_str()), None).await?;
        let old_cluster = a.cluster_id.clone();
        let mut m: app::ActiveModel = a.into();
        m.cluster_id = Set(c.id);
        m.updated_at = Set(super::now());
        let out = m.update(&self.db).await?;
        // The old cell forgets the app (its keys and secrets) before the new one learns it.
        self.publish_removal(&old_cluster, id.as_str()).await;
        self.publish_app(tenant.as_str(), id.as_str()).await;
        Ok(out.into())
    }
}
