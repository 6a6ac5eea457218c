//! Console accounts, their tenant memberships, invitations, sessions and the audit log.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn ts(name: &'static str) -> ColumnDef {
    let mut c = ColumnDef::new(name);
    c.timestamp_with_time_zone();
    c
}

fn text(name: &'static str, len: u32) -> ColumnDef {
    let mut c = ColumnDef::new(name);
    c.string_len(len);
    c
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("console_account")
                .col(text("id", 64).not_null().primary_key())
                .col(text("email", 320).not_null().unique_key())
                .col(text("name", 128).not_null())
                .col(text("password_hash", 256).not_null())
                .col(ColumnDef::new("failed_logins").integer().not_null())
                .col(ts("locked_until").null())
                .col(ts("created_at").not_null())
                .col(ts("updated_at").not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("console_membership")
                .col(text("tenant_id", 64).not_null())
                .col(text("account_id", 64).not_null())
                .col(text("role", 16).not_null())
                .col(ts("created_at").not_null())
                .primary_key(Index::create().col("tenant_id").col("account_id"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_console_membership_account")
                        .from("console_membership", "account_id")
                        .to("console_account", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_console_membership_tenant")
                        .from("console_membership", "tenant_id")
                        .to("tenant", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_console_membership_account")
                .table("console_membership")
                .col("account_id")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("console_invitation")
                .col(text("tenant_id", 64).not_null())
                .col(text("id", 64).not_null())
                .col(text("email", 320).not_null())
                .col(text("role", 16).not_null())
                .col(text("token_hash", 128).not_null().unique_key())
                .col(text("invited_by", 64).not_null())
                .col(ts("expires_at").not_null())
                .col(ts("accepted_at").null())
                .col(ts("created_at").not_null())
                .primary_key(Index::create().col("tenant_id").col("id"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_console_invitation_tenant")
                        .from("console_invitation", "tenant_id")
                        .to("tenant", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("console_session")
                .col(text("id", 64).not_null().primary_key())
                .col(text("account_id", 64).not_null())
                .col(text("refresh_hash", 128).not_null())
                .col(ts("created_at").not_null())
                .col(ts("expires_at").not_null())
                .col(ts("revoked_at").null())
                .col(text("ip", 64).null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_console_session_account")
                        .from("console_session", "account_id")
                        .to("console_account", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_console_session_account")
                .table("console_session")
                .col("account_id")
                .to_owned(),
        )
        .await?;
        // The audit log outlives members and apps on purpose: no foreign keys but the tenant's.
        m.create_table(
            Table::create()
                .table("console_audit")
                .col(text("tenant_id", 64).not_null())
                .col(text("id", 64).not_null())
                .col(text("actor_id", 64).not_null())
                .col(text("actor_email", 320).not_null())
                .col(text("action", 64).not_null())
                .col(text("target", 128).null())
                .col(ColumnDef::new("detail").json().not_null())
                .col(text("ip", 64).null())
                .col(text("user_agent", 256).null())
                .col(ts("created_at").not_null())
                .primary_key(Index::create().col("tenant_id").col("id"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "console_audit",
            "console_session",
            "console_invitation",
            "console_membership",
            "console_account",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
