//! Cells' credentials for the control plane's internal routes (`scc_<id>.<secret>`), and the
//! rule that a cell acts only on apps placed on it.
//!
//! The operator issues a credential per cluster; the secret is shown once and stored as a
//! SHA-256 (`starling_core::internal_auth::hash_cell_secret`: it is 256 random bits, so an
//! unkeyed hash is as good as a keyed one and ties it to no other secret). Several may be
//! active at once: issue a new one, roll it out to the nodes, revoke the old one — the overlap
//! is as long as the roll-out takes.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use starling_core::error::{ApiError, ErrorCode};
use starling_core::id::{AppId, CellCredentialId, ClusterId, TenantId};
use starling_core::internal_auth::{
    generate_cell_credential, hash_cell_secret, split_cell_credential,
};
use utoipa::ToSchema;

use super::{ControlPlane, Error, Result, not_found};
use crate::entity::{app, cluster_credential};

/// Active credentials one cluster may have at once (a rotation needs two).
pub const MAX_ACTIVE_PER_CLUSTER: u64 = 10;

/// Last use is written at most this often per credential (seconds): not one write per call.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

/// A cell credential, never with its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CellCredentialOut {
    /// The credential's id, the part before the dot (safe to log).
    pub id: CellCredentialId,
    /// The cluster it authenticates.
    pub cluster_id: ClusterId,
    /// When it was issued.
    pub created_at: chrono::DateTime<Utc>,
    /// When a cell last presented it (to the minute), if ever.
    pub last_used_at: Option<chrono::DateTime<Utc>>,
    /// When it was revoked; a revoked credential is refused.
    pub revoked_at: Option<chrono::DateTime<Utc>>,
}

/// A credential just issued: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CellCredentialCreatedOut {
    /// The credential.
    #[serde(flatten)]
    pub credential: CellCredentialOut,
    /// `scc_<id>.<secret>`: configure the cell's nodes with it
    /// (`STARLING_GATEWAY__CELL_CREDENTIAL`). Shown once.
    pub secret: String,
}

fn out(m: cluster_credential::Model) -> CellCredentialOut {
    CellCredentialOut {
        id: CellCredentialId::from_trusted(m.id),
        cluster_id: ClusterId::from_trusted(m.cluster_id),
        created_at: m.created_at,
        last_used_at: m.last_used_at,
        revoked_at: m.revoked_at,
    }
}

fn unauthorized(why: &str) -> Error {
    Error::Api(ApiError::new(
        ErrorCode::Unauthorized,
        format!("the control plane's internal API needs a cell credential (scc_…): {why}"),
    ))
}

impl ControlPlane {
    /// Issues a new credential for a cluster.
    pub async fn issue_cell_credential(&self, cluster: &str) -> Result<CellCredentialCreatedOut> {
        self.cluster_model(cluster).await?;
        let active = cluster_credential::Entity::find()
            .filter(cluster_credential::Column::ClusterId.eq(cluster))
            .filter(cluster_credential::Column::RevokedAt.is_null())
            .count(&self.db)
            .await?;
        if active >= MAX_ACTIVE_PER_CLUSTER {
            return Err(Error::Conflict(format!(
                "cluster {cluster} has {active} active credentials; revoke one first"
            )));
        }
        let new = generate_cell_credential();
        let m = cluster_credential::ActiveModel {
            id: Set(new.id.into_string()),
            cluster_id: Set(cluster.to_owned()),
            secret_hash: Set(new.secret_hash),
            created_at: Set(super::now()),
            last_used_at: Set(None),
            revoked_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok(CellCredentialCreatedOut {
            credential: out(m),
            secret: new.credential,
        })
    }

    /// A cluster's credentials, oldest first (revoked ones too).
    pub async fn list_cell_credentials(&self, cluster: &str) -> Result<Vec<CellCredentialOut>> {
        use sea_orm::QueryOrder;
        self.cluster_model(cluster).await?;
        Ok(cluster_credential::Entity::find()
            .filter(cluster_credential::Column::ClusterId.eq(cluster))
            .order_by_asc(cluster_credential::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(out)
            .collect())
    }

    /// Revokes a credential: the cell presenting it is refused from now on.
    pub async fn revoke_cell_credential(
        &self,
        cluster: &str,
        id: &str,
    ) -> Result<CellCredentialOut> {
        let m = cluster_credential::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .filter(|m| m.cluster_id == cluster)
            .ok_or_else(|| not_found("credential", id))?;
        if m.revoked_at.is_some() {
            return Ok(out(m));
        }
        let mut a: cluster_credential::ActiveModel = m.into();
        a.revoked_at = Set(Some(super::now()));
        Ok(out(a.update(&self.db).await?))
    }

    /// The cluster a presented credential belongs to; 401 for anything else (unknown, revoked,
    /// wrong secret, not shaped like a credential).
    pub async fn authenticate_cell(&self, presented: &str) -> Result<ClusterId> {
        let (id, secret) = split_cell_credential(presented)
            .ok_or_else(|| unauthorized("the presented token is not one"))?;
        let m = cluster_credential::Entity::find_by_id(id.as_str().to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| unauthorized("unknown credential"))?;
        if !starling_core::secret::constant_time_eq(&hash_cell_secret(secret), &m.secret_hash) {
            return Err(unauthorized("unknown credential"));
        }
        if m.revoked_at.is_some() {
            return Err(unauthorized(&format!("credential {id} was revoked")));
        }
        let cluster = ClusterId::from_trusted(m.cluster_id.clone());
        let now = super::now();
        if m.last_used_at
            .is_none_or(|t| (now - t).num_seconds() >= LAST_USED_GRANULARITY_SECS)
        {
            let mut a: cluster_credential::ActiveModel = m.into();
            a.last_used_at = Set(Some(now));
            if let Err(e) = a.update(&self.db).await {
                // Bookkeeping only: the call goes ahead.
                tracing::warn!(error = %e, credential = %id, "recording a credential's last use failed");
            }
        }
        Ok(cluster)
    }

    /// Checks that `app` of `tenant` is placed on `cluster`: a cell acts on its own apps only.
    /// Another cell's app is not found (404), as another tenant's is.
    pub async fn require_placed_on(
        &self,
        cluster: &ClusterId,
        tenant: &TenantId,
        app_id: &AppId,
    ) -> Result<()> {
        let placed = app::Entity::find()
            .filter(app::Column::TenantId.eq(tenant.as_str()))
            .filter(app::Column::Id.eq(app_id.as_str()))
            .filter(app::Column::ClusterId.eq(cluster.as_str()))
            .count(&self.db)
            .await?;
        if placed == 0 {
            return Err(not_found("app", app_id));
        }
        Ok(())
    }
}
