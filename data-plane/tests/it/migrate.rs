//! Migrations on PostgreSQL when the nodes of a cell start at once.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

#[tokio::test]
async fn nodes_starting_together_on_a_fresh_database_all_migrate() {
    let url = std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
    );
    let admin = starling_core::db::connect(&url, 1)
        .await
        .expect("connect PostgreSQL");
    let name = format!(
        "fresh_{}",
        starling_core::id::ConnectionId::generate()
            .into_string()
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let base = &path[..path.rfind('/').expect("a database in the URL")];
    let fresh = if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    };

    // Six nodes, all at once (the control plane's migrations go through the same helper).
    let nodes = (0..6).map(|_| {
        let fresh = fresh.clone();
        async move {
            let db = starling_core::db::connect(&fresh, 2).await?;
            starling_data_plane::store::migrate(&db).await
        }
    });
    for r in futures::future::join_all(nodes).await {
        r.expect("every node migrates");
    }

    // Each migration was applied once.
    let db = starling_core::db::connect(&fresh, 1).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT version FROM dp_migrations GROUP BY version HAVING count(*) > 1",
        ))
        .await
        .unwrap();
    assert!(rows.is_empty(), "a migration was recorded twice");
    drop(db);
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}
