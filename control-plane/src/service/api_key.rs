//! API keys of apps: created with a secret shown once, stored as a keyed hash, revoked, rotated
//! with an overlap during which both keys work, and checked when presented.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use starling_core::http::{Page, PageParams};
use starling_core::id::{ApiKeyId, AppId, TenantId};
use starling_core::secret::{generate_api_key, split_api_key};
use utoipa::ToSchema;

use super::{ControlPlane, Error, Result, check_name, invalid, not_found, paginate};
use crate::entity::{Status, api_key, app, tenant};
use crate::store::app_scoped;

/// What a key may do on the server API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything the server API offers.
    ServerFull,
    /// Only reads.
    ReadOnly,
}

/// Whether a key works now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Works.
    Active,
    /// Past its expiry (or the end of its rotation overlap).
    Expired,
    /// Revoked.
    Revoked,
}

/// The longest rotation overlap: 30 days.
pub const MAX_OVERLAP_SECONDS: u64 = 30 * 24 * 3600;

/// A new API key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    /// What the key is for, e.g. `backend production`.
    #[schema(example = "backend")]
    pub name: String,
    /// Scopes (default `["server_full"]`).
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    /// When the key stops working; never when omitted.
    pub expires_at: Option<DateTime<Utc>>,
}

/// How to rotate a key.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// How long the old key keeps working, 0..=2592000 seconds (default 86400: one day).
    pub overlap_seconds: Option<u64>,
}

/// An API key (never with its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyOut {
    /// The key id: the public part of the key.
    pub id: ApiKeyId,
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// The app the key is for.
    pub app_id: AppId,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Whether it works now.
    pub status: KeyStatus,
    /// When it stops (or stopped) working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last presented (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<ApiKeyId>,
    /// The key that replaced this one by rotation.
    pub replaced_by: Option<ApiKeyId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A key just created or rotated: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyCreatedOut {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKeyOut,
    /// The full key to put in `Authorization: Bearer …`. Shown once; store it safely.
    #[schema(
        example = "key_01jdq3v9k6b2c8x4m7n5p0r1st.q0Zk1x5uJ2lq0yX3kP9wQ7rT4mB8nC6vD1eF5gH2jK0"
    )]
    pub secret: String,
}

/// A key to check.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectIn {
    /// The full key as a customer presents it.
    pub key: String,
}

/// Whether a presented key works, and for what.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntrospectOut {
    /// `true` when the key works now.
    pub active: bool,
    /// Why it does not: `unknown_key`, `revoked`, `expired`, `app_suspended`, `tenant_suspended`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The key id, when the key is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<ApiKeyId>,
    /// Its tenant, when the key is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    /// Its app, when the key is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<AppId>,
    /// Its scopes, when active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
}

fn status_of(m: &api_key::Model, now: DateTime<Utc>) -> KeyStatus {
    if m.revoked_at.is_some() {
        KeyStatus::Revoked
    } else if m.expires_at.is_some_and(|e| e <= now) {
        KeyStatus::Expired
    } else {
        KeyStatus::Active
    }
}

fn out(m: api_key::Model) -> ApiKeyOut {
    let status = status_of(&m, super::now());
    ApiKeyOut {
        status,
        id: ApiKeyId::from_trusted(m.id),
        tenant_id: TenantId::from_trusted(m.tenant_id),
        app_id: AppId::from_trusted(m.app_id),
        name: m.name,
        scopes: serde_json::from_value(m.scopes).unwrap_or_default(),
        expires_at: m.expires_at,
        last_used_at: m.last_used_at,
        revoked_at: m.revoked_at,
        rotated_from: m.rotated_from.map(ApiKeyId::from_trusted),
        replaced_by: m.replaced_by.map(ApiKeyId::from_trusted),
        created_at: m.created_at,
    }
}

fn check_scopes(scopes: Option<Vec<Scope>>) -> Result<Vec<Scope>> {
    let mut s = scopes.unwrap_or_else(|| vec![Scope::ServerFull]);
    if s.is_empty() {
        return Err(invalid("scopes", "must name at least one scope"));
    }
    s.sort_by_key(|x| *x as u8);
    s.dedup();
    Ok(s)
}

