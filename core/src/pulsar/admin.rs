//! Pulsar's admin REST API: provisioning Starling's tenant, namespace and topic policies, and
//! granting each role only what it needs (least privilege).
//!
//! Every call carries the token of [`PulsarAuth`] as `Authorization: Bearer …` and trusts the
//! CA file of [`PulsarAuth`] (plus the system's web roots) for `https://` admin URLs.
//!
//! Who may do what, once the broker has `authorizationEnabled=true`:
//!
//! | role | app-config topic(s) | usage / events topics | a cell's own namespace (inboxes) |
//! |---|---|---|---|
//! | control plane ([`grant_control_plane`]) | produce (+ consume: it reads its own feed) | consume | — |
//! | cell ([`grant_cell`]) | consume | produce | produce + consume |
//!
//! A cell's inbox topics are named by node (`<prefix>inbox-<node>`), and nodes come and go,
//! so they cannot be granted one by one: each cell gets its own namespace (topic prefix
//! `persistent://<tenant>/cell-<name>/…`) and its role is granted that namespace; the shared
//! topics live in the control plane's namespace and are granted per topic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::StatusCode;

use super::PulsarAuth;

/// What [`provision`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The Pulsar tenant of the topic prefix.
    pub tenant: String,
    /// The namespace (`tenant/namespace`).
    pub namespace: String,
    /// Whether this call created the tenant (false: it was there).
    pub created_tenant: bool,
    /// Whether this call created the namespace.
    pub created_namespace: bool,
}

/// Splits `persistent://tenant/namespace/rest` into `(tenant, namespace, rest)`.
pub(crate) fn split_topic(topic: &str) -> anyhow::Result<(&str, &str, &str)> {
    let rest = topic.strip_prefix("persistent://").ok_or_else(|| {
        anyhow::anyhow!("{topic:?}: provisioning needs a persistent:// topic (tenant/namespace/…)")
    })?;
    let mut it = rest.splitn(3, '/');
    match (it.next(), it.next(), it.next()) {
        (Some(t), Some(n), Some(r)) if !t.is_empty() && !n.is_empty() => Ok((t, n, r)),
        _ => anyhow::bail!("{topic:?}: expected persistent://tenant/namespace/name"),
    }
}

/// Splits a full topic name and refuses an empty local name.
fn split_full_topic(topic: &str) -> anyhow::Result<(&str, &str, &str)> {
    let (t, n, name) = split_topic(topic)?;
    if name.is_empty() || name.contains('/') {
        anyhow::bail!("{topic:?}: expected persistent://tenant/namespace/name");
    }
    Ok((t, n, name))
}

