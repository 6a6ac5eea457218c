//! End users: created and changed by the customer's backend; deactivated, banned, or deleted
//! with their data.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use starling_core::db::paginate;
use starling_core::error::{ApiError, ErrorCode};
use starling_core::http::{Page, PageParams};
use utoipa::ToSchema;

use super::{Messaging, Result, check_object, check_user_id, invalid, now};
use crate::directory::SessionEnd;
use crate::entity::{member, message, reaction, user};
use crate::hub::Ending;
use crate::store::scoped;
use crate::webhook::catalog::{UserData, UserDeletedData};

/// Fields of a user to set (create or update). Omitted fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    /// Display name (1..=256 characters; default: the id).
    pub name: Option<String>,
    /// Avatar image URL (http or https); `null` clears it.
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<String>)]
    pub avatar_url: Option<Option<String>>,
    /// Custom JSON object (at most 8 KiB), replacing the old one.
    pub metadata: Option<Value>,
}

/// An app-wide ban.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanIn {
    /// When the ban ends; for good when omitted.
    pub until: Option<DateTime<Utc>>,
    /// Why (kept for moderators).
    pub reason: Option<String>,
}

pub(crate) fn user_out(m: user::Model, online: bool) -> crate::protocol::UserOut {
    let banned = m.banned && m.banned_until.is_none_or(|u| u > Utc::now());
    crate::protocol::UserOut {
        id: m.id,
        name: m.name,
        avatar_url: m.avatar_url,
        metadata: m.metadata,
        status: m.status,
        banned,
        banned_until: if banned { m.banned_until } else { None },
        online,
        last_seen_at: m.last_seen_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn check_name(name: &str) -> Result<String> {
    let t = name.trim();
    if t.is_empty() || t.chars().count() > 256 || t.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            "must be 1..=256 characters without control characters",
        ));
    }
    Ok(t.to_owned())
}

pub(crate) fn check_url(field: &str, url: &str) -> Result<()> {
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.len() > 1024
        || url.contains(char::is_whitespace)
    {
        return Err(invalid(
            field,
            "must be an http(s) URL of at most 1024 characters",
        ));
    }
    Ok(())
}

impl Messaging {
    pub(crate) async fn user_model(&self, app: &str, id: &str) -> Result<user::Model> {
        scoped::<user::Entity>(app)
            .filter(user::Column::Id.eq(id))
            .one(&self.db)
            .await?
            .ok_or_else(|| ApiError::not_found("user", id))
    }

    /// A user who may act now: exists, active, not banned.
    pub(crate) async fn active_user(&self, app: &str, id: &str) -> Result<user::Model> {
        let u = self.user_model(app, id).await?;
        may_act(id, &u.status, u.banned, u.banned_until)?;
        Ok(u)
    }

    async fn online(&self, app: &str, id: &str) -> bool {
        self.registry.online(app, id).await.unwrap_or(false)
    }

    /// Creates the user or changes the given fields; tells whether it was created.
    pub async fn upsert_user(
        &self,
        app: &str,
        id: &str,
        input: UserIn,
    ) -> Result<(crate::protocol::UserOut, bool)> {
        let input = checked(id, input)?;
        // A concurrent DELETE or PUT of the same user can come between the read and the write
        // (they are apart, see `write_user`). Then the other request happened first, and this
        // one runs again against what it left: it creates what was deleted, or changes what
        // was created. A second race in a row is reported, not looped on.
        for _ in 0..2 {
            if let Some(done) = self.write_user(app, id, &input, false).await? {
                return Ok(done);
            }
        }
        Err(ApiError::conflict(format!(
            "user {id} was changed concurrently twice; retry"
        )))
    }

    /// Changes an existing user: `not_found` if there is none, also when a concurrent DELETE
    /// removed it between the read and the write (that DELETE happened first).
    pub async fn update_user(
        &self,
        app: &str,
        id: &str,
        input: UserIn,
    ) -> Result<crate::protocol::UserOut> {
        let input = checked(id, input)?;
        match self.write_user(app, id, &input, true).await? {
            Some((u, _)) => Ok(u),
            None => Err(ApiError::not_found("user", id)),
        }
    }

