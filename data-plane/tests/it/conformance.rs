//! The bus and the registry: one conformance suite, run against the in-process implementations
//! (in the crate's unit tests) and here against the real ones: Pulsar and Redis started by
//! `scripts/test`.
use std::time::Duration;

use starling_data_plane::pulsar_bus::PulsarBus;
use starling_data_plane::redis_registry::RedisRegistry;
use starling_data_plane::registry::Registry;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which starts the services")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulsar_bus_conforms() {
    let auth = starling_core::pulsar::PulsarAuth {
        token: Some(env("TEST_PULSAR_ADMIN_TOKEN")),
        ca_file: Some(env("TEST_PULSAR_CA_FILE").into()),
    };
    let client =
        starling_core::pulsar::connect(&env("TEST_PULSAR_URL"), &auth, Duration::from_secs(30))
            .await
            .expect("connect Pulsar");
    let prefix = format!("persistent://public/default/test-{}-", ulid::Ulid::new());
    let bus = PulsarBus::new(client, &prefix);
    starling_data_plane::bus::conformance::run(&bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_registry_conforms() {
    let r = RedisRegistry::connect(&env("TEST_REDIS_URL"), Duration::from_secs(30))
        .await
        .expect("connect Redis");
    starling_data_plane::registry::conformance::run(&r).await;
}

/// A dead node's connections vanish after the TTL; a live node's stay while it heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_registry_forgets_dead_nodes() {
    let r = RedisRegistry::connect(&env("TEST_REDIS_URL"), Duration::from_millis(600))
        .await
        .unwrap();
    let app = format!("app_{}", ulid::Ulid::new());
    r.connect(&app, "alive", "n1", "c1").await.unwrap();
    r.connect(&app, "dead", "n2", "c2").await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        r.heartbeat("n1", &[(app.clone(), "alive".into(), "c1".into())])
            .await
            .unwrap();
    }
    assert!(r.online(&app, "alive").await.unwrap(), "heartbeats keep it");
    assert!(!r.online(&app, "dead").await.unwrap(), "no heartbeat: gone");
    let loc = r
        .locate(&app, &["alive".into(), "dead".into()])
        .await
        .unwrap();
    assert_eq!(loc.len(), 1);
    assert_eq!(loc["n1"], vec!["alive".to_owned()]);
    let c = r.connect(&app, "new", "n1", "c3").await.unwrap();
    assert_eq!(
        c.app, 2,
        "the dead connection no longer counts against the app"
    );
}

/// Redis restarted without persistence: the next heartbeat puts the node's connections back
/// and names them, so the node can tell their clients to catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_registry_heartbeat_restores_lost_connections() {
    let r = RedisRegistry::connect(&env("TEST_REDIS_URL"), Duration::from_secs(30))
        .await
        .unwrap();
    let app = format!("app_{}", ulid::Ulid::new());
    r.connect(&app, "alice", "n1", "c1").await.unwrap();
    r.connect(&app, "bob", "n1", "c2").await.unwrap();
    let live = vec![
        (app.clone(), "alice".to_owned(), "c1".to_owned()),
        (app.clone(), "bob".to_owned(), "c2".to_owned()),
    ];
    assert!(r.heartbeat("n1", &live).await.unwrap().is_empty());
    // Lose bob's entry as a restarted Redis would.
    let client = redis::Client::open(env("TEST_REDIS_URL")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("starling:reg:{{{app}}}:user:bob"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!r.online(&app, "bob").await.unwrap());
    assert_eq!(r.heartbeat("n1", &live).await.unwrap(), vec!["c2"]);
    assert!(r.online(&app, "bob").await.unwrap());
    let loc = r.locate(&app, &["bob".into()]).await.unwrap();
    assert_eq!(loc.get("n1"), Some(&vec!["bob".to_owned()]));
    assert!(r.heartbeat("n1", &live).await.unwrap().is_empty());
}

/// A node with many connections (more than one heartbeat pipeline, over two apps): the
/// heartbeat keeps them all, and names exactly the ones Redis lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_registry_heartbeat_of_a_busy_node() {
    let r = RedisRegistry::connect(&env("TEST_REDIS_URL"), Duration::from_secs(30))
        .await
        .unwrap();
    let apps = [
        format!("app_{}", ulid::Ulid::new()),
        format!("app_{}", ulid::Ulid::new()),
    ];
    let mut live = vec![];
    for i in 0..1200 {
        let (app, user, conn) = (&apps[i % 2], format!("u{}", i % 600), format!("c{i}"));
        r.connect(app, &user, "n1", &conn).await.unwrap();
        live.push((app.clone(), user, conn));
    }
    assert!(r.heartbeat("n1", &live).await.unwrap().is_empty());
    // Lose three users' entries (two connections each), in different chunks.
    let client = redis::Client::open(env("TEST_REDIS_URL")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    for u in [3, 301, 599] {
        let app = &apps[u % 2];
        let _: () = redis::cmd("DEL")
            .arg(format!("starling:reg:{{{app}}}:user:u{u}"))
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let mut restored = r.heartbeat("n1", &live).await.unwrap();
    restored.sort();
    assert_eq!(restored, ["c1199", "c3", "c301", "c599", "c603", "c901"]);
    for app in &apps {
        let users: Vec<String> = (0..600).map(|u| format!("u{u}")).collect();
        let loc = r.locate(app, &users).await.unwrap();
        assert_eq!(loc["n1"].len(), 300, "every user of {app} is located");
    }
    assert_eq!(
        r.connect(&apps[0], "new", "n2", "c-new").await.unwrap().app,
        601,
        "the app counts every connection once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rate_limiter_conforms() {
    let l = starling_data_plane::ratelimit::RedisLimiter::connect(&env("TEST_REDIS_URL"))
        .await
        .expect("connect Redis");
    starling_data_plane::ratelimit::conformance::run(&l).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_quota_counters_conform() {
    let q = starling_data_plane::quota::RedisQuotas::connect(&env("TEST_REDIS_URL"))
        .await
        .expect("connect Redis");
    starling_data_plane::quota::conformance::run(&q).await;
}
