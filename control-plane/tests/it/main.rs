//! Integration tests of the control plane over its real HTTP API, on both storage backends:
//! SQLite (a fresh file per test) and PostgreSQL (`TEST_DATABASE_URL`, started by
//! `scripts/test`; isolation by fresh tenants, never by truncating tables). The PostgreSQL runs
//! use the Redis cache (`TEST_REDIS_URL`) for idempotency keys, the SQLite runs the in-process one.

mod harness;

mod api_keys;
mod apps;
mod basics;
mod billing;
mod bus_grants;
mod cell_identity;
mod feeds;
mod idempotency;
mod plans_clusters;
mod sealing;
mod spec;
mod tenants;
mod usage;
mod webhooks;

/// Runs an async test body once per backend: `backend_tests!(name);` makes `name::sqlite` and
/// `name::postgres` from `async fn name(s: harness::Server)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let s = $crate::harness::Server::start($crate::harness::Backend::Sqlite).await;
                    super::$name(s).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let s = $crate::harness::Server::start($crate::harness::Backend::Postgres).await;
                    super::$name(s).await;
                }
            }
        )*
    };
}
