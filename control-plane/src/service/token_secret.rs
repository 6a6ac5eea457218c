//! The secrets that sign an app's user tokens (HS256 JWTs). The customer's backend may mint
//! tokens itself with them; the data plane verifies tokens with them. Rotation keeps the old
//! secret valid for an overlap.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use starling_core::appconfig::TokenSecret;
use starling_core::id::{AppId, TenantId, TokenSecretId};
use starling_core::seal::Sealer;
use starling_core::secret::random_token;
use utoipa::ToSchema;

use super::{ControlPlane, Result, invalid, sealed};
use crate::entity::app_token_secret;

/// A token-signing secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenSecretOut {
    /// Key id: put it in the JWT header's `kid`.
    pub kid: TokenSecretId,
    /// The HS256 secret. Keep it on your servers only.
    pub secret: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When tokens signed with it stop being accepted (set by rotation).
    pub expires_at: Option<DateTime<Utc>>,
}

/// How to rotate the token secret.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateTokenSecretIn {
    /// How long tokens signed with the current secrets stay valid, 0..=2592000 seconds
    /// (default 86400).
    pub overlap_seconds: Option<u64>,
}

/// The row as shown, its secret opened.
fn out(sealer: &Sealer, m: app_token_secret::Model) -> Result<TokenSecretOut> {
    let secret = open_secret(sealer, &m)?;
    Ok(TokenSecretOut {
        kid: TokenSecretId::from_trusted(m.kid),
        secret,
        created_at: m.created_at,
        expires_at: m.expires_at,
    })
}

/// The clear secret of a row (the column holds it sealed).
pub(crate) fn open_secret(sealer: &Sealer, m: &app_token_secret::Model) -> Result<String> {
    sealed::open(
        sealer,
        &sealed::token_secret_aad(&m.tenant_id, &m.app_id, &m.kid),
        &m.secret,
    )
}

/// Makes a new secret and stores it sealed; returns the row and the clear secret.
pub(crate) async fn insert_secret(
    db: &impl ConnectionTrait,
    sealer: &Sealer,
    tenant: &str,
    app: &str,
) -> Result<(app_token_secret::Model, String)> {
    let kid = TokenSecretId::generate().into_string();
    let secret = random_token("");
    let m = app_token_secret::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        app_id: Set(app.to_owned()),
        secret: Set(sealer.seal(&sealed::token_secret_aad(tenant, app, &kid), &secret)),
        kid: Set(kid),
        created_at: Set(super::now()),
        expires_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok((m, secret))
}

pub(crate) async fn secrets_of(
    db: &impl ConnectionTrait,
    tenant: &str,
    app: &str,
) -> Result<Vec<app_token_secret::Model>> {
    Ok(app_token_secret::Entity::find()
        .filter(app_token_secret::Column::TenantId.eq(tenant))
        .filter(app_token_secret::Column::AppId.eq(app))
        .order_by_desc(app_token_secret::Column::Kid)
        .all(db)
        .await?)
}

impl ControlPlane {
    /// The app's token secrets, newest first (expired ones are dropped as they are found).
    pub async fn list_token_secrets(
        &self,
        tenant: &TenantId,
        app: &AppId,
    ) -> Result<Vec<TokenSecretOut>> {
        self.app_model(tenant, app).await?;
        let now = Utc::now();
        let all = secrets_of(&self.db, tenant.as_str(), app.as_str()).await?;
        all.into_iter()
            .filter(|s| s.expires_at.is_none_or(|e| e > now))
            .map(|m| out(&self.sealer, m))
            .collect()
    }

    /// The app's token secrets as cells need them (opened), newest first.
    pub(crate) async fn token_secrets_for_cells(
        &self,
        tenant: &str,
        app: &str,
    ) -> Result<Vec<TokenSecret>> {
        secrets_of(&self.db, tenant, app)
            .await?
            .into_iter()
            .map(|m| {
                Ok(TokenSecret {
                    secret: open_secret(&self.sealer, &m)?,
                    kid: m.kid,
                    expires_at: m.expires_at,
                })
            })
            .collect()
    }

    /// Makes a new secret; the current ones stay valid for the overlap.
    pub async fn rotate_token_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        input: RotateTokenSecretIn,
    ) -> Result<TokenSecretOut> {
        let overlap = input.overlap_seconds.unwrap_or(86_400);
        if overlap > super::api_key::MAX_OVERLAP_SECONDS {
            return Err(invalid(
                "overlap_seconds",
                "must be at most 2592000 (30 days)",
            ));
        }
        self.app_model(tenant, app).await?;
        let end = super::now() + Duration::seconds(overlap as i64);
        let txn = starling_core::db::begin_write(&self.db).await?;
        for s in secrets_of(&txn, tenant.as_str(), app.as_str()).await? {
            if s.expires_at.is_none_or(|e| e > end) {
                let mut a: app_token_secret::ActiveModel = s.into();
                a.expires_at = Set(Some(end));
                a.update(&txn).await?;
            }
        }
        let (new, secret) =
            insert_secret(&txn, &self.sealer, tenant.as_str(), app.as_str()).await?;
        txn.commit().await?;
        self.publish_app(tenant.as_str(), app.as_str()).await;
        Ok(TokenSecretOut {
            kid: TokenSecretId::from_trusted(new.kid),
            secret,
            created_at: new.created_at,
            expires_at: new.expires_at,
        })
    }
}
