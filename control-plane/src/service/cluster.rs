//! Data-plane clusters (cells) and the placement of apps onto them.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use starling_core::http::{Page, PageParams};
use starling_core::id::ClusterId;
use utoipa::ToSchema;

use super::{ControlPlane, Error, Result, check_code, invalid, not_found, paginate};
use crate::entity::{ClusterStatus, app, cluster};

/// A new cluster.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterIn {
    /// Unique machine name, e.g. `eu-west-1a`.
    #[schema(example = "eu-west-1a")]
    pub name: String,
    /// Region the cluster runs in, e.g. `eu-west-1`.
    #[schema(example = "eu-west-1")]
    pub region: String,
    /// Public URL of the cell's gateways.
    #[schema(example = "https://eu1.chat.example.com")]
    pub endpoint: Option<String>,
    /// Where the control plane calls the cell's internal API (the nodes'
    /// `server.internal_listen`, reached on the platform's private network): an `https://`
    /// origin, or `http://` on a development cluster. Without it the console cannot moderate
    /// the cell's apps.
    #[schema(example = "https://eu1-internal.cells.example.internal:7401")]
    pub internal_endpoint: Option<String>,
    /// A development cluster: its internal endpoint may be plain `http://` (default false).
    #[serde(default)]
    pub development: bool,
    /// The cell's config key: the X25519 public key (32 bytes, unpadded base64url) its nodes
    /// hold the secret of (`gateway.config_keys`; `starling keygen --cell` makes a pair). Every
    /// app-config update for the cell, secrets included, is then sealed to it on the bus.
    /// Without it updates travel signed but in clear.
    #[schema(example = "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo")]
    pub config_public_key: Option<String>,
    /// How many apps the cluster may carry (at least 1).
    #[schema(example = 500)]
    pub capacity_apps: u32,
    /// Initial status (default `active`).
    #[serde(default)]
    pub status: Option<ClusterStatus>,
}

/// Changes to a cluster; omitted fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterPatch {
    /// New endpoint (`null` clears it).
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<Option<String>>,
    /// New internal endpoint (`null` clears it): `https://`, or `http://` on a development
    /// cluster.
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<String>)]
    pub internal_endpoint: Option<Option<String>>,
    /// Marks or unmarks a development cluster.
    pub development: Option<bool>,
    /// A new config key (`null` clears it: updates then travel in clear). Every app on the
    /// cluster is republished, sealed to the new key: give the nodes the new secret key
    /// alongside the old one first (`gateway.config_keys`), then change it here.
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<String>)]
    pub config_public_key: Option<Option<String>>,
    /// New capacity; may not go below the apps already placed.
    pub capacity_apps: Option<u32>,
    /// `draining` takes no new apps; `offline` marks it down.
    pub status: Option<ClusterStatus>,
}

/// A cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterOut {
    /// Id.
    pub id: ClusterId,
    /// Unique machine name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Status.
    pub status: ClusterStatus,
    /// Public URL of the gateways, if known.
    pub endpoint: Option<String>,
    /// Where the control plane calls the cell's internal API, if known.
    pub internal_endpoint: Option<String>,
    /// A development cluster (plain `http://` internal endpoint allowed).
    pub development: bool,
    /// The cell's config key, if registered: updates are sealed to it.
    pub config_public_key: Option<String>,
    /// How many apps it may carry.
    pub capacity_apps: u64,
    /// How many apps are placed on it now.
    pub apps: u64,
    /// When it was created.
    pub created_at: chrono::DateTime<Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

