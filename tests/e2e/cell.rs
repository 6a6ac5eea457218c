//! A data-plane cell of three gateway processes on real PostgreSQL, Redis and Pulsar, with the
//! control plane as a fourth process: app config reaches every node over Pulsar, a message sent
//! on node A reaches members on nodes B and C once and in order, and a revoked key stops working
//! on every node within 2 s (measured and printed).

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use starling_e2e::{Proc, free_port, wait_healthy};
use tokio_tungstenite::tungstenite::Message;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test, which starts PostgreSQL, Redis and Pulsar"))
}

const OPERATOR: &str = "sop_cell-test-operator-token-abcdefghijklmnopqrstuvwxyz";
const KEY_HASH: &str = "cell-test-key-hash-secret-abcdefghijklmnopqrstuvwxyz";

struct Ws {
    sink: futures::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        Message,
    >,
    read: futures::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
}

impl Ws {
    async fn connect(base: &str, token: &str) -> Ws {
        let url = format!(
            "{}/v1/connect?token={token}",
            base.replace("http://", "ws://")
        );
        let (s, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        let (sink, read) = s.split();
        let mut ws = Ws { sink, read };
        ws.next_matching(|f| f["type"] == "hello").await;
        ws
    }

    async fn next_matching(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let m = tokio::time::timeout_at(deadline, self.read.next())
                .await
                .expect("frame in time")
                .expect("open")
                .expect("ok");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if pred(&v) {
                    return v;
                }
            }
        }
    }

    async fn send(&mut self, f: Value) {
        self.sink
            .send(Message::Text(f.to_string().into()))
            .await
            .unwrap();
    }
}