impl ControlPlane {
    /// Creates a key for an app; the secret is in the result and nowhere else.
    pub async fn create_api_key(
        &self,
        tenant: &TenantId,
        app_id: &AppId,
        input: ApiKeyIn,
    ) -> Result<ApiKeyCreatedOut> {
        self.app_model(tenant, app_id).await?;
        let name = check_name("name", &input.name)?;
        let scopes = check_scopes(input.scopes)?;
        let now = super::now();
        if input.expires_at.is_some_and(|e| e <= now) {
            return Err(invalid("expires_at", "must be in the future"));
        }
        let key = generate_api_key();
        let m = api_key::ActiveModel {
            tenant_id: Set(tenant.as_str().to_owned()),
            app_id: Set(app_id.as_str().to_owned()),
            id: Set(key.id.as_str().to_owned()),
            name: Set(name),
            secret_hash: Set(self.hasher.hash(&key.secret)),
            scopes: Set(serde_json::to_value(&scopes).expect("scopes serialize")),
            expires_at: Set(input.expires_at),
            last_used_at: Set(None),
            revoked_at: Set(None),
            rotated_from: Set(None),
            replaced_by: Set(None),
            created_at: Set(now),
        }
        .insert(&self.db)
        .await?;
        self.publish_app(tenant.as_str(), app_id.as_str()).await;
        Ok(ApiKeyCreatedOut {
            key: out(m),
            secret: key.token,
        })
    }

    /// Lists an app's keys (revoked and expired ones too), oldest first.
    pub async fn list_api_keys(
        &self,
        tenant: &TenantId,
        app_id: &AppId,
        page: &PageParams,
    ) -> Result<Page<ApiKeyOut>> {
        self.app_model(tenant, app_id).await?;
        paginate(
            &self.db,
            app_scoped::<api_key::Entity>(tenant, app_id),
            api_key::Column::Id,
            page,
            out,
            |k| k.id.as_str(),
        )
        .await
    }

    async fn key_model(
        &self,
        tenant: &TenantId,
        app_id: &AppId,
        id: &ApiKeyId,
    ) -> Result<api_key::Model> {
        app_scoped::<api_key::Entity>(tenant, app_id)
            .filter(api_key::Column::Id.eq(id.as_str()))
            .one(&self.db)
            .await?
            .ok_or_else(|| not_found("api key", id))
    }

    /// One key.
    pub async fn get_api_key(
        &self,
        tenant: &TenantId,
        app_id: &AppId,
        id: &ApiKeyId,
    ) -> Result<ApiKeyOut> {
        Ok(out(self.key_model(tenant, app_id, id).await?))
    }