fn out(m: cluster::Model, apps: u64) -> ClusterOut {
    ClusterOut {
        id: ClusterId::from_trusted(m.id),
        name: m.name,
        region: m.region,
        status: m.status,
        endpoint: m.endpoint,
        internal_endpoint: m.internal_endpoint,
        development: m.development,
        config_public_key: m.config_public_key,
        capacity_apps: m.capacity_apps.max(0) as u64,
        apps,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn check_endpoint(e: &str) -> Result<String> {
    let ok = (e.starts_with("http://")
        || e.starts_with("https://")
        || e.starts_with("ws://")
        || e.starts_with("wss://"))
        && e.len() <= 512
        && !e.contains(char::is_whitespace);
    if ok {
        Ok(e.to_owned())
    } else {
        Err(invalid(
            "endpoint",
            "must be an http(s):// or ws(s):// URL of at most 512 characters",
        ))
    }
}

/// Checks an internal endpoint: an origin (scheme, host, port; no path, query or credentials,
/// because call tokens cover the exact path the cell receives), `https://` unless `development`.
fn check_internal_endpoint(e: &str, development: bool, field: &str) -> Result<String> {
    let url = e.parse::<axum::http::Uri>().ok().filter(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.authority()
                .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
            && u.path() == "/"
            && u.query().is_none()
            && !e.contains(['#', ' '])
            && e.len() <= 512
    });
    let Some(url) = url else {
        return Err(invalid(
            "internal_endpoint",
            "must be an https:// origin (scheme, host and port, no path), at most 512 characters",
        ));
    };
    if url.scheme_str() != Some("https") && !development {
        return Err(invalid(
            field,
            "the internal endpoint must be https:// unless the cluster is marked development \
             (plain http exposes every internal call on the network)",
        ));
    }
    Ok(e.trim_end_matches('/').to_owned())
}

/// Checks a config public key and returns its canonical text.
fn check_config_key(k: &str) -> Result<String> {
    starling_core::cellkey::CellPublicKey::from_text(k)
        .map(|k| k.to_text())
        .map_err(|e| {
            invalid(
                "config_public_key",
                format!(
                    "must be an X25519 public key, 32 bytes in unpadded base64url (`starling keygen --cell`): {e}"
                ),
            )
        })
}

impl ControlPlane {
    /// Apps placed on each of `clusters`, in one query.
    async fn apps_per_cluster(
        &self,
        clusters: &[String],
    ) -> Result<std::collections::HashMap<String, u64>> {
        use sea_orm::QuerySelect;
        let rows: Vec<(String, i64)> = app::Entity::find()
            .select_only()
            .column(app::Column::ClusterId)
            .column_as(app::Column::Id.count(), "n")
            .filter(app::Column::ClusterId.is_in(clusters.iter().cloned()))
            .group_by(app::Column::ClusterId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(c, n)| (c, n.max(0) as u64))
            .collect())
    }

    async fn apps_on(&self, cluster_id: &str) -> Result<u64> {
        Ok(app::Entity::find()
            .filter(app::Column::ClusterId.eq(cluster_id))
            .count(&self.db)
            .await?)
    }

    /// Registers a cluster.
    pub async fn create_cluster(&self, input: ClusterIn) -> Result<ClusterOut> {
        let name = check_code("name", &input.name)?;
        let region = check_code("region", &input.region)?;
        let endpoint = input.endpoint.as_deref().map(check_endpoint).transpose()?;
        let internal_endpoint = input
            .internal_endpoint
            .as_deref()
            .map(|e| check_internal_endpoint(e, input.development, "internal_endpoint"))
            .transpose()?;
        let config_public_key = input
            .config_public_key
            .as_deref()
            .map(check_config_key)
            .transpose()?;
        if input.capacity_apps == 0 {
            return Err(invalid("capacity_apps", "must be at least 1"));
        }
        if cluster::Entity::find()
            .filter(cluster::Column::Name.eq(&name))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(Error::Conflict(format!(
                "a cluster named {name:?} already exists"
            )));
        }
        let id = ClusterId::generate().into_string();
        // The cell's place on the bus (its feed, its namespace, its role's grants) exists
        // before the cluster does, so its nodes can start as soon as it is registered.
        self.prepare_cell(&id).await?;
        let now = super::now();
        let m = cluster::ActiveModel {
            id: Set(id),
            name: Set(name),
            region: Set(region),
            status: Set(input.status.unwrap_or(ClusterStatus::Active)),
            endpoint: Set(endpoint),
            internal_endpoint: Set(internal_endpoint),
            development: Set(input.development),
            config_public_key: Set(config_public_key),
            capacity_apps: Set(input.capacity_apps as i64),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&self.db)
        .await?;
        Ok(out(m, 0))
    }

    /// Lists clusters, oldest first.
    pub async fn list_clusters(&self, page: &PageParams) -> Result<Page<ClusterOut>> {
        let page = paginate(
            &self.db,
            cluster::Entity::find(),
            cluster::Column::Id,
            page,
            |m| m,
            |m| m.id.as_str(),
        )
        .await?;
        let ids: Vec<String> = page.data.iter().map(|m| m.id.clone()).collect();
        let counts = self.apps_per_cluster(&ids).await?;
        let data = page
            .data
            .into_iter()
            .map(|m| {
                let n = counts.get(&m.id).copied().unwrap_or(0);
                out(m, n)
            })
            .collect();
        Ok(Page {
            data,
            next_cursor: page.next_cursor,
        })
    }

    pub(crate) async fn cluster_model(&self, id: &str) -> Result<cluster::Model> {
        cluster::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| not_found("cluster", id))
    }

    /// One cluster.
    pub async fn get_cluster(&self, id: &str) -> Result<ClusterOut> {
        let m = self.cluster_model(id).await?;
        let n = self.apps_on(id).await?;
        Ok(out(m, n))
    }

    /// Changes a cluster.
    pub async fn update_cluster(&self, id: &str, patch: ClusterPatch) -> Result<ClusterOut> {
        let current = self.cluster_model(id).await?;
        let n = self.apps_on(id).await?;
        let development = patch.development.unwrap_or(current.development);
        let internal_endpoint = match &patch.internal_endpoint {
            Some(e) => e.clone(),
            None => current.internal_endpoint.clone(),
        };
        // Checked as it will be after the change: unmarking development with a plain http
        // endpoint in place is refused, naming `development`.
        let field = if patch.internal_endpoint.is_some() {
            "internal_endpoint"
        } else {
            "development"
        };
        let internal_endpoint = internal_endpoint
            .as_deref()
            .map(|e| check_internal_endpoint(e, development, field))
            .transpose()?;
        let new_key = patch
            .config_public_key
            .as_ref()
            .map(|k| k.as_deref().map(check_config_key).transpose())
            .transpose()?;
        let key_changed = new_key
            .as_ref()
            .is_some_and(|k| *k != current.config_public_key);
        let mut m: cluster::ActiveModel = current.into();
        if let Some(k) = new_key {
            m.config_public_key = Set(k);
        }
        if let Some(e) = patch.endpoint {
            m.endpoint = Set(e.as_deref().map(check_endpoint).transpose()?);
        }
        m.internal_endpoint = Set(internal_endpoint);
        m.development = Set(development);
        if let Some(c) = patch.capacity_apps {
            if c == 0 {
                return Err(invalid("capacity_apps", "must be at least 1"));
            }
            if (c as u64) < n {
                return Err(invalid(
                    "capacity_apps",
                    format!("must be at least {n}, the apps placed on it now"),
                ));
            }
            m.capacity_apps = Set(c as i64);
        }
        if let Some(s) = patch.status {
            m.status = Set(s);
        }
        m.updated_at = Set(super::now());
        let m = m.update(&self.db).await?;
        if key_changed {
            // Every app of the cell again, sealed to the new key (or in clear).
            self.publish_cluster(id).await;
        }
        Ok(out(m, n))
    }

    /// Removes a cluster that carries no apps.
    pub async fn delete_cluster(&self, id: &str) -> Result<()> {
        self.cluster_model(id).await?;
        let n = self.apps_on(id).await?;
        if n > 0 {
            return Err(Error::Conflict(format!(
                "cluster {id} still carries {n} app(s); move them first"
            )));
        }
        cluster::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Picks the cluster for a new or moving app: the named one if it can take it, else the
    /// active cluster (in `region`, when given) with the most free capacity.
    pub(crate) async fn place(
        &self,
        cluster_id: Option<&str>,
        region: Option<&str>,
    ) -> Result<cluster::Model> {
        if let Some(id) = cluster_id {
            let c = cluster::Entity::find_by_id(id.to_owned())
                .one(&self.db)
                .await?
                .ok_or_else(|| invalid("cluster_id", format!("cluster {id} does not exist")))?;
            if c.status != ClusterStatus::Active {
                return Err(Error::Conflict(
                    format!("cluster {id} is {:?} and takes no new apps", c.status).to_lowercase(),
                ));
            }
            if self.apps_on(id).await? as i64 >= c.capacity_apps {
                return Err(Error::Conflict(format!(
                    "cluster {id} is full ({} apps)",
                    c.capacity_apps
                )));
            }
            return Ok(c);
        }
        let mut q =
            cluster::Entity::find().filter(cluster::Column::Status.eq(ClusterStatus::Active));
        if let Some(r) = region {
            q = q.filter(cluster::Column::Region.eq(r));
        }
        let candidates = q.all(&self.db).await?;
        let ids: Vec<String> = candidates.iter().map(|c| c.id.clone()).collect();
        let counts = self.apps_per_cluster(&ids).await?;
        let mut best: Option<(i64, cluster::Model)> = None;
        for c in candidates {
            let free = c.capacity_apps - counts.get(&c.id).copied().unwrap_or(0) as i64;
            if free > 0 && best.as_ref().is_none_or(|(f, _)| free > *f) {
                best = Some((free, c));
            }
        }
        best.map(|(_, c)| c).ok_or_else(|| {
            Error::Conflict(match region {
                Some(r) => format!("no active cluster with free capacity in region {r:?}"),
                None => "no active cluster with free capacity; register one with POST /admin/v1/clusters".into(),
            })
        })
    }

    /// Registers the `local` cluster of a standalone process when no cluster exists yet, and
    /// points the `local` cluster (new or not) at this start's endpoints: the internal listener
    /// of standalone is on a free loopback port that changes from start to start. The local
    /// cluster is a development cluster (its internal endpoint is plain http on loopback).
    /// Returns the id of the cluster standalone's node serves: `local`, or the first cluster made
    /// when the operator's clusters have no `local` (then left as it is).
    pub async fn ensure_local_cluster(
        &self,
        endpoint: Option<String>,
        internal_endpoint: Option<String>,
    ) -> Result<Option<ClusterId>> {
        use sea_orm::QueryOrder;
        let local = cluster::Entity::find()
            .filter(cluster::Column::Name.eq("local"))
            .one(&self.db)
            .await?;
        if let Some(c) = local {
            let id = c.id.clone();
            if c.internal_endpoint != internal_endpoint || !c.development {
                self.update_cluster(
                    &id,
                    ClusterPatch {
                        internal_endpoint: Some(internal_endpoint),
                        development: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            }
            return Ok(Some(ClusterId::from_trusted(id)));
        }
        // No `local` (renamed or removed by the operator): the node serves the first cluster
        // made, left as the operator set it.
        if let Some(c) = cluster::Entity::find()
            .order_by_asc(cluster::Column::CreatedAt)
            .order_by_asc(cluster::Column::Id)
            .one(&self.db)
            .await?
        {
            return Ok(Some(ClusterId::from_trusted(c.id)));
        }
        let c = self
            .create_cluster(ClusterIn {
                name: "local".into(),
                region: "local".into(),
                endpoint,
                internal_endpoint,
                development: true,
                capacity_apps: 10_000,
                config_public_key: None,
                status: None,
            })
            .await?;
        Ok(Some(c.id))
    }
}
