//! The control plane provisions each cell on the bus when the cell is registered (and every
//! cell again at start): the cell's feed, its usage topic, its own namespace for its nodes'
//! inboxes, and its role's grants on exactly those. Against the real broker of
//! `scripts/pulsar.sh` (TLS, token authentication, authorization on).
//!
//! Before this, nothing in the binary granted anything: every cell ran with a token the
//! operator had granted the whole platform namespace (the end-to-end tests did so by hand), so a
//! node of one cell could read another cell's feed, write into its inboxes and bill its apps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde_json::json;
use starling_core::appconfig::{CellFeeds, ConfigFeed, FeedError};
use starling_core::pulsar::probe::{try_connect, try_consume, try_produce};
use starling_core::pulsar::{self, PulsarAuth};
use starling_core::signing::SigningKey;

use crate::harness::{Backend, Server, unique};

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!("{k} is not set: run the tests with scripts/test, which starts Pulsar")
    })
}

struct Broker {
    url: String,
    admin_url: String,
    superuser: PulsarAuth,
    secret: Vec<u8>,
}

impl Broker {
    fn from_env() -> Broker {
        Broker {
            url: var("TEST_PULSAR_URL"),
            admin_url: var("TEST_PULSAR_ADMIN_URL"),
            superuser: PulsarAuth {
                token: Some(var("TEST_PULSAR_ADMIN_TOKEN")),
                ca_file: Some(var("TEST_PULSAR_CA_FILE").into()),
            },
            secret: base64::engine::general_purpose::STANDARD
                .decode(var("TEST_PULSAR_TOKEN_SECRET"))
                .expect("TEST_PULSAR_TOKEN_SECRET is base64"),
        }
    }

    /// A token of `role`, as `pulsar tokens create --secret-key … --subject role` makes it.
    fn role(&self, role: &str) -> PulsarAuth {
        PulsarAuth {
            token: Some(pulsar::hs256_token(&self.secret, role).unwrap()),
            ca_file: self.superuser.ca_file.clone(),
        }
    }

    /// Feeds publishing on this broker under `prefix`, provisioning cells with `admin_auth`,
    /// as `starling control-plane` with `pulsar.admin_url` runs.
    async fn feeds(&self, prefix: &str, admin_auth: PulsarAuth) -> pulsar::PulsarCellFeeds {
        let client = pulsar::connect(&self.url, &self.superuser, Duration::from_secs(30))
            .await
            .unwrap();
        pulsar::PulsarCellFeeds::new(
            client,
            prefix,
            Some((self.admin_url.clone(), admin_auth, 1 << 20)),
        )
    }
}

/// The control plane's feeds, switched to `refusing` (feeds whose admin token the broker
/// refuses) once the test server is up: the harness registers a cluster at start.
struct Switch {
    working: pulsar::PulsarCellFeeds,
    refusing: pulsar::PulsarCellFeeds,
    refuse: AtomicBool,
}

#[async_trait::async_trait]
impl CellFeeds for Switch {
    async fn feed(&self, cluster_id: &str) -> Result<Arc<dyn ConfigFeed>, FeedError> {
        if self.refuse.load(Ordering::SeqCst) {
            self.refusing.feed(cluster_id).await
        } else {
            self.working.feed(cluster_id).await
        }
    }
}

async fn control_plane(feeds: Arc<dyn CellFeeds>) -> Server {
    let key = SigningKey::generate();
    Server::start_custom(Backend::Sqlite, move |cp| cp.with_feed(feeds, key)).await
}

