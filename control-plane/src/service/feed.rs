//! Publishing app configuration to data-plane cells (see `starling_core::appconfig`).
//!
//! Every change that alters what a cell must know about an app (status, limits, keys, token
//! secrets) republishes that app's whole configuration, after the change is committed, signed
//! for the cell the app is placed on and on that cell's feed only: no cell learns the apps of
//! another. Moving an app publishes its deletion to the old cell first. At start the control
//! plane republishes every app, so each feed's compacted view is complete.

use std::sync::Arc;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use starling_core::appconfig::{
    AppConfig, CellFeeds, ConfigUpdate, KeyConfig, SignedUpdate, next_version,
};
use starling_core::cellkey::CellPublicKey;
use starling_core::id::{ApiKeyId, AppId, TenantId};
use starling_core::limits::Limits;
use starling_core::signing::SigningKey;

use super::{ControlPlane, Result};
use crate::entity::{Status, api_key, app, plan, pre_send_hook, tenant, webhook_endpoint};

/// Where and how app configuration is published: each cell's feed, and the signing key.
#[derive(Clone)]
pub struct Publisher {
    /// The feeds, by cluster id.
    pub feeds: Arc<dyn CellFeeds>,
    /// The control plane's signing key.
    pub key: SigningKey,
}

impl ControlPlane {
    /// Publishes app configuration on each cell's feed in `feeds` from now on, signed with `key`.
    pub fn with_feed(mut self, feeds: Arc<dyn CellFeeds>, key: SigningKey) -> Self {
        self.feed = Some(Publisher { feeds, key });
        self
    }

    /// What a cell must know about one app, read from the database.
    pub async fn app_config(&self, tenant_id: &str, app_id: &str) -> Result<Option<AppConfig>> {
        Ok(self
            .placed_app_config(tenant_id, app_id)
            .await?
            .map(|(_, c)| c))
    }

