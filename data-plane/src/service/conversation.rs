//! Conversations and their members: direct (one per pair of users), group (roles, size limit
//! from quotas), and broadcast rooms (members come and go freely; a post policy says who posts).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use starling_core::db::paginate;
use starling_core::error::{ApiError, ErrorCode};
use starling_core::http::{Page, PageParams};
use starling_core::id::ConversationId;
use starling_core::limits::Limits;
use utoipa::ToSchema;

use super::{Messaging, Result, check_object, check_user_id, invalid, not_member, now};
use crate::entity::{conversation, member, message, reaction, user};
use crate::protocol::{ConversationOut, Event, MemberOut, UserConversationOut};
use crate::store::scoped;
use crate::webhook::catalog::{
    ConversationData, ConversationDeletedData, MemberData, MemberRemovedData,
};

/// Kinds of conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Exactly two users; one per pair.
    Direct,
    /// Members with roles; size limited by the plan.
    Group,
    /// A broadcast room: anyone may join; the post policy says who posts.
    Room,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Group => "group",
            Kind::Room => "room",
        }
    }
}

/// Roles of members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created it; all rights.
    Owner,
    /// Manages members and messages.
    Admin,
    /// Takes part.
    Member,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// Who may post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PostPolicy {
    /// Every member.
    Members,
    /// Owners and admins only (announcement rooms).
    Admins,
}

/// A new conversation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationIn {
    /// `direct`, `group` or `room`.
    pub kind: Kind,
    /// Members (user ids). Direct: exactly two users.
    #[serde(default)]
    pub members: Vec<String>,
    /// The creator, who becomes owner (group and room; must be a user).
    pub created_by: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Custom JSON object (at most 8 KiB).
    pub metadata: Option<Value>,
    /// Who may post (default `members`).
    pub post_policy: Option<PostPolicy>,
}

/// Changes to a conversation; omitted fields stay.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationPatch {
    /// New name.
    pub name: Option<String>,
    /// New metadata (replaces the old).
    pub metadata: Option<Value>,
    /// New post policy.
    pub post_policy: Option<PostPolicy>,
}

/// Members to add.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersIn {
    /// User ids.
    pub user_ids: Vec<String>,
    /// Their role (default `member`).
    pub role: Option<Role>,
}

/// Changes to a member.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberPatch {
    /// New role.
    pub role: Option<Role>,
    /// Muted until then (cannot post); `null` unmutes.
    #[serde(default, deserialize_with = "starling_core::http::double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub muted_until: Option<Option<DateTime<Utc>>>,
    /// Banned from this conversation (cannot read new messages or post).
    pub banned: Option<bool>,
}

pub(crate) fn member_out(m: member::Model) -> MemberOut {
    MemberOut {
        user_id: m.user_id,
        role: m.role,
        muted_until: m.muted_until,
        banned: m.banned,
        last_read_seq: m.last_read_seq,
        joined_at: m.joined_at,
    }
}

/// A new member row; new members have read everything up to `read_up_to`.
fn new_member(
    app: &str,
    conversation: &str,
    user: &str,
    role: Role,
    read_up_to: i64,
    now: DateTime<Utc>,
) -> member::ActiveModel {
    member::ActiveModel {
        app_id: Set(app.to_owned()),
        conversation_id: Set(conversation.to_owned()),
        user_id: Set(user.to_owned()),
        role: Set(role.as_str().into()),
        muted_until: Set(None),
        banned: Set(false),
        last_read_seq: Set(read_up_to),
        joined_at: Set(now),
    }
}

fn check_conv_name(n: &str) -> Result<String> {
    let t = n.trim();
    if t.is_empty() || t.chars().count() > 256 {
        return Err(invalid("name", "must be 1..=256 characters"));
    }
    Ok(t.to_owned())
}

fn max_members(limits: &Limits) -> u64 {
    limits.max_group_members.unwrap_or(u64::MAX)
}