fn cluster(name: &str) -> serde_json::Value {
    json!({"name": unique(name), "region": "local", "capacity_apps": 5, "endpoint": "wss://cell.example.com"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_cell_grants_its_role_its_own_topics_only() {
    let b = Broker::from_env();
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let prefix = format!("persistent://grants-{run}/platform/starling-");
    // What `control-plane` does at start with pulsar.admin_url.
    pulsar::provision(&b.admin_url, &b.superuser, &prefix, None, 1 << 20)
        .await
        .unwrap();
    let s = control_plane(Arc::new(b.feeds(&prefix, b.superuser.clone()).await)).await;
    let a = s
        .ok(Method::POST, "/admin/v1/clusters", Some(cluster("a")))
        .await;
    let c = s
        .ok(Method::POST, "/admin/v1/clusters", Some(cluster("c")))
        .await;
    let (a, c) = (a["id"].as_str().unwrap(), c["id"].as_str().unwrap());
    let inbox = |cell: &str| {
        format!(
            "{}inbox-node-1",
            pulsar::cell_topic_prefix(&prefix, cell).unwrap()
        )
    };
    let node_of_a = try_connect(&b.url, &b.role(&pulsar::cell_role(a)))
        .await
        .unwrap();

    // What a node of cell A needs works, so the refusals below are about the grants.
    let feed = pulsar::PulsarFeed::open(&node_of_a, &pulsar::feed_topic(&prefix, a))
        .await
        .expect("a node reads its cell's feed");
    feed.snapshot().await.expect("to its end");
    try_produce(&node_of_a, &pulsar::usage_topic(&prefix, a))
        .await
        .expect("a node writes its cell's usage");
    try_produce(&node_of_a, &inbox(a))
        .await
        .expect("a node writes into its cell's inboxes");
    try_consume(&node_of_a, &inbox(a))
        .await
        .expect("a node reads its own inbox");

    let attempts = [
        (
            "produce app configuration on its own feed",
            try_produce(&node_of_a, &pulsar::feed_topic(&prefix, a)).await,
        ),
        (
            "read cell C's feed",
            try_consume(&node_of_a, &pulsar::feed_topic(&prefix, c)).await,
        ),
        (
            "bill on cell C's usage topic",
            try_produce(&node_of_a, &pulsar::usage_topic(&prefix, c)).await,
        ),
        (
            "read usage reports",
            try_consume(&node_of_a, &pulsar::usage_topic(&prefix, a)).await,
        ),
        (
            "write into cell C's inboxes",
            try_produce(&node_of_a, &inbox(c)).await,
        ),
        (
            "read cell C's inboxes",
            try_consume(&node_of_a, &inbox(c)).await,
        ),
        (
            "use the platform's namespace",
            try_produce(&node_of_a, &format!("{prefix}anything")).await,
        ),
    ];
    let allowed: Vec<_> = attempts
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(what, _)| *what)
        .collect();
    assert!(
        allowed.is_empty(),
        "a node of cell A was allowed to: {allowed:?}"
    );

    // A role no cluster was registered for gets nothing at all.
    let stranger = try_connect(&b.url, &b.role(&pulsar::cell_role("cls_unregistered")))
        .await
        .unwrap();
    assert!(
        try_consume(&stranger, &pulsar::feed_topic(&prefix, a))
            .await
            .is_err()
    );
}

/// When the bus refuses to provision the cell (here: the control plane's admin token has no
/// admin rights), registering it fails with 503 `unavailable` and leaves no cluster behind, so
/// an operator never registers a cell whose nodes cannot start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_the_bus_cannot_provision_is_not_registered() {
    let b = Broker::from_env();
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let prefix = format!("persistent://grants-{run}/platform/starling-");
    pulsar::provision(&b.admin_url, &b.superuser, &prefix, None, 1 << 20)
        .await
        .unwrap();
    let switch = Arc::new(Switch {
        working: b.feeds(&prefix, b.superuser.clone()).await,
        refusing: b.feeds(&prefix, b.role("not-an-admin")).await,
        refuse: AtomicBool::new(false),
    });
    let s = control_plane(switch.clone()).await;
    switch.refuse.store(true, Ordering::SeqCst);
    let before = s.ok(Method::GET, "/admin/v1/clusters", None).await;
    let (status, body) = s
        .call(Method::POST, "/admin/v1/clusters", Some(cluster("refused")))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    let after = s.ok(Method::GET, "/admin/v1/clusters", None).await;
    assert_eq!(after["data"], before["data"], "no cluster was left behind");
}