async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c.request(method, url).bearer_auth(bearer);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.unwrap();
    let st = res.status().as_u16();
    (st, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cell_over_pulsar_and_redis() {
    let (db, redis, pulsar) = (
        env("TEST_DATABASE_URL"),
        env("TEST_REDIS_URL"),
        env("TEST_PULSAR_URL"),
    );
    let prefix = format!(
        "persistent://public/default/e2e-{}-",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let dir = tempfile::tempdir().unwrap();
    let common = |listen: &str| -> Vec<(String, String)> {
        vec![
            ("STARLING_DATABASE__URL".into(), db.clone()),
            ("STARLING_CACHE__REDIS_URL".into(), redis.clone()),
            ("STARLING_PULSAR__URL".into(), pulsar.clone()),
            ("STARLING_PULSAR__TOPIC_PREFIX".into(), prefix.clone()),
            ("STARLING_AUTH__OPERATOR_TOKEN".into(), OPERATOR.into()),
            ("STARLING_AUTH__KEY_HASH_SECRET".into(), KEY_HASH.into()),
            ("STARLING_SERVER__LISTEN".into(), listen.into()),
        ]
    };
    let spawn = |args: &[&str], listen: &str| {
        let env = common(listen);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Proc::spawn(args, &pairs, dir.path())
    };

    let cp_addr = format!("127.0.0.1:{}", free_port());
    let _cp = spawn(&["control-plane"], &cp_addr);
    let cp = format!("http://{cp_addr}");
    wait_healthy(&format!("{cp}/readyz"), Duration::from_secs(60))
        .await
        .unwrap();
    let mut nodes = Vec::new();
    let mut procs = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        let addr = format!("127.0.0.1:{}", free_port());
        procs.push(spawn(&["data-plane", "--node-id", id], &addr));
        nodes.push(format!("http://{addr}"));
    }
    for n in &nodes {
        if let Err(e) = wait_healthy(&format!("{n}/readyz"), Duration::from_secs(60)).await {
            for p in &procs {
                eprintln!("{}", p.stderr().join("\n"));
            }
            panic!("{e}");
        }
    }

    let c = reqwest::Client::new();
    use reqwest::Method;
    let (st, t) = call(
        &c,
        Method::POST,
        &format!("{cp}/admin/v1/tenants"),
        OPERATOR,
        Some(json!({"name": "Cell test"})),
    )
    .await;
    assert_eq!(st, 201, "{t}");
    let t = t["id"].as_str().unwrap().to_owned();
    // The operator registers the cell, then places the app on it.
    let (st, cl) = call(&c, Method::POST, &format!("{cp}/admin/v1/clusters"), OPERATOR, Some(json!({"name": format!("cell-{}", ulid::Ulid::new().to_string().to_lowercase()), "region": "local", "capacity_apps": 100, "endpoint": nodes[0]}))).await;
    assert_eq!(st, 201, "{cl}");
    let (st, a) = call(&c, Method::POST, &format!("{cp}/admin/v1/tenants/{t}/apps"), OPERATOR, Some(json!({"name": "Chat", "cluster_id": cl["id"], "quota_overrides": {"api_requests_per_second": 100000}}))).await;
    assert_eq!(st, 201, "{a}");
    let a = a["id"].as_str().unwrap().to_owned();
    let created = Instant::now();
    let (_, k) = call(
        &c,
        Method::POST,
        &format!("{cp}/admin/v1/tenants/{t}/apps/{a}/api-keys"),
        OPERATOR,
        Some(json!({"name": "backend"})),
    )
    .await;
    let key = k["secret"].as_str().unwrap().to_owned();
    let key_id = k["id"].as_str().unwrap().to_owned();

    // The new key reaches every node over the feed.
    let mut propagation = Vec::new();
    for n in &nodes {
        loop {
            let (st, _) = call(&c, Method::GET, &format!("{n}/v1/users"), &key, None).await;
            if st == 200 {
                propagation.push(created.elapsed());
                break;
            }
            assert!(
                created.elapsed() < Duration::from_secs(10),
                "key not known to {n} after 10 s (status {st})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let (na, nb, nc) = (&nodes[0], &nodes[1], &nodes[2]);
    for u in ["alice", "bob", "carol"] {
        let (st, v) = call(
            &c,
            Method::PUT,
            &format!("{na}/v1/users/{u}"),
            &key,
            Some(json!({"name": u})),
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
    let (_, conv) = call(
        &c,
        Method::POST,
        &format!("{na}/v1/conversations"),
        &key,
        Some(json!({"kind": "group", "created_by": "alice", "members": ["bob", "carol"]})),
    )
    .await;
    let cid = conv["id"].as_str().unwrap().to_owned();
    let token = |u: &'static str, n: String| {
        let (c, key) = (c.clone(), key.clone());
        async move {
            let (_, v) = call(
                &c,
                Method::POST,
                &format!("{n}/v1/users/{u}/tokens"),
                &key,
                Some(json!({})),
            )
            .await;
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let mut alice = Ws::connect(na, &token("alice", nb.clone()).await).await;
    let mut bob = Ws::connect(nb, &token("bob", nc.clone()).await).await;
    let mut carol = Ws::connect(nc, &token("carol", na.clone()).await).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let n = 20;
    let start = Instant::now();
    for i in 0..n {
        alice.send(json!({"type": "send", "id": format!("s{i}"), "conversation_id": cid, "client_msg_id": format!("m{i}"), "text": format!("hello {i}")})).await;
    }
    for (name, ws) in [("bob on node-b", &mut bob), ("carol on node-c", &mut carol)] {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let e = ws.next_matching(|f| f["type"] == "message.new").await;
            seqs.push(e["message"]["seq"].as_i64().unwrap());
        }
        assert_eq!(
            seqs,
            (1..=n as i64).collect::<Vec<_>>(),
            "{name}: every message once, in order"
        );
    }
    let cross_node = start.elapsed();

    // Revocation at the control plane stops the key on every node.
    let revoked_at = Instant::now();
    let (st, _) = call(
        &c,
        Method::POST,
        &format!("{cp}/admin/v1/tenants/{t}/apps/{a}/api-keys/{key_id}/revoke"),
        OPERATOR,
        None,
    )
    .await;
    assert_eq!(st, 200);
    let mut revocation = Vec::new();
    for n in &nodes {
        loop {
            let (st, _) = call(&c, Method::GET, &format!("{n}/v1/users"), &key, None).await;
            if st == 401 {
                revocation.push(revoked_at.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(
                revoked_at.elapsed() < Duration::from_secs(10),
                "{n} still accepts the revoked key"
            );
        }
    }
    let worst = revocation.iter().max().unwrap();
    println!(
        "cell: config propagation to 3 nodes {:?}; {n} messages node-a → node-b + node-c delivered in {cross_node:?}; key revocation reached every node in {:?} (worst {worst:?})",
        propagation, revocation
    );
    assert!(*worst < Duration::from_secs(2), "revocation took {worst:?}");
}
