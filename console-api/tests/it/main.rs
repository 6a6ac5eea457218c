//! Integration tests of the console API over its real HTTP endpoint, on both storage backends:
//! SQLite (a fresh file per test) and PostgreSQL (`TEST_DATABASE_URL`, started by
//! `scripts/test`; isolation by fresh tenants and unique emails, never by truncating tables).

mod harness;

mod accounts;
mod authz;
mod concurrency;
mod doors;
mod limits;
mod session_keys;
mod spec;
mod usage;
mod webhook;

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
