//! The app-configuration feeds: each cell receives only the apps placed on it, signed for that
//! cell; moving an app removes it from the old cell's view before the new cell learns it, and
//! deleting it removes it from its cell. (Before per-cell feeds, every cell read every app.)
use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use starling_core::appconfig::{CellFeeds, ConfigUpdate, InProcessCellFeeds, Rejected};
use starling_core::signing::{SigningKey, Verifier};

use crate::harness::{Backend, Server, unique};

/// The latest update of `app` on `cluster`'s feed, opened as that cell's nodes open it.
async fn latest(
    feeds: &InProcessCellFeeds,
    trust: &Verifier,
    cluster: &str,
    app: &str,
) -> Option<ConfigUpdate> {
    let snap = feeds.feed(cluster).await.unwrap().snapshot().await.unwrap();
    snap.into_iter()
        .find(|u| u.app_id().as_str() == app)
        .map(|u| u.open(trust, cluster).expect("signed for this cell"))
}

async fn each_cell_gets_only_its_apps(backend: Backend) {
    let feeds = Arc::new(InProcessCellFeeds::new());
    let key = SigningKey::generate();
    let trust = Verifier::new([key.public_key()]);
    let (f, k) = (feeds.clone(), key.clone());
    let s = Server::start_custom(backend, move |cp| cp.with_feed(f, k)).await;
    let region = unique("r").replace('-', "");
    let cluster = |name: &str| json!({"name": unique(name), "region": region, "capacity_apps": 5, "endpoint": "wss://cell.example.com"});
    let c1 = s
        .ok(Method::POST, "/admin/v1/clusters", Some(cluster("c1")))
        .await;
    let c2 = s
        .ok(Method::POST, "/admin/v1/clusters", Some(cluster("c2")))
        .await;
    let (c1, c2) = (c1["id"].as_str().unwrap(), c2["id"].as_str().unwrap());
    let t = s.tenant().await;
    let a = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "a", "cluster_id": c1})),
        )
        .await;
    let a = a["id"].as_str().unwrap();
    let k = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps/{a}/api-keys"),
            Some(json!({"name": "backend"})),
        )
        .await;

    match latest(&feeds, &trust, c1, a).await {
        Some(ConfigUpdate::Upsert(cfg)) => {
            assert!(cfg.keys.iter().any(|x| x.id.as_str() == k["id"]), "{cfg:?}");
            assert!(!cfg.token_secrets.is_empty());
        }
        other => panic!("cell 1 does not have the app: {other:?}"),
    }
    assert!(
        latest(&feeds, &trust, c2, a).await.is_none(),
        "cell 2 learned an app placed on cell 1"
    );
    // What cell 1 receives is of no use to cell 2's nodes.
    let on_c1 = feeds.feed(c1).await.unwrap().snapshot().await.unwrap();
    let mine = on_c1.iter().find(|u| u.app_id().as_str() == a).unwrap();
    assert!(matches!(mine.open(&trust, c2), Err(Rejected::OtherCell(_))));

    // Moving the app: the old cell's view drops it (keys and secrets with it).
    s.ok(
        Method::POST,
        &format!("/admin/v1/tenants/{t}/apps/{a}/placement"),
        Some(json!({"cluster_id": c2})),
    )
    .await;
    assert!(
        matches!(
            latest(&feeds, &trust, c1, a).await,
            Some(ConfigUpdate::Delete { .. })
        ),
        "the old cell still holds the moved app"
    );
    assert!(matches!(
        latest(&feeds, &trust, c2, a).await,
        Some(ConfigUpdate::Upsert(_))
    ));

    s.ok(
        Method::DELETE,
        &format!("/admin/v1/tenants/{t}/apps/{a}"),
        None,
    )
    .await;
    assert!(matches!(
        latest(&feeds, &trust, c2, a).await,
        Some(ConfigUpdate::Delete { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cell_gets_only_its_apps_sqlite() {
    each_cell_gets_only_its_apps(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cell_gets_only_its_apps_postgres() {
    each_cell_gets_only_its_apps(Backend::Postgres).await;
}

/// A cluster with a config key gets every update sealed to it; a bad key is refused naming the
/// field; changing the key republishes the cell's apps sealed to the new one (a rotation), and
/// clearing it sends them in clear again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cells_config_key_seals_its_updates_and_rotates() {
    use starling_core::cellkey::{CellKeys, CellSecretKey};
    let feeds = Arc::new(InProcessCellFeeds::new());
    let key = SigningKey::generate();
    let trust = Verifier::new([key.public_key()]);
    let (f, k) = (feeds.clone(), key.clone());
    let s = Server::start_custom(Backend::Sqlite, move |cp| cp.with_feed(f, k)).await;
    let (old, new) = (CellSecretKey::generate(), CellSecretKey::generate());
    let body = |key: &str| json!({"name": unique("sealed"), "region": "local", "capacity_apps": 5, "config_public_key": key});
    let (st, v) = s
        .call(Method::POST, "/admin/v1/clusters", Some(body("not-a-key")))
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("config_public_key"),
        "{v}"
    );
    let c = s
        .ok(
            Method::POST,
            "/admin/v1/clusters",
            Some(body(&old.public_key().to_text())),
        )
        .await;
    assert_eq!(c["config_public_key"], old.public_key().to_text());
    let c = c["id"].as_str().unwrap();
    let t = s.tenant().await;
    let a = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "a", "cluster_id": c})),
        )
        .await;
    let a = a["id"].as_str().unwrap();
    let latest_raw = || async {
        let snap = feeds.feed(c).await.unwrap().snapshot().await.unwrap();
        snap.into_iter().find(|u| u.app_id().as_str() == a).unwrap()
    };
    let u = latest_raw().await;
    assert_eq!(u.enc.as_deref(), Some(old.kid()));
    assert!(matches!(u.open(&trust, c), Err(Rejected::Sealed(_))));
    match u.open_with(&trust, c, &CellKeys::new([old.clone()])) {
        Ok(ConfigUpdate::Upsert(cfg)) => {
            let secret = &cfg.token_secrets[0].secret;
            assert!(!u.payload.contains(secret.as_str()));
        }
        other => panic!("{other:?}"),
    }

    // Rotation: the nodes hold both keys; the cluster moves to the new one.
    s.ok(
        Method::PATCH,
        &format!("/admin/v1/clusters/{c}"),
        Some(json!({"config_public_key": new.public_key().to_text()})),
    )
    .await;
    let u = latest_raw().await;
    assert_eq!(
        u.enc.as_deref(),
        Some(new.kid()),
        "republished to the new key"
    );
    assert!(u.open_with(&trust, c, &CellKeys::new([new, old])).is_ok());

    s.ok(
        Method::PATCH,
        &format!("/admin/v1/clusters/{c}"),
        Some(json!({"config_public_key": null})),
    )
    .await;
    let u = latest_raw().await;
    assert_eq!(u.enc, None);
    assert!(u.open(&trust, c).is_ok());
}
