//! The data plane's wire types: resources as the server API and WebSocket clients see them,
//! the events pushed to clients, and the frames clients send. One set of types for both doors,
//! so a message looks the same over REST and over the socket.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// An end user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserOut {
    /// The customer's id for the user.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Avatar image URL.
    pub avatar_url: Option<String>,
    /// Custom JSON object.
    pub metadata: Value,
    /// `active` or `deactivated`.
    pub status: String,
    /// Banned from the whole app.
    pub banned: bool,
    /// When a temporary ban ends.
    pub banned_until: Option<DateTime<Utc>>,
    /// Whether the user has a connection open now.
    #[serde(default)]
    pub online: bool,
    /// When the user was last connected.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub updated_at: DateTime<Utc>,
}

/// An attachment's metadata (the file itself lives where the URL says).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Where the file is (http or https).
    pub url: String,
    /// MIME type, e.g. `image/png`.
    #[serde(rename = "type")]
    pub mime_type: String,
    /// Size in bytes.
    pub size: u64,
    /// File name to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageOut {
    /// Id.
    pub id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// Its place in the conversation: 1, 2, 3… with no gaps.
    pub seq: i64,
    /// The sender; `null` for system messages.
    pub sender_id: Option<String>,
    /// The sender's idempotency key.
    pub client_msg_id: Option<String>,
    /// `text`, `custom` or `system`.
    pub kind: String,
    /// Text body.
    pub text: Option<String>,
    /// Custom JSON payload.
    pub custom: Option<Value>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// Mentioned user ids.
    pub mentions: Vec<String>,
    /// The message this one replies to (thread).
    pub parent_id: Option<String>,
    /// Replies in its thread.
    pub reply_count: i64,
    /// Reaction counts per emoji.
    pub reactions: BTreeMap<String, i64>,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// When it was last edited.
    pub edited_at: Option<DateTime<Utc>>,
    /// Deleted for everyone: content gone, seq kept.
    pub deleted: bool,
}

/// A conversation member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemberOut {
    /// The user.
    pub user_id: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    /// Muted members cannot post until then.
    pub muted_until: Option<DateTime<Utc>>,
    /// Banned from this conversation.
    pub banned: bool,
    /// The newest seq the member has read.
    pub last_read_seq: i64,
    /// When the member joined.
    pub joined_at: DateTime<Utc>,
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationOut {
    /// Id.
    pub id: String,
    /// `direct`, `group` or `room`.
    pub kind: String,
    /// Display name.
    pub name: Option<String>,
    /// Custom JSON object.
    pub metadata: Value,
    /// Who may post: `members` or `admins`.
    pub post_policy: String,
    /// The newest message's seq (0 when none).
    pub last_seq: i64,
    /// When the newest message was sent.
    pub last_message_at: Option<DateTime<Utc>>,
    /// How many members it has.
    pub member_count: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One of a user's conversations, with what the user has not read yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserConversationOut {
    /// The conversation.
    pub conversation: ConversationOut,
    /// The user's membership.
    pub membership: MemberOut,
    /// Messages after the user's last read seq.
    pub unread_count: i64,
    /// The newest message, if any.
    pub last_message: Option<MessageOut>,
}

/// Something that happened, pushed to every connection of every user it concerns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type")]
pub enum Event {
    /// A new message.
    #[serde(rename = "message.new")]
    MessageNew {
        /// The message.
        message: MessageOut,
    },
    /// A message was edited, or its reactions or thread changed.
    #[serde(rename = "message.updated")]
    MessageUpdated {
        /// The message as it is now.
        message: MessageOut,
    },
    /// A message was deleted for everyone.
    #[serde(rename = "message.deleted")]
    MessageDeleted {
        /// The tombstone.
        message: MessageOut,
    },
    /// A reaction was added.
    #[serde(rename = "reaction.added")]
    ReactionAdded {
        /// Conversation.
        conversation_id: String,
        /// Message.
        message_id: String,
        /// Who reacted.
        user_id: String,
        /// With what.
        emoji: String,
        /// Counts per emoji now.
        reactions: BTreeMap<String, i64>,
    },
    /// A reaction was removed.
    #[serde(rename = "reaction.removed")]
    ReactionRemoved {
        /// Conversation.
        conversation_id: String,
        /// Message.
        message_id: String,
        /// Whose reaction.
        user_id: String,
        /// Which emoji.
        emoji: String,
        /// Counts per emoji now.
        reactions: BTreeMap<String, i64>,
    },
    /// A member read up to a seq (read receipt).
    #[serde(rename = "read")]
    Read {
        /// Conversation.
        conversation_id: String,
        /// Who read.
        user_id: String,
        /// Up to which seq.
        seq: i64,
    },
    /// A member started or stopped typing.
    #[serde(rename = "typing")]
    Typing {
        /// Conversation.
        conversation_id: String,
        /// Who.
        user_id: String,
        /// `start` or `stop`.
        state: String,
    },
    /// A user came online or went offline.
    #[serde(rename = "presence")]
    Presence {
        /// Who.
        user_id: String,
        /// Online now.
        online: bool,
        /// When last seen (when going offline).
        last_seen_at: Option<DateTime<Utc>>,
    },
    /// A user joined a conversation.
    #[serde(rename = "member.added")]
    MemberAdded {
        /// Conversation.
        conversation_id: String,
        /// The member.
        member: MemberOut,
    },
    /// A member changed (role, mute, ban).
    #[serde(rename = "member.updated")]
    MemberUpdated {
        /// Conversation.
        conversation_id: String,
        /// The member now.
        member: MemberOut,
    },
    /// A user left or was removed.
    #[serde(rename = "member.removed")]
    MemberRemoved {
        /// Conversation.
        conversation_id: String,
        /// Who.
        user_id: String,
    },
    /// A conversation's name, metadata or policy changed.
    #[serde(rename = "conversation.updated")]
    ConversationUpdated {
        /// The conversation now.
        conversation: ConversationOut,
    },
    /// A conversation was deleted.
    #[serde(rename = "conversation.deleted")]
    ConversationDeleted {
        /// Which.
        conversation_id: String,
    },
}

