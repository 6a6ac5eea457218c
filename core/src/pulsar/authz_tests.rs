//! Attacks on the bus, against the real broker of `scripts/pulsar.sh` (TLS only, token
//! authentication, authorization on). Each one succeeded against the broker of the commit
//! before this one (plain `pulsar://`, no authentication, no authorization): there an
//! anonymous client connected and produced, any client produced and consumed on every topic,
//! and the plain port was the only port — so every assertion below failed there.

use std::time::Duration;

use futures::TryStreamExt;
use pulsar::ConsumerOptions;
use pulsar::consumer::InitialPosition;

use super::probe::{try_connect, try_consume, try_produce};
use super::testenv::{admin_auth, env, role_auth};
use super::*;

/// (a) A client without a token is refused: at connect, or — should a client library defer
/// the handshake — at the first producer. The admin REST API answers 401 too.
/// Before: `pulsar://` with no authentication accepted it and its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_token_is_refused() {
    let url = env("TEST_PULSAR_URL");
    let anonymous = PulsarAuth {
        token: None,
        ca_file: admin_auth().ca_file,
    };
    let topic = format!(
        "persistent://public/default/attack-anon-{}",
        ulid::Ulid::new()
    );
    match try_connect(&url, &anonymous).await {
        Err(_) => {}
        Ok(client) => {
            let r = try_produce(&client, &topic).await;
            assert!(r.is_err(), "an anonymous client produced on {topic}");
        }
    }
    // A forged token (signed with another key) is no better.
    let forged = PulsarAuth {
        token: Some(hs256_token(&[7u8; 32], "admin").unwrap()),
        ca_file: admin_auth().ca_file,
    };
    if let Ok(client) = try_connect(&url, &forged).await {
        let r = try_produce(&client, &topic).await;
        assert!(r.is_err(), "a client with a forged admin token produced");
    }
    let api = admin::Admin::new(&env("TEST_PULSAR_ADMIN_URL"), &anonymous).unwrap();
    let status = api
        .req(reqwest::Method::GET, "/admin/v2/tenants")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    // The positive control: the super-user's token works on the same broker.
    let client = try_connect(&url, &admin_auth()).await.unwrap();
    try_produce(&client, &topic).await.unwrap();
}