impl Messaging {
    pub(crate) async fn conversation_model(
        &self,
        app: &str,
        id: &str,
    ) -> Result<conversation::Model> {
        scoped::<conversation::Entity>(app)
            .filter(conversation::Column::Id.eq(id))
            .one(&self.db)
            .await?
            .ok_or_else(|| ApiError::not_found("conversation", id))
    }

    pub(crate) async fn member_model(
        &self,
        app: &str,
        cid: &str,
        user: &str,
    ) -> Result<Option<member::Model>> {
        Ok(scoped::<member::Entity>(app)
            .filter(member::Column::ConversationId.eq(cid))
            .filter(member::Column::UserId.eq(user))
            .one(&self.db)
            .await?)
    }

    /// The member, or `forbidden` when the user is not one (or is banned from it).
    pub(crate) async fn require_member(
        &self,
        app: &str,
        cid: &str,
        user: &str,
    ) -> Result<member::Model> {
        let m = self.member_model(app, cid, user).await?;
        is_member(cid, user, m.as_ref().map(|m| m.banned))?;
        m.ok_or_else(|| not_member(cid))
    }

    /// User ids of the members who receive the conversation's events (not the banned).
    pub(crate) async fn recipients(&self, app: &str, cid: &str) -> Result<Vec<String>> {
        Ok(scoped::<member::Entity>(app)
            .filter(member::Column::ConversationId.eq(cid))
            .filter(member::Column::Banned.eq(false))
            .select_only()
            .column(member::Column::UserId)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    async fn member_count(conn: &impl ConnectionTrait, app: &str, cid: &str) -> Result<i64> {
        Ok(scoped::<member::Entity>(app)
            .filter(member::Column::ConversationId.eq(cid))
            .count(conn)
            .await? as i64)
    }

    pub(crate) async fn conversation_out(&self, m: conversation::Model) -> Result<ConversationOut> {
        Self::conversation_out_on(&self.db, m).await
    }

    /// [`Messaging::conversation_out`] on `conn` (a transaction sees its own changes).
    async fn conversation_out_on(
        conn: &impl ConnectionTrait,
        m: conversation::Model,
    ) -> Result<ConversationOut> {
        let member_count = Self::member_count(conn, &m.app_id, &m.id).await?;
        Ok(ConversationOut {
            id: m.id,
            kind: m.kind,
            name: m.name,
            metadata: m.metadata,
            post_policy: m.post_policy,
            last_seq: m.last_seq,
            last_message_at: m.last_message_at,
            member_count,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }

    async fn check_users_exist(&self, app: &str, field: &str, ids: &[String]) -> Result<()> {
        for (i, id) in ids.iter().enumerate() {
            check_user_id(&format!("{field}[{i}]"), id)?;
        }
        let found = scoped::<user::Entity>(app)
            .filter(user::Column::Id.is_in(ids.iter().cloned()))
            .select_only()
            .column(user::Column::Id)
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        if let Some((i, missing)) = ids.iter().enumerate().find(|(_, id)| !found.contains(id)) {
            return Err(invalid(
                &format!("{field}[{i}]"),
                format!("user {missing} does not exist; create it first"),
            ));
        }
        Ok(())
    }

    /// Creates a conversation. A direct conversation that exists already is returned as it is
    /// (`false`: not created).
    pub async fn create_conversation(
        &self,
        app: &str,
        limits: &Limits,
        input: ConversationIn,
    ) -> Result<(ConversationOut, bool)> {
        let mut members = input.members.clone();
        if let Some(c) = &input.created_by
            && !members.contains(c)
        {
            members.insert(0, c.clone());
        }
        let mut seen = std::collections::HashSet::new();
        members.retain(|m| seen.insert(m.clone()));
        self.check_users_exist(app, "members", &members).await?;
        let name = input.name.as_deref().map(check_conv_name).transpose()?;
        if let Some(m) = &input.metadata {
            check_object("metadata", m, 8 * 1024)?;
        }
        let direct_key = match input.kind {
            Kind::Direct => {
                if members.len() != 2 {
                    return Err(invalid(
                        "members",
                        "a direct conversation has exactly two different users",
                    ));
                }
                let mut pair = members.clone();
                pair.sort();
                let key = pair.join("|");
                if let Some(existing) = scoped::<conversation::Entity>(app)
                    .filter(conversation::Column::DirectKey.eq(&key))
                    .one(&self.db)
                    .await?
                {
                    return Ok((self.conversation_out(existing).await?, false));
                }
                Some(key)
            }
            Kind::Group => {
                if members.len() as u64 > max_members(limits) {
                    return Err(ApiError::new(
                        ErrorCode::QuotaExceeded,
                        format!(
                            "a group may have at most {} members (max_group_members)",
                            max_members(limits)
                        ),
                    ));
                }
                None
            }
            Kind::Room => None,
        };
        let now = now();
        let id = ConversationId::generate().into_string();
        let txn = starling_core::db::begin_write(&self.db).await?;
        let inserted = conversation::ActiveModel {
            app_id: Set(app.to_owned()),
            id: Set(id.clone()),
            kind: Set(input.kind.as_str().into()),
            name: Set(name),
            metadata: Set(input.metadata.unwrap_or_else(|| json!({}))),
            direct_key: Set(direct_key.clone()),
            post_policy: Set(match input.post_policy.unwrap_or(PostPolicy::Members) {
                PostPolicy::Members => "members".into(),
                PostPolicy::Admins => "admins".into(),
            }),
            last_seq: Set(0),
            last_message_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await;
        let c = match (inserted, &direct_key) {
            (Ok(c), _) => c,
            // Two creations of the same pair raced: the other one won; return it.
            (Err(e), Some(key))
                if matches!(
                    e.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                ) =>
            {
                drop(txn);
                tracing::debug!(error = %e, "direct conversation raced");
                let existing = scoped::<conversation::Entity>(app)
                    .filter(conversation::Column::DirectKey.eq(key))
                    .one(&self.db)
                    .await?
                    .ok_or_else(|| ApiError::from(e))?;
                return Ok((self.conversation_out(existing).await?, false));
            }
            (Err(e), _) => return Err(e.into()),
        };
        for u in &members {
            let role =
                if input.kind != Kind::Direct && input.created_by.as_deref() == Some(u.as_str()) {
                    Role::Owner
                } else {
                    Role::Member
                };
            new_member(app, &id, u, role, 0, now).insert(&txn).await?;
        }
        // The events commit with the conversation (or vanish with it).
        let out = Self::conversation_out_on(&txn, c).await?;
        self.emit(
            &txn,
            app,
            "conversation.created",
            &ConversationData {
                conversation: out.clone(),
            },
        )
        .await?;
        let added = Self::members_of(&txn, app, &id).await?;
        for m in &added {
            self.emit(
                &txn,
                app,
                "member.added",
                &MemberData {
                    conversation_id: id.clone(),
                    member: m.clone(),
                },
            )
            .await?;
        }
        self.commit_events(txn).await?;
        for m in added {
            self.deliver(
                app,
                &members,
                &Event::MemberAdded {
                    conversation_id: id.clone(),
                    member: m,
                },
            )
            .await;
        }
        Ok((out, true))
    }

    async fn members_of(
        conn: &impl ConnectionTrait,
        app: &str,
        cid: &str,
    ) -> Result<Vec<MemberOut>> {
        Ok(scoped::<member::Entity>(app)
            .filter(member::Column::ConversationId.eq(cid))
            .order_by_asc(member::Column::UserId)
            .all(conn)
            .await?
            .into_iter()
            .map(member_out)
            .collect())
    }

    /// One conversation.
    pub async fn get_conversation(&self, app: &str, id: &str) -> Result<ConversationOut> {
        let c = self.conversation_model(app, id).await?;
        self.conversation_out(c).await
    }

    /// Changes a conversation's name, metadata or post policy.
    pub async fn update_conversation(
        &self,
        app: &str,
        id: &str,
        patch: ConversationPatch,
    ) -> Result<ConversationOut> {
        let c = self.conversation_model(app, id).await?;
        let mut a: conversation::ActiveModel = c.into();
        if let Some(n) = patch.name {
            a.name = Set(Some(check_conv_name(&n)?));
        }
        if let Some(m) = patch.metadata {
            check_object("metadata", &m, 8 * 1024)?;
            a.metadata = Set(m);
        }
        if let Some(p) = patch.post_policy {
            a.post_policy = Set(match p {
                PostPolicy::Members => "members".into(),
                PostPolicy::Admins => "admins".into(),
            });
        }
        a.updated_at = Set(now());
        let txn = starling_core::db::begin_write(&self.db).await?;
        let c = a.update(&txn).await?;
        let out = Self::conversation_out_on(&txn, c).await?;
        self.emit(
            &txn,
            app,
            "conversation.updated",
            &ConversationData {
                conversation: out.clone(),
            },
        )
        .await?;
        self.commit_events(txn).await?;
        let to = self.recipients(app, id).await?;
        self.deliver(
            app,
            &to,
            &Event::ConversationUpdated {
                conversation: out.clone(),
            },
        )
        .await;
        Ok(out)
    }

    /// Deletes a conversation with its messages.
    pub async fn delete_conversation(&self, app: &str, id: &str) -> Result<()> {
        self.conversation_model(app, id).await?;
        let to = self.recipients(app, id).await?;
        let txn = starling_core::db::begin_write(&self.db).await?;
        let ids: Vec<String> = scoped::<message::Entity>(app)
            .filter(message::Column::ConversationId.eq(id))
            .select_only()
            .column(message::Column::Id)
            .into_tuple()
            .all(&txn)
            .await?;
        for chunk in ids.chunks(500) {
            reaction::Entity::delete_many()
                .filter(reaction::Column::AppId.eq(app))
                .filter(reaction::Column::MessageId.is_in(chunk.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        message::Entity::delete_many()
            .filter(message::Column::AppId.eq(app))
            .filter(message::Column::ConversationId.eq(id))
            .exec(&txn)
            .await?;
        member::Entity::delete_many()
            .filter(member::Column::AppId.eq(app))
            .filter(member::Column::ConversationId.eq(id))
            .exec(&txn)
            .await?;
        conversation::Entity::delete_many()
            .filter(conversation::Column::AppId.eq(app))
            .filter(conversation::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        self.emit(
            &txn,
            app,
            "conversation.deleted",
            &ConversationDeletedData {
                conversation_id: id.to_owned(),
            },
        )
        .await?;
        self.commit_events(txn).await?;
        self.deliver(
            app,
            &to,
            &Event::ConversationDeleted {
                conversation_id: id.to_owned(),
            },
        )
        .await;
        Ok(())
    }

    /// Adds members (already-members are left as they are).
    pub async fn add_members(
        &self,
        app: &str,
        limits: &Limits,
        id: &str,
        input: MembersIn,
    ) -> Result<Vec<MemberOut>> {
        let c = self.conversation_model(app, id).await?;
        if c.kind == "direct" {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "a direct conversation has exactly two members; create a group instead",
            ));
        }
        if input.user_ids.is_empty() {
            return Err(invalid("user_ids", "must name at least one user"));
        }
        self.check_users_exist(app, "user_ids", &input.user_ids)
            .await?;
        let existing = self.recipients_all(app, id).await?;
        let new: Vec<String> = input
            .user_ids
            .iter()
            .filter(|u| !existing.contains(u))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if c.kind == "group" && (existing.len() + new.len()) as u64 > max_members(limits) {
            return Err(ApiError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "a group may have at most {} members (max_group_members)",
                    max_members(limits)
                ),
            ));
        }
        let role = input.role.unwrap_or(Role::Member);
        let now = now();
        // Every new member or none, each with its event.
        let txn = starling_core::db::begin_write(&self.db).await?;
        let mut added = Vec::new();
        for u in &new {
            let m = new_member(app, id, u, role, c.last_seq, now)
                .insert(&txn)
                .await?;
            added.push(member_out(m));
        }
        for m in &added {
            self.emit(
                &txn,
                app,
                "member.added",
                &MemberData {
                    conversation_id: id.to_owned(),
                    member: m.clone(),
                },
            )
            .await?;
        }
        self.commit_events(txn).await?;
        let to = self.recipients(app, id).await?;
        for m in &added {
            self.deliver(
                app,
                &to,
                &Event::MemberAdded {
                    conversation_id: id.to_owned(),
                    member: m.clone(),
                },
            )
            .await;
        }
        Ok(added)
    }

    async fn recipients_all(&self, app: &str, cid: &str) -> Result<Vec<String>> {
        Ok(scoped::<member::Entity>(app)
            .filter(member::Column::ConversationId.eq(cid))
            .select_only()
            .column(member::Column::UserId)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    /// Removes a member.
    pub async fn remove_member(&self, app: &str, id: &str, user: &str) -> Result<()> {
        let c = self.conversation_model(app, id).await?;
        if c.kind == "direct" {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "members of a direct conversation cannot be removed",
            ));
        }
        if self.member_model(app, id, user).await?.is_none() {
            return Err(ApiError::not_found("member", user));
        }
        let to = self.recipients(app, id).await?;
        let txn = starling_core::db::begin_write(&self.db).await?;
        member::Entity::delete_many()
            .filter(member::Column::AppId.eq(app))
            .filter(member::Column::ConversationId.eq(id))
            .filter(member::Column::UserId.eq(user))
            .exec(&txn)
            .await?;
        self.emit(
            &txn,
            app,
            "member.removed",
            &MemberRemovedData {
                conversation_id: id.to_owned(),
                user_id: user.to_owned(),
            },
        )
        .await?;
        self.commit_events(txn).await?;
        self.deliver(
            app,
            &to,
            &Event::MemberRemoved {
                conversation_id: id.to_owned(),
                user_id: user.to_owned(),
            },
        )
        .await;
        Ok(())
    }

    /// Changes a member's role, mute or ban.
    pub async fn update_member(
        &self,
        app: &str,
        id: &str,
        user: &str,
        patch: MemberPatch,
    ) -> Result<MemberOut> {
        self.conversation_model(app, id).await?;
        let m = self
            .member_model(app, id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("member", user))?;
        let old_role = m.role.clone();
        let mut a: member::ActiveModel = m.into();
        if let Some(r) = patch.role {
            a.role = Set(r.as_str().into());
        }
        if let Some(mu) = patch.muted_until {
            a.muted_until = Set(mu);
        }
        if let Some(b) = patch.banned {
            a.banned = Set(b);
        }
        let txn = starling_core::db::begin_write(&self.db).await?;
        let out = member_out(a.update(&txn).await?);
        if patch.role.is_some_and(|r| r.as_str() != old_role) {
            self.emit(
                &txn,
                app,
                "member.role_changed",
                &MemberData {
                    conversation_id: id.to_owned(),
                    member: out.clone(),
                },
            )
            .await?;
        }
        self.commit_events(txn).await?;
        let mut to = self.recipients(app, id).await?;
        if !to.contains(&out.user_id) {
            to.push(out.user_id.clone());
        }
        self.deliver(
            app,
            &to,
            &Event::MemberUpdated {
                conversation_id: id.to_owned(),
                member: out.clone(),
            },
        )
        .await;
        Ok(out)
    }

    /// Members of a conversation, by user id.
    pub async fn list_members(
        &self,
        app: &str,
        id: &str,
        page: &PageParams,
    ) -> Result<Page<MemberOut>> {
        self.conversation_model(app, id).await?;
        let q = scoped::<member::Entity>(app).filter(member::Column::ConversationId.eq(id));
        paginate(&self.db, q, member::Column::UserId, page, member_out, |m| {
            m.user_id.as_str()
        })
        .await
    }

    /// A user joins a broadcast room.
    pub async fn join_room(&self, app: &str, id: &str, user: &str) -> Result<MemberOut> {
        let c = self.conversation_model(app, id).await?;
        if c.kind != "room" {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("conversation {id} is not a room; members are added by its admins"),
            ));
        }
        if let Some(m) = self.member_model(app, id, user).await? {
            if m.banned {
                return Err(ApiError::new(
                    ErrorCode::Banned,
                    format!("user {user} is banned from conversation {id}"),
                ));
            }
            return Ok(member_out(m));
        }
        let m = new_member(app, id, user, Role::Member, c.last_seq, now())
            .insert(&self.db)
            .await?;
        Ok(member_out(m))
    }

    /// A user leaves a broadcast room.
    pub async fn leave_room(&self, app: &str, id: &str, user: &str) -> Result<()> {
        let c = self.conversation_model(app, id).await?;
        if c.kind != "room" {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("conversation {id} is not a room"),
            ));
        }
        member::Entity::delete_many()
            .filter(member::Column::AppId.eq(app))
            .filter(member::Column::ConversationId.eq(id))
            .filter(member::Column::UserId.eq(user))
            // A ban is kept: leaving and joining again must not lift it.
            .filter(member::Column::Banned.eq(false))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// A user's conversations with unread counts and last messages.
    pub async fn list_user_conversations(
        &self,
        app: &str,
        user: &str,
        page: &PageParams,
    ) -> Result<Page<UserConversationOut>> {
        self.user_model(app, user).await?;
        let q = scoped::<member::Entity>(app).filter(member::Column::UserId.eq(user));
        let page = paginate(
            &self.db,
            q,
            member::Column::ConversationId,
            page,
            |m| m,
            |m| m.conversation_id.as_str(),
        )
        .await?;
        let mut out = Vec::with_capacity(page.data.len());
        for m in page.data {
            let c = self.conversation_model(app, &m.conversation_id).await?;
            let last_message = if c.last_seq > 0 {
                self.message_at(app, &c.id, c.last_seq).await?
            } else {
                None
            };
            let unread_count = (c.last_seq - m.last_read_seq).max(0);
            out.push(UserConversationOut {
                conversation: self.conversation_out(c).await?,
                membership: member_out(m),
                unread_count,
                last_message,
            });
        }
        Ok(Page {
            data: out,
            next_cursor: page.next_cursor,
        })
    }
}

impl Messaging {
    /// The users who share a direct or group conversation with `user` (presence audience),
    /// at most 1000.
    pub async fn contacts(&self, app: &str, user: &str) -> Result<Vec<String>> {
        use sea_orm::sea_query::Query;
        // One round trip (it runs for every first connection and last disconnection): the
        // members of the user's conversations that are not rooms, each subquery in the app.
        let mine = Query::select()
            .column(member::Column::ConversationId)
            .from(member::Entity)
            .and_where(member::Column::AppId.eq(app))
            .and_where(member::Column::UserId.eq(user))
            .to_owned();
        let not_rooms = Query::select()
            .column(conversation::Column::Id)
            .from(conversation::Entity)
            .and_where(conversation::Column::AppId.eq(app))
            .and_where(conversation::Column::Kind.ne("room"))
            .to_owned();
        Ok(scoped::<member::Entity>(app)
            .filter(member::Column::ConversationId.in_subquery(mine))
            .filter(member::Column::ConversationId.in_subquery(not_rooms))
            .filter(member::Column::UserId.ne(user))
            .select_only()
            .column(member::Column::UserId)
            .distinct()
            .order_by_asc(member::Column::UserId)
            .limit(1000)
            .into_tuple()
            .all(&self.db)
            .await?)
    }
}

/// Whether a user whose membership row says `banned` (`None`: no row) counts as a member
/// (`banned` or `forbidden`, naming the conversation, if not).
pub(crate) fn is_member(cid: &str, user: &str, banned: Option<bool>) -> Result<()> {
    match banned {
        Some(false) => Ok(()),
        Some(true) => Err(ApiError::new(
            ErrorCode::Banned,
            format!("user {user} is banned from conversation {cid}"),
        )),
        None => Err(not_member(cid)),
    }
}
