//! Console session tokens are signed with a key only the control plane holds (derived from its
//! sealing key). Before, the key was HMAC(`key_hash_secret`, "starling-console-session-v1"), and
//! every cell node holds `key_hash_secret` (it checks API keys with it): one compromised node
//! could mint a session for any console account of any tenant, on any cell.

use base64::Engine;
use serde_json::{Value, json};
use starling_core::secret::KeyHasher;

use crate::harness::{Backend, KEY_HASH_SECRET, Server, code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_node_cannot_mint_a_console_session() {
    let s = Server::start(Backend::Sqlite).await;
    let t = s.tenant().await;
    let (account, genuine) = s.member(&t, "OWNER").await;
    let d = s.ok(Some(&genuine), "{ viewer { id } }", json!({})).await;
    assert_eq!(d["viewer"]["id"], account, "the genuine session works");

    // What a node could do: take the claims of a session (or write its own) and sign them with
    // the key it can derive from key_hash_secret.
    let payload = genuine.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let node_key = KeyHasher::new(KEY_HASH_SECRET).hash("starling-console-session-v1");
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(node_key.as_bytes()),
    )
    .unwrap();
    let v = s.gql(Some(&forged), "{ viewer { id } }", json!({})).await;
    assert_eq!(
        code(&v),
        "unauthorized",
        "a node-minted session was accepted: {v}"
    );
}