    /// Revokes a key at once. Revoking a revoked key changes nothing.
    pub async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        app_id: &AppId,
        id: &ApiKeyId,
    ) -> Result<ApiKeyOut> {
        let m = self.key_model(tenant, app_id, id).await?;
        if m.revoked_at.is_some() {
            return Ok(out(m));
        }
        let mut a: api_key::ActiveModel = m.into();
        a.revoked_at = Set(Some(super::now()));
        let m = a.update(&self.db).await?;
        self.publish_app(tenant.as_str(), app_id.as_str()).await;
        Ok(out(m))
    }

    /// Replaces a key with a new one of the same name and scopes; the old key keeps working for
    /// `overlap_seconds`, so that the customer can deploy the new one without downtime.
    pub async fn rotate_api_key(
        &self,
        tenant: &TenantId,
        app_id: &AppId,
        id: &ApiKeyId,
        input: RotateIn,
    ) -> Result<ApiKeyCreatedOut> {
        let overlap = input.overlap_seconds.unwrap_or(86_400);
        if overlap > MAX_OVERLAP_SECONDS {
            return Err(invalid(
                "overlap_seconds",
                format!("must be at most {MAX_OVERLAP_SECONDS} (30 days)"),
            ));
        }
        let old = self.key_model(tenant, app_id, id).await?;
        let now = super::now();
        match status_of(&old, now) {
            KeyStatus::Active => {}
            s => {
                return Err(Error::Conflict(
                    format!("api key {id} is {s:?} and cannot be rotated; create a new key")
                        .to_lowercase(),
                ));
            }
        }
        if let Some(next) = &old.replaced_by {
            return Err(Error::Conflict(format!(
                "api key {id} was already rotated; rotate {next} instead"
            )));
        }
        let key = generate_api_key();
        let overlap_end = now + Duration::seconds(overlap as i64);
        let old_expiry = Some(old.expires_at.map_or(overlap_end, |e| e.min(overlap_end)));
        let txn = starling_core::db::begin_write(&self.db).await?;
        let new = api_key::ActiveModel {
            tenant_id: Set(old.tenant_id.clone()),
            app_id: Set(old.app_id.clone()),
            id: Set(key.id.as_str().to_owned()),
            name: Set(old.name.clone()),
            secret_hash: Set(self.hasher.hash(&key.secret)),
            scopes: Set(old.scopes.clone()),
            expires_at: Set(None),
            last_used_at: Set(None),
            revoked_at: Set(None),
            rotated_from: Set(Some(old.id.clone())),
            replaced_by: Set(None),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let mut a: api_key::ActiveModel = old.into();
        a.expires_at = Set(old_expiry);
        a.replaced_by = Set(Some(key.id.as_str().to_owned()));
        a.update(&txn).await?;
        txn.commit().await?;
        self.publish_app(tenant.as_str(), app_id.as_str()).await;
        Ok(ApiKeyCreatedOut {
            key: out(new),
            secret: key.token,
        })
    }

    /// Checks a presented key: known, matching, not revoked or expired, its app and tenant active.
    /// Records the time of use (at most once a minute per key).
    pub async fn introspect_api_key(&self, presented: &str) -> Result<IntrospectOut> {
        let inactive = |reason: &str, m: Option<&api_key::Model>| IntrospectOut {
            active: false,
            reason: Some(reason.to_owned()),
            key_id: m.map(|m| ApiKeyId::from_trusted(m.id.clone())),
            tenant_id: m.map(|m| TenantId::from_trusted(m.tenant_id.clone())),
            app_id: m.map(|m| AppId::from_trusted(m.app_id.clone())),
            scopes: None,
        };
        let Some((id, secret)) = split_api_key(presented.trim()) else {
            return Ok(inactive("unknown_key", None));
        };
        let Some(m) = api_key::Entity::find()
            .filter(api_key::Column::Id.eq(id.as_str()))
            .one(&self.db)
            .await?
        else {
            return Ok(inactive("unknown_key", None));
        };
        if !self.hasher.verify(secret, &m.secret_hash) {
            return Ok(inactive("unknown_key", None));
        }
        let now = super::now();
        match status_of(&m, now) {
            KeyStatus::Active => {}
            KeyStatus::Revoked => return Ok(inactive("revoked", Some(&m))),
            KeyStatus::Expired => return Ok(inactive("expired", Some(&m))),
        }
        let t = tenant::Entity::find_by_id(m.tenant_id.clone())
            .one(&self.db)
            .await?;
        if t.is_none_or(|t| t.status != Status::Active) {
            return Ok(inactive("tenant_suspended", Some(&m)));
        }
        let a = app::Entity::find()
            .filter(app::Column::TenantId.eq(&m.tenant_id))
            .filter(app::Column::Id.eq(&m.app_id))
            .one(&self.db)
            .await?;
        if a.is_none_or(|a| a.status != Status::Active) {
            return Ok(inactive("app_suspended", Some(&m)));
        }
        if m.last_used_at
            .is_none_or(|t| now - t > Duration::seconds(60))
        {
            let mut a: api_key::ActiveModel = m.clone().into();
            a.last_used_at = Set(Some(now));
            a.update(&self.db).await?;
        }
        Ok(IntrospectOut {
            active: true,
            reason: None,
            key_id: Some(ApiKeyId::from_trusted(m.id)),
            tenant_id: Some(TenantId::from_trusted(m.tenant_id)),
            app_id: Some(AppId::from_trusted(m.app_id)),
            scopes: serde_json::from_value(m.scopes).ok(),
        })
    }
}