/// What to send: text, a custom payload, or both, with optional attachments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageContent {
    /// The sender's idempotency key (1..=64 bytes): a retry with the same key returns the
    /// original message and delivers nothing twice.
    pub client_msg_id: Option<String>,
    /// Text body.
    pub text: Option<String>,
    /// Custom JSON payload.
    pub custom: Option<Value>,
    /// Attachments (metadata only).
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Mentioned user ids.
    #[serde(default)]
    pub mentions: Vec<String>,
    /// Reply in the thread of this message.
    pub parent_id: Option<String>,
}

/// An edit: the new text and/or custom payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageEdit {
    /// New text.
    pub text: Option<String>,
    /// New custom payload.
    pub custom: Option<Value>,
}

/// A frame a client sends over the WebSocket. `id` is echoed in the `ack` or `error` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Send a message.
    Send {
        /// Request id.
        id: Option<String>,
        /// Conversation.
        conversation_id: String,
        /// The content.
        #[serde(flatten)]
        content: MessageContent,
    },
    /// Edit one's own message.
    Edit {
        /// Request id.
        id: Option<String>,
        /// Conversation.
        conversation_id: String,
        /// Message.
        message_id: String,
        /// The new content.
        #[serde(flatten)]
        edit: MessageEdit,
    },
    /// Delete one's own message for everyone (admins and owners: any message).
    Delete {
        /// Request id.
        id: Option<String>,
        /// Conversation.
        conversation_id: String,
        /// Message.
        message_id: String,
    },
    /// Add or remove a reaction.
    React {
        /// Request id.
        id: Option<String>,
        /// Conversation.
        conversation_id: String,
        /// Message.
        message_id: String,
        /// Emoji (1..=64 bytes).
        emoji: String,
        /// Remove instead of add.
        #[serde(default)]
        remove: bool,
    },
    /// Mark read up to a seq (sends read receipts).
    Read {
        /// Request id.
        id: Option<String>,
        /// Conversation.
        conversation_id: String,
        /// Up to which seq.
        seq: i64,
    },
    /// Typing indicator.
    Typing {
        /// Request id.
        id: Option<String>,
        /// Conversation.
        conversation_id: String,
        /// `start` or `stop`.
        state: String,
    },
    /// Join a broadcast room (members come and go freely).
    Subscribe {
        /// Request id.
        id: Option<String>,
        /// The room.
        conversation_id: String,
    },
    /// Leave a broadcast room.
    Unsubscribe {
        /// Request id.
        id: Option<String>,
        /// The room.
        conversation_id: String,
    },
    /// Messages after a seq (to catch up after a gap or a reconnect).
    Sync {
        /// Request id.
        id: Option<String>,
        /// Conversation.
        conversation_id: String,
        /// Return messages with seq greater than this.
        after_seq: i64,
        /// At most this many (1..=200, default 100).
        limit: Option<u32>,
    },
    /// Liveness check; answered with an ack.
    Ping {
        /// Request id.
        id: Option<String>,
    },
}

impl ClientFrame {
    /// The request id.
    pub fn id(&self) -> Option<&str> {
        match self {
            ClientFrame::Send { id, .. }
            | ClientFrame::Edit { id, .. }
            | ClientFrame::Delete { id, .. }
            | ClientFrame::React { id, .. }
            | ClientFrame::Read { id, .. }
            | ClientFrame::Typing { id, .. }
            | ClientFrame::Subscribe { id, .. }
            | ClientFrame::Unsubscribe { id, .. }
            | ClientFrame::Sync { id, .. }
            | ClientFrame::Ping { id } => id.as_deref(),
        }
    }
}

/// A frame the server sends that is not an event: the greeting, and replies to requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame on a new connection.
    Hello {
        /// The connection.
        connection_id: String,
        /// The user.
        user_id: String,
        /// The app.
        app_id: String,
        /// The server pings at this interval; answer pongs (browsers do by themselves).
        heartbeat_ms: u64,
        /// Largest frame the server accepts, in bytes.
        max_frame_bytes: usize,
    },
    /// A request succeeded.
    Ack {
        /// The request id.
        id: Option<String>,
        /// What the request produced (a message for `send`, messages for `sync`, …).
        result: Value,
    },
    /// A request (or a frame) was refused; the connection stays open.
    Error {
        /// The request id, when the frame had one.
        id: Option<String>,
        /// Machine-readable code (the same codes as the REST API).
        code: String,
        /// What was wrong.
        message: String,
    },
    /// Pushes to this connection may have been missed (the cell's registry was unreachable or
    /// lost its state): catch up every conversation you follow with `sync` from your last seq,
    /// as after a reconnect. Start within a random delay up to `spread_ms`, so that the
    /// connections of a node do not all sync at once.
    Resync {
        /// Why: `registry_unavailable` or `registry_lost_state`.
        reason: String,
        /// Spread the catch-up over this many milliseconds.
        spread_ms: u64,
    },
}