    /// Creates or changes the user once (`input` checked); `None` when a concurrent write
    /// changed whether the user exists between the read and the write.
    async fn write_user(
        &self,
        app: &str,
        id: &str,
        input: &UserIn,
        must_exist: bool,
    ) -> Result<Option<(crate::protocol::UserOut, bool)>> {
        let now = now();
        let online = self.online(app, id).await;
        let existing = scoped::<user::Entity>(app)
            .filter(user::Column::Id.eq(id))
            .one(&self.db)
            .await?;
        if existing.is_none() && must_exist {
            return Err(ApiError::not_found("user", id));
        }
        // The change and its webhook event commit together. (The read stays outside: it
        // needs no write lock, and the races it leaves are caught below.)
        let txn = starling_core::db::begin_write(&self.db).await?;
        let written = match existing {
            Some(u) => {
                let mut a: user::ActiveModel = u.into();
                if let Some(n) = &input.name {
                    a.name = Set(n.clone());
                }
                if let Some(u) = &input.avatar_url {
                    a.avatar_url = Set(u.clone());
                }
                if let Some(m) = &input.metadata {
                    a.metadata = Set(m.clone());
                }
                a.updated_at = Set(now);
                a.update(&txn).await.map(|m| (m, false))
            }
            None => {
                let a = user::ActiveModel {
                    app_id: Set(app.to_owned()),
                    id: Set(id.to_owned()),
                    name: Set(input.name.clone().unwrap_or_else(|| id.to_owned())),
                    avatar_url: Set(input.avatar_url.clone().flatten()),
                    metadata: Set(input.metadata.clone().unwrap_or_else(|| json!({}))),
                    status: Set("active".into()),
                    banned: Set(false),
                    banned_until: Set(None),
                    ban_reason: Set(None),
                    last_seen_at: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                };
                a.insert(&txn).await.map(|m| (m, true))
            }
        };
        let (m, created) = match written {
            Ok(w) => w,
            Err(e) if raced(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let out = user_out(m, online);
        self.emit(
            &txn,
            app,
            if created {
                "user.created"
            } else {
                "user.updated"
            },
            &UserData { user: out.clone() },
        )
        .await?;
        self.commit_events(txn).await?;
        Ok(Some((out, created)))
    }

    /// One user.
    pub async fn get_user(&self, app: &str, id: &str) -> Result<crate::protocol::UserOut> {
        let m = self.user_model(app, id).await?;
        Ok(user_out(m, self.online(app, id).await))
    }

    /// Users, by id.
    pub async fn list_users(
        &self,
        app: &str,
        page: &PageParams,
    ) -> Result<Page<crate::protocol::UserOut>> {
        let page = paginate(
            &self.db,
            scoped::<user::Entity>(app),
            user::Column::Id,
            page,
            |m| m,
            |m| m.id.as_str(),
        )
        .await?;
        let mut data = Vec::with_capacity(page.data.len());
        for m in page.data {
            let online = self.online(app, &m.id).await;
            data.push(user_out(m, online));
        }
        Ok(Page {
            data,
            next_cursor: page.next_cursor,
        })
    }

    /// Deactivates (`false`) or reactivates (`true`) a user. A deactivated user cannot connect
    /// or send; their data stays.
    pub async fn set_user_active(
        &self,
        app: &str,
        id: &str,
        active: bool,
    ) -> Result<crate::protocol::UserOut> {
        let u = self.user_model(app, id).await?;
        let mut a: user::ActiveModel = u.into();
        a.status = Set(if active { "active" } else { "deactivated" }.into());
        a.updated_at = Set(now());
        let out = self.save_user(app, id, a, "user.updated").await?;
        if !active {
            self.end_sessions(app, id, Ending::all(SessionEnd::Deactivated))
                .await;
        }
        Ok(out)
    }

    /// Bans a user from the whole app (until a time, or for good).
    pub async fn ban_user(
        &self,
        app: &str,
        id: &str,
        ban: BanIn,
    ) -> Result<crate::protocol::UserOut> {
        if ban.until.is_some_and(|u| u <= Utc::now()) {
            return Err(invalid("until", "must be in the future"));
        }
        if ban.reason.as_ref().is_some_and(|r| r.len() > 512) {
            return Err(invalid("reason", "must be at most 512 bytes"));
        }
        let u = self.user_model(app, id).await?;
        let mut a: user::ActiveModel = u.into();
        a.banned = Set(true);
        a.banned_until = Set(ban.until);
        a.ban_reason = Set(ban.reason);
        a.updated_at = Set(now());
        let out = self.save_user(app, id, a, "user.banned").await?;
        self.end_sessions(app, id, Ending::all(SessionEnd::Banned))
            .await;
        Ok(out)
    }

    /// Lifts an app-wide ban.
    pub async fn unban_user(&self, app: &str, id: &str) -> Result<crate::protocol::UserOut> {
        let u = self.user_model(app, id).await?;
        let mut a: user::ActiveModel = u.into();
        a.banned = Set(false);
        a.banned_until = Set(None);
        a.ban_reason = Set(None);
        a.updated_at = Set(now());
        self.save_user(app, id, a, "user.updated").await
    }

    /// Deletes a user and their data (GDPR): the user, their memberships and reactions; their
    /// messages become tombstones (content erased, seq kept so conversations stay gap-free).
    pub async fn delete_user(&self, app: &str, id: &str) -> Result<()> {
        self.user_model(app, id).await?;
        // Tokens issued so far die with the user: a user created again under the same id
        // does not inherit them.
        self.set_not_before(app, id).await?;
        let now = now();
        let txn = starling_core::db::begin_write(&self.db).await?;
        message::Entity::update_many()
            .col_expr(
                message::Column::Text,
                sea_orm::sea_query::Expr::value(Option::<String>::None),
            )
            .col_expr(
                message::Column::Custom,
                sea_orm::sea_query::Expr::value(Option::<Value>::None),
            )
            .col_expr(
                message::Column::Attachments,
                sea_orm::sea_query::Expr::value(json!([])),
            )
            .col_expr(
                message::Column::Mentions,
                sea_orm::sea_query::Expr::value(json!([])),
            )
            .col_expr(
                message::Column::DeletedAt,
                sea_orm::sea_query::Expr::value(Some(now)),
            )
            .filter(message::Column::AppId.eq(app))
            .filter(message::Column::SenderId.eq(id))
            .exec(&txn)
            .await?;
        reaction::Entity::delete_many()
            .filter(reaction::Column::AppId.eq(app))
            .filter(reaction::Column::UserId.eq(id))
            .exec(&txn)
            .await?;
        member::Entity::delete_many()
            .filter(member::Column::AppId.eq(app))
            .filter(member::Column::UserId.eq(id))
            .exec(&txn)
            .await?;
        let deleted = user::Entity::delete_many()
            .filter(user::Column::AppId.eq(app))
            .filter(user::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            // A concurrent DELETE came first (the transaction rolls back as it drops): one
            // `user.deleted`, and this one is told the user is gone.
            return Err(ApiError::not_found("user", id));
        }
        self.emit(
            &txn,
            app,
            "user.deleted",
            &UserDeletedData {
                user_id: id.to_owned(),
            },
        )
        .await?;
        self.commit_events(txn).await?;
        self.end_sessions(app, id, Ending::all(SessionEnd::Deleted))
            .await;
        Ok(())
    }

    /// Saves a changed user and its webhook event in one transaction.
    async fn save_user(
        &self,
        app: &str,
        id: &str,
        a: user::ActiveModel,
        event: &str,
    ) -> Result<crate::protocol::UserOut> {
        let online = self.online(app, id).await;
        let txn = starling_core::db::begin_write(&self.db).await?;
        // A concurrent DELETE removed the user since it was read: that DELETE came first.
        let m = a.update(&txn).await.map_err(|e| match e {
            DbErr::RecordNotUpdated => ApiError::not_found("user", id),
            e => e.into(),
        })?;
        let out = user_out(m, online);
        self.emit(&txn, app, event, &UserData { user: out.clone() })
            .await?;
        self.commit_events(txn).await?;
        Ok(out)
    }

    /// Records when a user was last connected.
    pub(crate) async fn touch_last_seen(&self, app: &str, id: &str) -> Option<DateTime<Utc>> {
        let t = now();
        let r = user::Entity::update_many()
            .col_expr(
                user::Column::LastSeenAt,
                sea_orm::sea_query::Expr::value(Some(t)),
            )
            .filter(user::Column::AppId.eq(app))
            .filter(user::Column::Id.eq(id))
            .exec(&self.db)
            .await;
        r.ok().map(|_| t)
    }
}

/// Whether a user with this status and ban may act now (`forbidden`, naming the user, if not).
pub(crate) fn may_act(
    id: &str,
    status: &str,
    banned: bool,
    banned_until: Option<chrono::DateTime<Utc>>,
) -> Result<()> {
    if status != "active" {
        return Err(ApiError::new(
            ErrorCode::UserDeactivated,
            format!("user {id} is deactivated"),
        ));
    }
    if banned && banned_until.is_none_or(|t| t > Utc::now()) {
        let until = banned_until
            .map(|t| format!(" until {}", t.to_rfc3339()))
            .unwrap_or_default();
        return Err(ApiError::new(
            ErrorCode::Banned,
            format!("user {id} is banned{until}"),
        ));
    }
    Ok(())
}

/// The user input with its fields checked (the name trimmed).
fn checked(id: &str, mut input: UserIn) -> Result<UserIn> {
    check_user_id("id", id)?;
    input.name = input.name.as_deref().map(check_name).transpose()?;
    if let Some(Some(u)) = &input.avatar_url {
        check_url("avatar_url", u)?;
    }
    if let Some(m) = &input.metadata {
        check_object("metadata", m, 8 * 1024)?;
    }
    Ok(input)
}

/// Whether a user write failed because a concurrent one changed whether the user exists: the
/// row to update was deleted, or the row to insert was created.
fn raced(e: &DbErr) -> bool {
    matches!(e, DbErr::RecordNotUpdated)
        || matches!(
            e.sql_err(),
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
        )
}
