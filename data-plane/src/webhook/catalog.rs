//! The webhook event catalog: the envelope every event travels in, the `data` of each event
//! type, and their JSON Schemas (draft 2020-12), generated from these types into
//! `sdk-specs/webhooks/` by `starling specs` (a test fails when the committed files drift).
//!
//! Every event is `{id, type, app_id, timestamp, version, data}`. `version` is the version of
//! the `data` shape of that type; a change that could break a receiver gets a new version.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::protocol::{ConversationOut, MemberOut, MessageOut, UserOut};

/// The version of every event's `data` today.
pub const DATA_VERSION: u32 = 1;

/// `message.created`, `message.updated`, `message.deleted`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageData {
    /// The message as it is now (a tombstone, for `message.deleted`).
    pub message: MessageOut,
}

/// `reaction.added`, `reaction.removed`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReactionData {
    /// Conversation.
    pub conversation_id: String,
    /// Message.
    pub message_id: String,
    /// Who reacted.
    pub user_id: String,
    /// With what.
    pub emoji: String,
    /// Counts per emoji now.
    pub reactions: BTreeMap<String, i64>,
}

/// `conversation.created`, `conversation.updated`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationData {
    /// The conversation as it is now.
    pub conversation: ConversationOut,
}

/// `conversation.deleted`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationDeletedData {
    /// The conversation that is gone, with its messages.
    pub conversation_id: String,
}

/// `member.added`, `member.role_changed`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberData {
    /// Conversation.
    pub conversation_id: String,
    /// The member as they are now.
    pub member: MemberOut,
}

/// `member.removed`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberRemovedData {
    /// Conversation.
    pub conversation_id: String,
    /// Who left or was removed.
    pub user_id: String,
}

/// `user.created`, `user.updated`, `user.banned`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserData {
    /// The user as they are now.
    pub user: UserOut,
}

/// `user.deleted`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserDeletedData {
    /// The user that is gone (their messages are tombstones now).
    pub user_id: String,
}

/// `read_receipt.updated` (opt-in: only endpoints that list it get it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadReceiptData {
    /// Conversation.
    pub conversation_id: String,
    /// Who read.
    pub user_id: String,
    /// Up to which seq.
    pub seq: i64,
}

/// `usage.threshold_reached`: a metered quantity of the app crossed a threshold of its plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageThresholdData {
    /// What is metered, e.g. `messages` or `monthly_active_users`.
    pub metric: String,
    /// The threshold crossed.
    pub threshold: i64,
    /// The value now.
    pub value: i64,
    /// The start of the billing period it counts in.
    pub period_start: DateTime<Utc>,
}

/// `webhook.endpoint_disabled`: an endpoint failed for too long and was disabled. Enable it
/// again (admin or console API) once it works; replay what it missed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointDisabledData {
    /// The endpoint.
    pub endpoint_id: String,
    /// Its URL.
    pub url: String,
    /// Failing without a success since then.
    pub failing_since: DateTime<Utc>,
    /// Why, in words.
    pub reason: String,
}

/// One entry of the catalog.
pub struct Entry {
    /// The event type.
    pub name: &'static str,
    /// What it means.
    pub description: &'static str,
    /// The schema name of its `data`.
    pub data: String,
    /// The named schemas `data` needs (itself included).
    pub schemas: BTreeMap<String, Value>,
}

fn entry<T: ToSchema>(name: &'static str, description: &'static str) -> Entry {
    let mut deps = Vec::new();
    T::schemas(&mut deps);
    let mut schemas: BTreeMap<String, Value> = deps
        .into_iter()
        .map(|(n, s)| (n, serde_json::to_value(s).expect("schemas serialize")))
        .collect();
    schemas.insert(
        T::name().into_owned(),
        serde_json::to_value(<T as utoipa::PartialSchema>::schema()).expect("schemas serialize"),
    );
    Entry {
        name,
        description,
        data: T::name().into_owned(),
        schemas,
    }
}

