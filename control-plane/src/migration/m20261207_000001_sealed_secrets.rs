//! Secret columns hold sealed text (`sealed:v1:<kid>:…`, see `starling_core::seal`), longer than
//! the secrets themselves: they become unbounded text. The sealing of existing rows is not a
//! migration (it needs the sealing key, which only the running control plane holds): the control
//! plane does it at every start (`service::sealed`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const COLUMNS: [(&str, &str, bool); 4] = [
    ("app_token_secret", "secret", false),
    ("webhook_endpoint", "secret", false),
    ("webhook_endpoint", "previous_secret", true),
    ("pre_send_hook", "secret", false),
];

async fn retype(m: &SchemaManager<'_>, len: Option<u32>) -> Result<(), DbErr> {
    // SQLite does not enforce a VARCHAR's length (and cannot alter a column's type).
    if m.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for (table, column, nullable) in COLUMNS {
        let mut c = ColumnDef::new(column);
        match len {
            Some(n) => c.string_len(n),
            None => c.text(),
        };
        if nullable {
            c.null();
        } else {
            c.not_null();
        }
        m.alter_table(Table::alter().table(table).modify_column(c).to_owned())
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        retype(m, None).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        retype(m, Some(128)).await
    }
}
