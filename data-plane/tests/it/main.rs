//! Integration tests of a data-plane node over real HTTP and WebSocket connections, on SQLite
//! and on PostgreSQL (`TEST_DATABASE_URL`, started by `scripts/test`). Isolation is by app: each
//! test makes its own apps, as the control plane would publish them.

mod harness;

mod access;
mod asyncapi;
mod concurrency;
mod config_trust;
mod conformance;
mod faults;
mod group_commit;
mod internal_api;
mod messaging;
mod migrate;
mod outbox;
mod pgproxy;
mod quota;
mod robustness;
mod scopes;
mod security;
mod spec;
mod webhook_spec;
mod webhooks;

/// `backend_tests!(name);` runs `async fn name(backend)` on one SQLite node, on one PostgreSQL
/// node, and on a three-node cell (PostgreSQL, Pulsar, Redis) with clients spread over the nodes.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::harness::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::harness::Backend::Postgres).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cell() {
                    super::$name($crate::harness::Backend::Cell).await;
                }
            }
        )*
    };
}