/// A client of the admin REST API at one base URL.
pub(crate) struct Admin {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Admin {
    pub(crate) fn new(admin_url: &str, auth: &PulsarAuth) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(ca) = &auth.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                anyhow::anyhow!("pulsar.tls_ca_file: cannot read {}: {e}", ca.display())
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!("pulsar.tls_ca_file: {} is not PEM: {e}", ca.display())
            })? {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(Self {
            base: admin_url.trim_end_matches('/').to_owned(),
            http: b.build()?,
            token: auth.token.clone(),
        })
    }

    pub(crate) fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn ctx(&self, what: &str) -> String {
        format!("Pulsar admin API at {}: {what}", self.base)
    }

    /// Sends one request; `ok` lists the statuses that mean done besides 2xx (409: it already
    /// exists).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
        ok: &[StatusCode],
    ) -> anyhow::Result<StatusCode> {
        let what = self.ctx(what);
        let res = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let status = res.status();
        if status.is_success() || ok.contains(&status) {
            Ok(status)
        } else {
            let body = res.text().await.unwrap_or_default();
            anyhow::bail!(
                "{what}: {status} {}",
                body.chars().take(300).collect::<String>()
            )
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> anyhow::Result<T> {
        let res = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.ctx(what)))?;
        Ok(res.json().await?)
    }

    /// Creates the tenant (allowed on every cluster the broker knows) and the namespace.
    async fn ensure_namespace(
        &self,
        tenant: &str,
        namespace: &str,
    ) -> anyhow::Result<(bool, bool)> {
        let clusters: Vec<String> = self
            .get_json("/admin/v2/clusters", "listing clusters")
            .await?;
        let created_tenant = self
            .send(
                self.req(reqwest::Method::PUT, &format!("/admin/v2/tenants/{tenant}"))
                    .json(&serde_json::json!({"allowedClusters": clusters, "adminRoles": []})),
                &format!("creating tenant {tenant}"),
                &[StatusCode::CONFLICT],
            )
            .await?
            != StatusCode::CONFLICT;
        let created_namespace = self
            .send(
                self.req(
                    reqwest::Method::PUT,
                    &format!("/admin/v2/namespaces/{tenant}/{namespace}"),
                ),
                &format!("creating namespace {tenant}/{namespace}"),
                &[StatusCode::CONFLICT],
            )
            .await?
            != StatusCode::CONFLICT;
        Ok((created_tenant, created_namespace))
    }

    /// Creates a non-partitioned topic unless it exists (grants need the topic to exist).
    async fn ensure_topic(&self, topic: &str) -> anyhow::Result<()> {
        let (t, n, name) = split_full_topic(topic)?;
        self.send(
            self.req(
                reqwest::Method::PUT,
                &format!("/admin/v2/persistent/{t}/{n}/{name}"),
            ),
            &format!("creating topic {topic}"),
            &[StatusCode::CONFLICT],
        )
        .await?;
        Ok(())
    }

    /// Sets `role`'s actions on `topic` (Pulsar replaces the role's earlier actions on it).
    async fn grant_topic(&self, topic: &str, role: &str, actions: &[&str]) -> anyhow::Result<()> {
        let (t, n, name) = split_full_topic(topic)?;
        self.ensure_topic(topic).await?;
        self.send(
            self.req(
                reqwest::Method::POST,
                &format!("/admin/v2/persistent/{t}/{n}/{name}/permissions/{role}"),
            )
            .json(&actions),
            &format!("granting {role} {actions:?} on {topic}"),
            &[],
        )
        .await?;
        Ok(())
    }

    /// Sets `role`'s actions on every topic of `tenant/namespace`.
    async fn grant_namespace(
        &self,
        tenant: &str,
        namespace: &str,
        role: &str,
        actions: &[&str],
    ) -> anyhow::Result<()> {
        self.send(
            self.req(
                reqwest::Method::POST,
                &format!("/admin/v2/namespaces/{tenant}/{namespace}/permissions/{role}"),
            )
            .json(&actions),
            &format!("granting {role} {actions:?} on namespace {tenant}/{namespace}"),
            &[],
        )
        .await?;
        Ok(())
    }

    /// Grants per topic, merging the actions of a topic named in several lists.
    async fn grant_topics(&self, role: &str, grants: &[(&[String], &str)]) -> anyhow::Result<()> {
        let mut by_topic: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (topics, action) in grants {
            for t in *topics {
                split_full_topic(t)?;
                by_topic.entry(t.as_str()).or_default().insert(action);
            }
        }
        for (topic, actions) in by_topic {
            let actions: Vec<&str> = actions.into_iter().collect();
            self.grant_topic(topic, role, &actions).await?;
        }
        Ok(())
    }
}

/// Pulsar role names go into URL paths: keep them to a safe alphabet.
fn check_role(role: &str) -> anyhow::Result<()> {
    if role.is_empty()
        || role.len() > 200
        || !role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
    {
        anyhow::bail!("{role:?}: a Pulsar role must be 1..=200 of [A-Za-z0-9-_.:@]");
    }
    Ok(())
}