/// (b) Least privilege: cell B's role may read the app-config feed, write usage and use its
/// own namespace, but cannot consume or produce on cell A's inbox topics nor forge app
/// configuration on the feed. The control plane's role writes the feed and reads usage, and
/// cannot read a cell's inboxes.
/// Before: no authorization, so every one of these attempts succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_role_reaches_only_its_own_topics() {
    let (url, admin_url, su) = (
        env("TEST_PULSAR_URL"),
        env("TEST_PULSAR_ADMIN_URL"),
        admin_auth(),
    );
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let tenant = format!("authz-{run}");
    let shared_prefix = format!("persistent://{tenant}/shared/starling-");
    let feed = format!("{shared_prefix}app-config");
    let usage = format!("{shared_prefix}usage");
    provision(&admin_url, &su, &shared_prefix, Some(&feed), 1 << 20)
        .await
        .unwrap();
    grant_control_plane(
        &admin_url,
        &su,
        "control-plane",
        std::slice::from_ref(&feed),
        std::slice::from_ref(&usage),
    )
    .await
    .unwrap();
    let shared = CellTopics {
        consume: vec![feed.clone()],
        produce: vec![usage.clone()],
    };
    let (prefix_a, prefix_b) = (
        format!("persistent://{tenant}/cell-a/starling-"),
        format!("persistent://{tenant}/cell-b/starling-"),
    );
    grant_cell(&admin_url, &su, &prefix_a, "cell-a", &shared)
        .await
        .unwrap();
    grant_cell(&admin_url, &su, &prefix_b, "cell-b", &shared)
        .await
        .unwrap();
    let inbox_a = format!("{prefix_a}inbox-node-1");
    let inbox_b = format!("{prefix_b}inbox-node-1");

    let cell_a = try_connect(&url, &role_auth("cell-a")).await.unwrap();
    let cell_b = try_connect(&url, &role_auth("cell-b")).await.unwrap();
    let cp = try_connect(&url, &role_auth("control-plane"))
        .await
        .unwrap();

    // What each role needs works (so the refusals below are about the grants).
    try_produce(&cell_a, &inbox_a).await.unwrap();
    try_consume(&cell_a, &inbox_a).await.unwrap();
    try_produce(&cell_b, &inbox_b).await.unwrap();
    try_consume(&cell_b, &inbox_b).await.unwrap();
    try_consume(&cell_b, &feed).await.unwrap();
    try_produce(&cell_b, &usage).await.unwrap();
    try_produce(&cp, &feed).await.unwrap();
    try_consume(&cp, &usage).await.unwrap();

    // The attacks.
    let refused = [
        (
            "cell-b produces on cell A's inbox",
            try_produce(&cell_b, &inbox_a).await,
        ),
        (
            "cell-b consumes cell A's inbox",
            try_consume(&cell_b, &inbox_a).await,
        ),
        (
            "cell-b produces on the app-config feed",
            try_produce(&cell_b, &feed).await,
        ),
        (
            "cell-b consumes the usage topic",
            try_consume(&cell_b, &usage).await,
        ),
        (
            "the control plane consumes cell A's inbox",
            try_consume(&cp, &inbox_a).await,
        ),
    ];
    let allowed: Vec<_> = refused
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(w, _)| *w)
        .collect();
    assert!(allowed.is_empty(), "the broker allowed: {allowed:?}");
    for (what, r) in &refused {
        let e = r.as_ref().unwrap_err();
        assert!(
            !e.contains("timed out"),
            "{what}: expected an authorization error, got a timeout"
        );
    }

    // The feed a cell reads is the one the control plane wrote.
    let feed_b = PulsarFeed::open(&cell_b, &feed).await.unwrap();
    let mut got = feed_b.updates();
    let feed_cp = PulsarFeed::open(&cp, &feed).await.unwrap();
    let update = crate::appconfig::conformance::signed(crate::appconfig::ConfigUpdate::Delete {
        app_id: crate::id::AppId::generate(),
        version: crate::appconfig::next_version(),
    });
    crate::appconfig::ConfigFeed::publish(feed_cp.as_ref(), update.clone())
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let u = got.recv().await.unwrap();
            if u.app_id() == update.app_id() {
                return u;
            }
        }
    })
    .await
    .expect("cell B reads the feed");
    assert_eq!(seen.version(), update.version());
    // And the feed of cell B, opened read-only, refuses to write.
    let e = crate::appconfig::ConfigFeed::publish(feed_b.as_ref(), update)
        .await
        .unwrap_err();
    assert!(!e.0.is_empty());
}

/// (c) The broker speaks TLS only: a plain `pulsar://` connection to its port gets no session
/// (with a valid token, even), and plain `http://` to the admin port gets no answer. A client
/// that does not trust the broker's CA refuses the broker too (the certificate is verified).
/// Before: the only port was the plain one, and the plain client connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_connections_to_the_tls_ports_fail() {
    let url = env("TEST_PULSAR_URL");
    // (Against a plain broker the URL is pulsar:// already — and then the client connects.)
    let plain = url.replacen("pulsar+ssl://", "pulsar://", 1);
    let token_only = PulsarAuth {
        token: admin_auth().token,
        ca_file: None,
    };
    let r = connect(&plain, &token_only, Duration::from_secs(10)).await;
    assert!(r.is_err(), "a plain pulsar:// client connected to {plain}");

    let admin_url = env("TEST_PULSAR_ADMIN_URL");
    let http = admin_url.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{http}/admin/v2/tenants"))
        .bearer_auth(admin_auth().token.unwrap())
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        r.is_err(),
        "plain http answered: {:?}",
        r.map(|r| r.status())
    );

    // TLS to the right port, but without the CA: the certificate is not trusted.
    let r = connect(&url, &token_only, Duration::from_secs(10)).await;
    assert!(
        r.is_err(),
        "the broker's certificate was accepted without its CA"
    );
}

/// A message produced by the super-user is read back: the broker works over TLS + tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_super_user_produces_and_consumes_over_tls() {
    let client = try_connect(&env("TEST_PULSAR_URL"), &admin_auth())
        .await
        .unwrap();
    let topic = format!(
        "persistent://public/default/tls-roundtrip-{}",
        ulid::Ulid::new()
    );
    let mut consumer = client
        .consumer()
        .with_topic(&topic)
        .with_subscription("s")
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build::<Vec<u8>>()
        .await
        .unwrap();
    try_produce(&client, &topic).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload.data, b"forged");
}
