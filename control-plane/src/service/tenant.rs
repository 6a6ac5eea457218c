//! Tenants: the platform's customers.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use starling_core::http::{Page, PageParams};
use starling_core::id::{PlanId, TenantId};
use utoipa::ToSchema;

use super::{ControlPlane, Error, Result, check_name, invalid, not_found, paginate};
use crate::entity::{Status, app, tenant};

/// A new tenant.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantIn {
    /// Display name, 1..=128 characters.
    #[schema(example = "Acme Inc.")]
    pub name: String,
    /// The plan; the default plan when omitted.
    pub plan_id: Option<PlanId>,
}

/// Changes to a tenant; omitted fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// New display name.
    pub name: Option<String>,
    /// `suspended` stops all the tenant's apps; `active` resumes them.
    pub status: Option<Status>,
    /// Move to another plan.
    pub plan_id: Option<PlanId>,
}

/// A tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantOut {
    /// Id.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: Status,
    /// The tenant's plan.
    pub plan_id: PlanId,
    /// When it was created.
    pub created_at: chrono::DateTime<Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<tenant::Model> for TenantOut {
    fn from(m: tenant::Model) -> Self {
        TenantOut {
            id: TenantId::from_trusted(m.id),
            name: m.name,
            status: m.status,
            plan_id: PlanId::from_trusted(m.plan_id),
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// Filters for listing tenants.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantFilter {
    /// Only tenants with this status.
    pub status: Option<Status>,
}

impl ControlPlane {
    /// Creates a tenant on the given or the default plan.
    pub async fn create_tenant(&self, input: TenantIn) -> Result<TenantOut> {
        let name = check_name("name", &input.name)?;
        let plan_id = match input.plan_id {
            Some(p) => {
                self.plan_model(p.as_str())
                    .await
                    .map_err(|_| invalid("plan_id", format!("plan {p} does not exist")))?
                    .id
            }
            None => {
                self.default_plan()
                    .await?
                    .ok_or_else(|| invalid("plan_id", "no default plan is set; name a plan"))?
                    .id
            }
        };
        let now = super::now();
        let m = tenant::ActiveModel {
            id: Set(TenantId::generate().into_string()),
            name: Set(name),
            status: Set(Status::Active),
            plan_id: Set(plan_id),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&self.db)
        .await?;
        Ok(m.into())
    }

    /// Lists tenants, oldest first.
    pub async fn list_tenants(
        &self,
        filter: &TenantFilter,
        page: &PageParams,
    ) -> Result<Page<TenantOut>> {
        let mut q = tenant::Entity::find();
        if let Some(s) = filter.status {
            q = q.filter(tenant::Column::Status.eq(s));
        }
        paginate(
            &self.db,
            q,
            tenant::Column::Id,
            page,
            TenantOut::from,
            |t| t.id.as_str(),
        )
        .await
    }

    pub(crate) async fn tenant_model(&self, id: &TenantId) -> Result<tenant::Model> {
        tenant::Entity::find_by_id(id.as_str().to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| not_found("tenant", id))
    }

    /// One tenant.
    pub async fn get_tenant(&self, id: &TenantId) -> Result<TenantOut> {
        Ok(self.tenant_model(id).await?.into())
    }

    /// Changes a tenant.
    pub async fn update_tenant(&self, id: &TenantId, patch: TenantPatch) -> Result<TenantOut> {
        let mut m: tenant::ActiveModel = self.tenant_model(id).await?.into();
        if let Some(name) = patch.name {
            m.name = Set(check_name("name", &name)?);
        }
        if let Some(s) = patch.status {
            m.status = Set(s);
        }
        if let Some(p) = patch.plan_id {
            self.plan_model(p.as_str())
                .await
                .map_err(|_| invalid("plan_id", format!("plan {p} does not exist")))?;
            m.plan_id = Set(p.into_string());
        }
        m.updated_at = Set(super::now());
        let m = m.update(&self.db).await?;
        self.publish_tenant(&m.id).await;
        Ok(m.into())
    }

    /// Deletes a tenant that has no apps left.
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<()> {
        self.tenant_model(id).await?;
        let apps = crate::store::scoped::<app::Entity>(id)
            .count(&self.db)
            .await?;
        if apps > 0 {
            return Err(Error::Conflict(format!(
                "tenant {id} still has {apps} app(s); delete them first"
            )));
        }
        tenant::Entity::delete_many()
            .filter(tenant::Column::Id.eq(id.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