/// Makes sure Starling's place in Pulsar exists and is configured, through the broker's admin
/// REST API at `admin_url` (e.g. `https://pulsar:8443`) with `auth` (a token allowed to create
/// tenants: a super-user's), idempotently:
///
/// - the tenant and namespace of `topic_prefix` (the tenant allowed on every cluster the broker
///   knows): a platform's own namespace, so its quotas, policies and permissions are its own and
///   not those of `public/default`;
/// - on an app-config feed topic `feed_topic` (a cell's), its policies: see
///   [`provision_feed_topic`]. The control plane provisions each cell's topic when it first
///   publishes there.
///
/// Node inbox topics keep the namespace defaults: they are consumed by a durable subscription,
/// and what is acknowledged may go.
pub async fn provision(
    admin_url: &str,
    auth: &PulsarAuth,
    topic_prefix: &str,
    feed_topic: Option<&str>,
    compaction_threshold_bytes: u64,
) -> anyhow::Result<Provisioned> {
    let (tenant, namespace, _) = split_topic(topic_prefix)?;
    if let Some(feed_topic) = feed_topic {
        let (ft, fns, _) = split_topic(feed_topic)?;
        // Checked before any call, so a bad pair of names changes nothing in Pulsar.
        if (ft, fns) != (tenant, namespace) {
            anyhow::bail!("{feed_topic:?} is not under the topic prefix {topic_prefix:?}");
        }
    }
    let admin = Admin::new(admin_url, auth)?;
    let (created_tenant, created_namespace) = admin.ensure_namespace(tenant, namespace).await?;
    if let Some(feed_topic) = feed_topic {
        admin
            .feed_topic_policies(feed_topic, compaction_threshold_bytes)
            .await?;
    }
    Ok(Provisioned {
        tenant: tenant.to_owned(),
        namespace: format!("{tenant}/{namespace}"),
        created_tenant,
        created_namespace,
    })
}

/// Gives one app-config feed topic (one per cell) its policies, idempotently: infinite
/// retention and no deletion while inactive (without a durable subscription Pulsar may
/// otherwise drop the ledgers that hold the configuration of apps that have not changed for a
/// long time), and a compaction threshold so the broker compacts it by itself and a node's
/// start-up read stays short. Its namespace must exist.
pub async fn provision_feed_topic(
    admin_url: &str,
    auth: &PulsarAuth,
    feed_topic: &str,
    compaction_threshold_bytes: u64,
) -> anyhow::Result<()> {
    Admin::new(admin_url, auth)?
        .feed_topic_policies(feed_topic, compaction_threshold_bytes)
        .await
}

impl Admin {
    async fn feed_topic_policies(
        &self,
        feed_topic: &str,
        compaction_threshold_bytes: u64,
    ) -> anyhow::Result<()> {
        let (ft, fns, fname) = split_topic(feed_topic)?;
        self.ensure_topic(feed_topic).await?;
        let topic = format!("/admin/v2/persistent/{ft}/{fns}/{fname}");
        let post = |what: &str| self.req(reqwest::Method::POST, &format!("{topic}/{what}"));
        self.send(
            post("retention")
                .json(&serde_json::json!({"retentionTimeInMinutes": -1, "retentionSizeInMB": -1})),
            &format!("setting the retention of {feed_topic}"),
            &[],
        )
        .await?;
        self.send(
            post("inactiveTopicPolicies").json(&serde_json::json!({
                "inactiveTopicDeleteMode": "delete_when_no_subscriptions",
                "maxInactiveDurationSeconds": 60,
                "deleteWhileInactive": false,
            })),
            &format!("keeping {feed_topic} while inactive"),
            &[],
        )
        .await?;
        self.send(
            post("compactionThreshold").json(&compaction_threshold_bytes),
            &format!("setting the compaction threshold of {feed_topic}"),
            &[],
        )
        .await?;
        Ok(())
    }
}

/// Grants the control plane's `role` what it needs and nothing more: produce on the app-config
/// topic(s) `feed_topics` (and consume: it reads its own feed back to know every app's latest
/// version), consume on the usage topic(s) `usage_topics`. Run with a super-user's `auth`
/// (the topics are created if missing: Pulsar grants on existing topics only). Idempotent.
pub async fn grant_control_plane(
    admin_url: &str,
    auth: &PulsarAuth,
    role: &str,
    feed_topics: &[String],
    usage_topics: &[String],
) -> anyhow::Result<()> {
    check_role(role)?;
    let admin = Admin::new(admin_url, auth)?;
    admin
        .grant_topics(
            role,
            &[
                (feed_topics, "produce"),
                (feed_topics, "consume"),
                (usage_topics, "consume"),
            ],
        )
        .await
}

/// The shared topics a cell may use, in the control plane's namespace.
#[derive(Debug, Clone, Default)]
pub struct CellTopics {
    /// Topics the cell reads: its app-config feed topic(s).
    pub consume: Vec<String>,
    /// Topics the cell writes: the usage (and events) topics.
    pub produce: Vec<String>,
}