    /// The app's configuration and the cluster it is placed on, from one read of the app.
    async fn placed_app_config(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> Result<Option<(String, AppConfig)>> {
        // The version is taken before reading: a read that started later (and so sees every
        // change committed before it) always carries a higher version than an earlier one, so
        // concurrent publishers can never have a stale view win.
        let version = next_version();
        let Some(a) = app::Entity::find()
            .filter(app::Column::TenantId.eq(tenant_id))
            .filter(app::Column::Id.eq(app_id))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let Some(t) = tenant::Entity::find_by_id(tenant_id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let p = plan::Entity::find_by_id(t.plan_id.clone())
            .one(&self.db)
            .await?;
        let soft_limits = p
            .as_ref()
            .map(super::plan::soft_limits_of)
            .unwrap_or_default();
        let plan_limits = p.map(|p| Limits::from_json(&p.limits)).unwrap_or_default();
        let keys = api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(tenant_id))
            .filter(api_key::Column::AppId.eq(app_id))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|k| KeyConfig {
                id: ApiKeyId::from_trusted(k.id),
                secret_hash: k.secret_hash,
                scopes: serde_json::from_value(k.scopes).unwrap_or_default(),
                expires_at: k.expires_at,
                revoked: k.revoked_at.is_some(),
            })
            .collect();
        // Secrets are sealed at rest; cells get them opened (see service::sealed).
        let token_secrets = self.token_secrets_for_cells(tenant_id, app_id).await?;
        let webhooks = webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::TenantId.eq(tenant_id))
            .filter(webhook_endpoint::Column::AppId.eq(app_id))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| super::webhook::endpoint_config(&self.sealer, m))
            .collect::<Result<_>>()?;
        let pre_send_hook = pre_send_hook::Entity::find()
            .filter(pre_send_hook::Column::TenantId.eq(tenant_id))
            .filter(pre_send_hook::Column::AppId.eq(app_id))
            .one(&self.db)
            .await?
            .map(|m| super::webhook::hook_config(&self.sealer, m))
            .transpose()?;
        let suspended = if t.status != Status::Active {
            Some("tenant_suspended".to_owned())
        } else if a.status != Status::Active {
            Some("app_suspended".to_owned())
        } else {
            None
        };
        Ok(Some((
            a.cluster_id,
            AppConfig {
                app_id: AppId::from_trusted(a.id),
                tenant_id: TenantId::from_trusted(a.tenant_id),
                suspended,
                limits: plan_limits.with_overrides(&Limits::from_json(&a.quota_overrides)),
                soft_limits,
                keys,
                token_secrets,
                webhooks,
                pre_send_hook,
                version,
            },
        )))
    }

    /// Opens the feed of the cell `cluster_id` (with an admin API, provisioning the cell on the
    /// bus). Without a feed (standalone's in-process cell), nothing to do.
    pub(crate) async fn prepare_cell(&self, cluster_id: &str) -> Result<()> {
        let Some(p) = &self.feed else { return Ok(()) };
        p.feeds.feed(cluster_id).await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, cluster_id, "preparing the cell's feed failed");
            starling_core::error::ApiError::new(
                starling_core::error::ErrorCode::Unavailable,
                "the message bus refused to prepare the cell's feed; try again",
            )
            .into()
        })
    }

    /// The config key registered for the cell, if any (a stored key that no longer parses is
    /// an operator's problem: logged, and the update is not sent rather than sent in clear).
    async fn cell_key(
        &self,
        cluster_id: &str,
    ) -> std::result::Result<Option<CellPublicKey>, String> {
        let c = crate::entity::cluster::Entity::find_by_id(cluster_id.to_owned())
            .one(&self.db)
            .await
            .map_err(|e| e.to_string())?;
        c.and_then(|c| c.config_public_key)
            .map(|k| CellPublicKey::from_text(&k).map_err(|e| e.to_string()))
            .transpose()
    }

    async fn send(&self, cluster_id: &str, update: ConfigUpdate) {
        let Some(p) = &self.feed else { return };
        let cell_key = match self.cell_key(cluster_id).await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, cluster_id, "reading the cell's config key failed; update not sent");
                return;
            }
        };
        let signed = SignedUpdate::sign_for(&p.key, cluster_id, &update, cell_key.as_ref());
        let r = match p.feeds.feed(cluster_id).await {
            Ok(feed) => feed.publish(signed).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            // The next change of this app, or the next start, republishes it.
            tracing::error!(error = %e, cluster_id, "publishing app config failed");
        }
    }

    /// Republishes one app on its cell's feed.
    pub(crate) async fn publish_app(&self, tenant_id: &str, app_id: &str) {
        if self.feed.is_none() {
            return;
        }
        match self.placed_app_config(tenant_id, app_id).await {
            Ok(Some((cluster, c))) => self.send(&cluster, ConfigUpdate::Upsert(c)).await,
            // Gone: its deletion was published by whoever deleted it (it knew the cell).
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, app_id, "reading app config to publish failed"),
        }
    }

    /// Publishes that an app is gone from the cell `cluster_id` (deleted, or moved away).
    pub(crate) async fn publish_removal(&self, cluster_id: &str, app_id: &str) {
        self.send(
            cluster_id,
            ConfigUpdate::Delete {
                app_id: AppId::from_trusted(app_id.to_owned()),
                version: next_version(),
            },
        )
        .await
    }

    /// Republishes every app placed on the cell `cluster_id`.
    pub(crate) async fn publish_cluster(&self, cluster_id: &str) {
        match app::Entity::find()
            .filter(app::Column::ClusterId.eq(cluster_id))
            .all(&self.db)
            .await
        {
            Ok(apps) => {
                for a in apps {
                    self.publish_app(&a.tenant_id, &a.id).await;
                }
            }
            Err(e) => tracing::error!(error = %e, cluster_id, "listing a cell's apps failed"),
        }
    }

    /// Republishes every app of a tenant.
    pub(crate) async fn publish_tenant(&self, tenant_id: &str) {
        if self.feed.is_none() {
            return;
        }
        match app::Entity::find()
            .filter(app::Column::TenantId.eq(tenant_id))
            .all(&self.db)
            .await
        {
            Ok(apps) => {
                for a in apps {
                    self.publish_app(tenant_id, &a.id).await;
                }
            }
            Err(e) => tracing::error!(error = %e, tenant_id, "listing apps to publish failed"),
        }
    }

    /// Republishes every app of every tenant on a plan.
    pub(crate) async fn publish_plan(&self, plan_id: &str) {
        if self.feed.is_none() {
            return;
        }
        match tenant::Entity::find()
            .filter(tenant::Column::PlanId.eq(plan_id))
            .all(&self.db)
            .await
        {
            Ok(ts) => {
                for t in ts {
                    self.publish_tenant(&t.id).await;
                }
            }
            Err(e) => tracing::error!(error = %e, plan_id, "listing tenants to publish failed"),
        }
    }

    /// Republishes every app; returns how many.
    pub async fn publish_all(&self) -> Result<usize> {
        use futures::StreamExt;
        // Every cell first, also those with no app yet: provisioning on the bus (where an
        // admin API is configured) is idempotent, so a cell registered while the bus was down
        // gets its grants now.
        for c in crate::entity::cluster::Entity::find().all(&self.db).await? {
            // A failure is logged by prepare_cell; the cell's apps are still tried below.
            let _ = self.prepare_cell(&c.id).await;
        }
        let apps = app::Entity::find().all(&self.db).await?;
        let n = apps.len();
        // Several at once: each is a few queries and one acknowledged publish.
        futures::stream::iter(apps)
            .for_each_concurrent(16, |a| async move {
                self.publish_app(&a.tenant_id, &a.id).await
            })
            .await;
        Ok(n)
    }
}
