//! Attacks on the app-configuration feed: whoever can write to the bus tries to forge, inflate,
//! replay or redirect updates. A node applies only what the control plane signed for its own
//! cell; every refusal is counted. (Before signed per-cell feeds, each of these was applied.)
use std::time::Duration;

use reqwest::{Method, StatusCode};
use starling_core::appconfig::{ConfigFeed, ConfigUpdate, KeyConfig, SignedUpdate};
use starling_core::id::AppId;
use starling_core::limits::Limits;
use starling_core::secret::{KeyHasher, generate_api_key};
use starling_core::signing::SigningKey;

use crate::harness::{Backend, CLUSTER_ID, Cell, control_plane_key, signed};

/// Publishes on the cell's feed and gives the nodes time to apply what they would apply.
async fn push(cell: &Cell, update: SignedUpdate) {
    cell.feed.publish(update).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn rejected(cell: &Cell) -> u64 {
    cell.nodes
        .iter()
        .map(|n| n.messaging.directory.rejected_total())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_inflated_replayed_and_misdirected_updates_are_refused() {
    let cell = Cell::start(Backend::Sqlite).await;
    let a = cell.app(Limits::default()).await;
    cell.user(&a, "alice").await;
    let (st, _) = cell.api(&a, Method::GET, "/v1/users/alice", None).await;
    assert_eq!(st, StatusCode::OK);
    let before = rejected(&cell);

    // 1. A forger's own key signs app A's config with a key of the forger's and the highest
    // version there is (so that every later genuine update, revocations included, would lose).
    let forger = SigningKey::generate();
    let stolen = generate_api_key();
    let mut evil = a.cfg.clone();
    evil.version = i64::MAX;
    evil.keys.push(KeyConfig {
        id: stolen.id.clone(),
        secret_hash: KeyHasher::new("dp-test-key-hash-secret-0123456789abcdef")
            .hash(&stolen.secret),
        scopes: vec!["server_full".into()],
        expires_at: None,
        revoked: false,
    });
    push(
        &cell,
        SignedUpdate::sign(&forger, CLUSTER_ID, &ConfigUpdate::Upsert(evil.clone())),
    )
    .await;
    // 2. The same, under the control plane's key id.
    let mut lying = SignedUpdate::sign(&forger, CLUSTER_ID, &ConfigUpdate::Upsert(evil.clone()));
    lying.kid = control_plane_key().kid().to_owned();
    push(&cell, lying).await;
    // 3. A genuine update whose unsigned envelope version is raised.
    let mut bumped = signed(ConfigUpdate::Upsert(a.cfg.clone()));
    bumped.version = i64::MAX;
    push(&cell, bumped).await;
    let (st, body, _) = cell
        .api_h(&stolen.token, Method::GET, "/v1/users/alice", None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the forged key works: {body}");

    // A genuine suspension, later, still takes effect: no forged version blocks it.
    let mut suspended = a.cfg.clone();
    suspended.suspended = Some("app_suspended".into());
    let suspended = cell.publish(suspended).await;
    let (st, body) = cell.api(&a, Method::GET, "/v1/users/alice", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "app_suspended");

    // 4. Replaying the genuine, older, active config does not lift the suspension.
    push(&cell, signed(ConfigUpdate::Upsert(a.cfg.clone()))).await;
    let (st, _) = cell.api(&a, Method::GET, "/v1/users/alice", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a replay lifted the suspension");
    assert!(suspended.version > a.cfg.version);

    // 5. The control plane's genuine update for another cell's app is not this cell's business.
    let b_app = AppId::generate();
    let k = generate_api_key();
    let mut b = a.cfg.clone();
    b.app_id = b_app.clone();
    b.suspended = None;
    b.keys = vec![KeyConfig {
        id: k.id.clone(),
        secret_hash: KeyHasher::new("dp-test-key-hash-secret-0123456789abcdef").hash(&k.secret),
        scopes: vec!["server_full".into()],
        expires_at: None,
        revoked: false,
    }];
    b.token_secrets.clear();
    push(
        &cell,
        SignedUpdate::sign(
            control_plane_key(),
            "cls_01JOTHERCE110000000000000",
            &ConfigUpdate::Upsert(b),
        ),
    )
    .await;
    for n in &cell.nodes {
        assert!(
            n.messaging.directory.app(&b_app).is_none(),
            "another cell's app was loaded"
        );
    }
    let (st, _, _) = cell
        .api_h(&k.token, Method::GET, "/v1/users/alice", None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Every refusal was counted: 1 + 2 + 3 + 5 on each node.
    assert_eq!(rejected(&cell) - before, 4 * cell.nodes.len() as u64);
}