/// Grants a cell's `cell_role` its own namespace — the one of `cell_topic_prefix`
/// (`persistent://tenant/cell-<name>/…`, created if missing), where its node inboxes live —
/// for produce and consume, and on the shared topics only `shared.consume` (consume) and
/// `shared.produce` (produce). Nothing else: not another cell's inboxes, not producing on the
/// app-config feed. Run with a super-user's `auth`. Idempotent.
pub async fn grant_cell(
    admin_url: &str,
    auth: &PulsarAuth,
    cell_topic_prefix: &str,
    cell_role: &str,
    shared: &CellTopics,
) -> anyhow::Result<()> {
    check_role(cell_role)?;
    let (tenant, namespace, _) = split_topic(cell_topic_prefix)?;
    let admin = Admin::new(admin_url, auth)?;
    admin.ensure_namespace(tenant, namespace).await?;
    admin
        .grant_namespace(tenant, namespace, cell_role, &["consume", "produce"])
        .await?;
    admin
        .grant_topics(
            cell_role,
            &[(&shared.consume, "consume"), (&shared.produce, "produce")],
        )
        .await
}

/// The Pulsar role a cell's nodes connect as: `starling-cell-<cluster id>` (lower case). The
/// operator mints the nodes' token for this role (`pulsar tokens create --subject …`); the
/// control plane grants it what [`provision_cell`] lists, and nothing else.
pub fn cell_role(cluster_id: &str) -> String {
    format!("starling-cell-{}", cluster_id.to_lowercase())
}

/// The topic prefix of a cell's own namespace, where its nodes' inbox topics live: the
/// namespace of `topic_prefix` with `-cell-<cluster id>` appended, e.g.
/// `persistent://starling/platform/starling-` → `persistent://starling/platform-cell-cls_…/starling-`.
/// The shared topics (each cell's app-config feed and usage topic) stay in the namespace of
/// `topic_prefix`, which only the control plane's role may use as a whole.
pub fn cell_topic_prefix(topic_prefix: &str, cluster_id: &str) -> anyhow::Result<String> {
    let (tenant, namespace, local) = split_topic(topic_prefix)?;
    Ok(format!(
        "persistent://{tenant}/{namespace}-cell-{}/{local}",
        cluster_id.to_lowercase()
    ))
}