/// Every event type with its description and `data` schema, in catalog order.
pub fn catalog() -> Vec<Entry> {
    vec![
        entry::<MessageData>(
            "message.created",
            "A message was sent (by a user or by the system).",
        ),
        entry::<MessageData>(
            "message.updated",
            "A message was edited, or its thread changed.",
        ),
        entry::<MessageData>(
            "message.deleted",
            "A message was deleted for everyone; `data.message` is the tombstone.",
        ),
        entry::<ReactionData>("reaction.added", "A user reacted to a message."),
        entry::<ReactionData>("reaction.removed", "A user took a reaction back."),
        entry::<ConversationData>("conversation.created", "A conversation was created."),
        entry::<ConversationData>(
            "conversation.updated",
            "A conversation's name, metadata or post policy changed.",
        ),
        entry::<ConversationDeletedData>(
            "conversation.deleted",
            "A conversation was deleted with its messages.",
        ),
        entry::<MemberData>("member.added", "A user became a member of a conversation."),
        entry::<MemberRemovedData>("member.removed", "A member left or was removed."),
        entry::<MemberData>("member.role_changed", "A member's role changed."),
        entry::<UserData>("user.created", "A user was created."),
        entry::<UserData>(
            "user.updated",
            "A user's profile or status changed, or a ban was lifted.",
        ),
        entry::<UserDeletedData>("user.deleted", "A user and their data were deleted."),
        entry::<UserData>("user.banned", "A user was banned from the app."),
        entry::<ReadReceiptData>(
            "read_receipt.updated",
            "A member read a conversation up to a seq. Opt-in: only endpoints that list this type get it.",
        ),
        entry::<UsageThresholdData>(
            "usage.threshold_reached",
            "A metered quantity of the app crossed a threshold of its plan.",
        ),
        entry::<EndpointDisabledData>(
            "webhook.endpoint_disabled",
            "An endpoint failed for too long and was disabled.",
        ),
    ]
}

/// Rewrites utoipa's `#/components/schemas/X` references to `#/$defs/X`.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                *r = format!("#/$defs/{name}");
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// The JSON Schema of one event type, envelope included.
pub fn event_schema(e: &Entry) -> Value {
    let mut defs = Map::new();
    for (n, s) in &e.schemas {
        defs.insert(n.clone(), s.clone());
    }
    let mut v = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://starling.invalid/sdk-specs/webhooks/{}.schema.json", e.name),
        "title": e.name,
        "description": e.description,
        "type": "object",
        "required": ["id", "type", "app_id", "timestamp", "version", "data"],
        "properties": {
            "id": { "type": "string", "description": "The event id (`evt_…`), also in the `webhook-id` header; the same on every retry and replay: dedupe by it." },
            "type": { "const": e.name },
            "app_id": { "type": "string", "description": "The app the event belongs to." },
            "timestamp": { "type": "string", "format": "date-time", "description": "When it happened." },
            "version": { "const": DATA_VERSION, "description": "Version of the `data` shape of this type." },
            "data": { "$ref": format!("#/$defs/{}", e.data) },
        },
        "$defs": defs,
    });
    rewrite_refs(&mut v);
    v
}

/// The files of `sdk-specs/webhooks/`: `(file name, contents)`, one schema per event type.
pub fn schema_files() -> Vec<(String, String)> {
    catalog()
        .iter()
        .map(|e| {
            let mut s = serde_json::to_string_pretty(&event_schema(e)).expect("serializes");
            s.push('\n');
            (format!("{}.schema.json", e.name), s)
        })
        .collect()
}

/// The event catalog as Markdown, for `docs/WEBHOOKS.md` (between its catalog markers).
pub fn catalog_markdown() -> String {
    let mut s = String::from("| type | meaning | `data` | schema |\n| --- | --- | --- | --- |\n");
    for e in catalog() {
        let fields: Vec<String> = e.schemas[&e.data]["properties"]
            .as_object()
            .map(|p| p.keys().map(|k| format!("`{k}`")).collect())
            .unwrap_or_default();
        s.push_str(&format!(
            "| `{}` | {} | {} | [`{}.schema.json`](../sdk-specs/webhooks/{}.schema.json) |\n",
            e.name,
            e.description,
            fields.join(", "),
            e.name,
            e.name
        ));
    }
    s
}

/// Where the generated catalog starts in `docs/WEBHOOKS.md`.
pub const CATALOG_BEGIN: &str = "<!-- event catalog: generated by `cargo run -- specs` -->";
/// Where it ends.
pub const CATALOG_END: &str = "<!-- end of event catalog -->";

/// `doc` with the text between the catalog markers replaced by [`catalog_markdown`].
pub fn with_catalog(doc: &str) -> Option<String> {
    let (head, rest) = doc.split_once(CATALOG_BEGIN)?;
    let (_, tail) = rest.split_once(CATALOG_END)?;
    Some(format!(
        "{head}{CATALOG_BEGIN}\n{}{CATALOG_END}{tail}",
        catalog_markdown()
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalog_is_core_s_list() {
        let names: Vec<_> = super::catalog().iter().map(|e| e.name).collect();
        let core: Vec<_> = starling_core::webhook::EVENT_TYPES
            .iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, core);
    }
}