/// Provisions one cell on the bus, idempotently, with a super-user's `auth`: its app-config
/// feed topic with the feed's policies (see [`provision_feed_topic`]), its usage topic, its own
/// namespace ([`cell_topic_prefix`]) for its nodes' inboxes, and for its role ([`cell_role`]):
/// consume on its feed, produce on its usage topic, produce and consume on its own namespace.
/// The control plane runs this when a cluster is registered and, for every cluster, at start.
pub async fn provision_cell(
    admin_url: &str,
    auth: &PulsarAuth,
    topic_prefix: &str,
    cluster_id: &str,
    compaction_threshold_bytes: u64,
) -> anyhow::Result<()> {
    let feed = super::feed_topic(topic_prefix, cluster_id);
    let usage = super::usage_topic(topic_prefix, cluster_id);
    Admin::new(admin_url, auth)?
        .feed_topic_policies(&feed, compaction_threshold_bytes)
        .await?;
    grant_cell(
        admin_url,
        auth,
        &cell_topic_prefix(topic_prefix, cluster_id)?,
        &cell_role(cluster_id),
        &CellTopics {
            consume: vec![feed],
            produce: vec![usage],
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appconfig::conformance::signed;
    use crate::appconfig::{ConfigFeed, ConfigUpdate};
    use crate::id::AppId;
    use crate::pulsar::testenv::{admin_auth, env};
    use crate::pulsar::{PulsarFeed, connect};
    use std::time::Duration;

    /// Provisioning against the real broker's admin API (`TEST_PULSAR_ADMIN_URL`): a fresh tenant
    /// and namespace are made, a second run finds them, the feed topic gets its policies, and
    /// once the broker has compacted the topic it holds one message per app, from which a new
    /// reader rebuilds the latest configuration of every app.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn provisioning_makes_a_compacted_feed_namespace() {
        let (url, admin, auth) = (
            env("TEST_PULSAR_URL"),
            env("TEST_PULSAR_ADMIN_URL"),
            admin_auth(),
        );
        let run = ulid::Ulid::new().to_string().to_lowercase();
        let prefix = format!("persistent://starling-test-{run}/cell/starling-");
        let topic = format!("{prefix}app-config");
        let first = provision(&admin, &auth, &prefix, Some(&topic), 1024)
            .await
            .unwrap();
        assert_eq!(first.namespace, format!("starling-test-{run}/cell"));
        assert!(first.created_tenant && first.created_namespace, "{first:?}");
        let second = provision(&admin, &auth, &prefix, Some(&topic), 1024)
            .await
            .unwrap();
        assert!(
            !second.created_tenant && !second.created_namespace,
            "{second:?}"
        );
        let api = Admin::new(&admin, &auth).unwrap();
        let topic_url =
            format!("/admin/v2/persistent/starling-test-{run}/cell/starling-app-config");
        let get = |what: &'static str| {
            let (api, u) = (&api, format!("{topic_url}/{what}"));
            async move { api.get_json::<serde_json::Value>(&u, what).await.unwrap() }
        };
        assert_eq!(get("retention").await["retentionTimeInMinutes"], -1);
        assert_eq!(get("compactionThreshold").await, 1024);
        assert_eq!(
            get("inactiveTopicPolicies").await["deleteWhileInactive"],
            false
        );

        let client = connect(&url, &auth, Duration::from_secs(30)).await.unwrap();
        let feed = PulsarFeed::open(&client, &topic).await.unwrap();
        let (a, b) = (AppId::generate(), AppId::generate());
        let mut last_a = 0;
        for _ in 0..3 {
            last_a = crate::appconfig::next_version();
            feed.publish(signed(ConfigUpdate::Delete {
                app_id: a.clone(),
                version: last_a,
            }))
            .await
            .unwrap();
        }
        let last_b = crate::appconfig::next_version();
        feed.publish(signed(ConfigUpdate::Delete {
            app_id: b.clone(),
            version: last_b,
        }))
        .await
        .unwrap();
        // Compact now rather than wait for the threshold check (every 60 s by default).
        let r = api
            .req(reqwest::Method::PUT, &format!("{topic_url}/compaction"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let st = get("compaction").await;
            if st["status"] == "SUCCESS" {
                break;
            }
            assert_ne!(st["status"], "ERROR", "{st}");
            assert!(std::time::Instant::now() < deadline, "not compacted: {st}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let stats = get("internalStats").await;
        assert_eq!(
            stats["compactedLedger"]["entries"], 2,
            "one message per app after compaction: {stats}"
        );
        let late = PulsarFeed::open(&client, &topic).await.unwrap();
        let mut view: Vec<_> = late
            .snapshot()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.app_id().clone(), u.version()))
            .collect();
        view.sort();
        let mut want = vec![(a, last_a), (b, last_b)];
        want.sort();
        assert_eq!(
            view, want,
            "the latest update of each app survives compaction"
        );
    }

    /// Port 1 on loopback answers nothing: the error must come from the check, before any call.
    #[tokio::test]
    async fn a_feed_topic_outside_the_prefix_is_refused_before_any_call() {
        let e = provision(
            "http://127.0.0.1:1",
            &PulsarAuth::default(),
            "persistent://a/b/x-",
            Some("persistent://a/c/x-app-config"),
            1,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("not under the topic prefix"), "{e}");
    }

    #[test]
    fn a_cell_has_its_own_namespace_and_role() {
        assert_eq!(
            cell_topic_prefix("persistent://starling/platform/starling-", "cls_01ABC").unwrap(),
            "persistent://starling/platform-cell-cls_01abc/starling-"
        );
        assert!(cell_topic_prefix("starling-", "cls_01abc").is_err());
        assert_eq!(cell_role("cls_01ABC"), "starling-cell-cls_01abc");
        check_role(&cell_role("cls_01jdq3v9k6b2c8x4m7n5p0r1st")).unwrap();
    }

    #[test]
    fn topic_names_split_into_tenant_and_namespace() {
        assert_eq!(
            split_topic("persistent://starling/cell-1/starling-").unwrap(),
            ("starling", "cell-1", "starling-")
        );
        assert!(split_topic("non-persistent://a/b/c").is_err());
        assert!(split_topic("persistent://a").is_err());
        assert!(split_topic("persistent:///b/c").is_err());
    }
}
