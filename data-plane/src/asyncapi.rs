//! The WebSocket protocol as a spec: an AsyncAPI 3.0 document and standalone JSON Schemas
//! (draft 2020-12) of the frames, both generated from the utoipa schemas of the wire types in
//! [`crate::protocol`], and written into `sdk-specs/asyncapi/` by `starling specs`.
//!
//! The utoipa schemas are reshaped on the way, so that both outputs say what the gateway does:
//!
//! - every frame type (a variant of [`ClientFrame`], [`ServerFrame`] or [`Event`]) gets a named
//!   schema (`SendFrame`, `HelloFrame`, `MessageNewEvent`, …) and its own AsyncAPI message;
//! - a `#[serde(flatten)]`ed struct (the content of `send` and `edit`) is merged into its frame's
//!   object: utoipa's `allOf` of it would refuse every frame, as the struct denies unknown fields;
//! - client frames say `additionalProperties: false`, as the gateway refuses unknown fields;
//!   server frames and events do not, so that clients stay open to fields added later.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::protocol::{ClientFrame, Event, ServerFrame};

/// Where schemas live in the AsyncAPI document (and where utoipa's references point).
const COMPONENTS: &str = "#/components/schemas/";
/// Where they live in a standalone JSON Schema file.
const DEFS: &str = "#/$defs/";

/// The frames of one kind.
struct Family {
    /// The Rust type and its schema's name: `ClientFrame`.
    root: &'static str,
    /// Message names start with it: `client` (`clientSend`).
    prefix: &'static str,
    /// The standalone JSON Schema file.
    file: &'static str,
    /// The frame types, in declaration order.
    variants: Vec<Variant>,
}

/// One frame type.
struct Variant {
    /// The `type` tag: `send`, `message.new`.
    tag: String,
    /// Its schema: `SendFrame`, `MessageNewEvent`.
    schema: String,
    /// Its AsyncAPI message: `clientSend`, `eventMessageNew`.
    message: String,
    /// From the variant's doc comment.
    description: String,
}

/// Every named schema (the frame roots, one per frame type, and the types they refer to), and
/// the three families of frames.
struct Protocol {
    schemas: BTreeMap<String, Value>,
    client: Family,
    server: Family,
    event: Family,
}

impl Protocol {
    fn new() -> Self {
        let mut schemas = BTreeMap::new();
        let client = family::<ClientFrame>(
            "ClientFrame",
            "client",
            "Frame",
            "client-frame.schema.json",
            true,
            &mut schemas,
        );
        let server = family::<ServerFrame>(
            "ServerFrame",
            "server",
            "Frame",
            "server-frame.schema.json",
            false,
            &mut schemas,
        );
        let event = family::<Event>(
            "Event",
            "event",
            "Event",
            "event.schema.json",
            false,
            &mut schemas,
        );
        // Types only flattened into frames (`MessageContent`, `MessageEdit`) are not referred
        // to any more: keep only what the roots reach.
        let reach = reachable(&schemas, [client.root, server.root, event.root]);
        schemas.retain(|name, _| reach.contains(name));
        Self {
            schemas,
            client,
            server,
            event,
        }
    }

    fn families(&self) -> [&Family; 3] {
        [&self.client, &self.server, &self.event]
    }
}

/// Collects the schemas of one frame enum: the root (a `oneOf` of references), one schema per
/// variant, and the types they refer to.
fn family<T: ToSchema>(
    root_name: &'static str,
    prefix: &'static str,
    suffix: &str,
    file: &'static str,
    strict: bool,
    schemas: &mut BTreeMap<String, Value>,
) -> Family {
    assert_eq!(T::name(), root_name);
    let root = to_value(<T as utoipa::PartialSchema>::schema());
    let mut deps = Vec::new();
    <T as ToSchema>::schemas(&mut deps);
    let deps: BTreeMap<String, Value> = deps
        .into_iter()
        .map(|(name, schema)| (name, to_value(schema)))
        .collect();

    let mut variants = Vec::new();
    let mut one_of = Vec::new();
    for v in root["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{root_name}: expected a oneOf of its variants"))
    {
        let mut flat = flatten(v, &deps);
        let tag = flat["properties"]["type"]["enum"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{root_name}: a variant without a `type` tag: {v}"))
            .to_owned();
        if strict {
            flat["additionalProperties"] = Value::Bool(false);
        }
        let schema = format!("{}{suffix}", pascal(&tag));
        let description = flat["description"].as_str().unwrap_or_default().to_owned();
        insert(schemas, &schema, flat);
        one_of.push(json!({ "$ref": format!("{COMPONENTS}{schema}") }));
        variants.push(Variant {
            message: format!("{prefix}{}", pascal(&tag)),
            tag,
            schema,
            description,
        });
    }
    let mut root_schema = json!({ "oneOf": one_of });
    if let Some(d) = root.get("description") {
        root_schema["description"] = d.clone();
    }
    insert(schemas, root_name, root_schema);
    for (name, schema) in deps {
        insert(schemas, &name, schema);
    }
    Family {
        root: root_name,
        prefix,
        file,
        variants,
    }
}

fn to_value<S: serde::Serialize>(s: S) -> Value {
    serde_json::to_value(s).expect("utoipa schemas serialize")
}

/// Adds a named schema; two different schemas under one name would make the document lie.
fn insert(schemas: &mut BTreeMap<String, Value>, name: &str, schema: Value) {
    if let Some(old) = schemas.get(name) {
        assert_eq!(old, &schema, "two different schemas are named {name}");
    }
    schemas.insert(name.to_owned(), schema);
}

/// A variant's schema as one object: the members of an `allOf` (utoipa's form of
/// `#[serde(flatten)]`) merged, referenced members inlined from `deps`.
fn flatten(variant: &Value, deps: &BTreeMap<String, Value>) -> Value {
    let Some(parts) = variant.get("allOf").and_then(Value::as_array) else {
        return variant.clone();
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    for part in parts {
        let part = match part.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix(COMPONENTS)
                    .unwrap_or_else(|| panic!("unexpected reference {r}"));
                deps.get(name)
                    .unwrap_or_else(|| panic!("{name} is referenced but not collected"))
            }
            None => part,
        };
        assert!(
            part.get("allOf").is_none() && part.get("oneOf").is_none(),
            "cannot flatten a composed schema: {part}"
        );
        if let Some(p) = part.get("properties").and_then(Value::as_object) {
            for (k, v) in p {
                assert!(
                    properties.insert(k.clone(), v.clone()).is_none(),
                    "field {k} appears twice in a flattened frame"
                );
            }
        }
        if let Some(r) = part.get("required").and_then(Value::as_array) {
            required.extend(r.iter().cloned());
        }
    }
    let mut out = json!({ "type": "object", "properties": properties, "required": required });
    if let Some(d) = variant.get("description") {
        out["description"] = d.clone();
    }
    out
}

/// `message.new` → `MessageNew`.
fn pascal(tag: &str) -> String {
    tag.split(['.', '_', '-'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The names of the schemas a schema refers to.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let name = r
                            .strip_prefix(COMPONENTS)
                            .unwrap_or_else(|| panic!("unexpected reference {r}"));
                        out.insert(name.to_owned());
                    }
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The names of the schemas `roots` reach, the roots included.
fn reachable<'a>(
    schemas: &BTreeMap<String, Value>,
    roots: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().map(str::to_owned).collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let schema = schemas
            .get(&name)
            .unwrap_or_else(|| panic!("{name} is referenced but not collected"));
        let mut next = BTreeSet::new();
        refs(schema, &mut next);
        todo.extend(next.into_iter().filter(|n| !seen.contains(n)));
    }
    seen
}

/// Rewrites every `#/components/schemas/X` reference to `prefix` + `X`.
fn rewrite_refs(v: &mut Value, prefix: &str) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                match v {
                    Value::String(r) if k == "$ref" => {
                        if let Some(name) = r.strip_prefix(COMPONENTS) {
                            *r = format!("{prefix}{name}");
                        }
                    }
                    _ => rewrite_refs(v, prefix),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| rewrite_refs(v, prefix)),
        _ => {}
    }
}

/// Object keys in sorted order, whatever serde_json's `preserve_order` says, so the committed
/// files do not depend on which features a build unified.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let m: BTreeMap<String, Value> = m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(m.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        v => v,
    }
}

fn pretty(v: Value) -> String {
    let mut s = serde_json::to_string_pretty(&sorted(v)).expect("JSON serializes");
    s.push('\n');
    s
}

const DESCRIPTION: &str = "\
The protocol between end users' apps and a Starling data-plane node: one WebSocket per device, \
JSON text frames both ways.

## Connecting

`GET /v1/connect?token=<user JWT>` upgrades to a WebSocket. The user token is minted by the \
customer's backend with the server API (`POST /v1/users/{user_id}/tokens`); clients that can set \
headers may send `Authorization: Bearer <user JWT>` instead (browsers cannot). Before the upgrade \
the node refuses, with an HTTP error `{code, message, request_id}`: a missing, invalid, \
expired, not yet valid (`nbf`) or revoked token (401 `unauthorized`), a banned user (403 \
`banned`), a deactivated user (403 `user_deactivated`), a user that does not exist or was \
deleted (404 `not_found`), a suspended app (403 `app_suspended`), and a user or app over its \
connection limit (429 `quota_exceeded` with `Retry-After`).

User tokens are HS256 JWTs whose header names the app's token secret (`kid`), with the claims \
`sub` (user id), `app_id`, `exp` and `iat` (required), `nbf` (optional, honoured) and `jti` \
(optional; tokens the server API mints carry one, returned as `token_id`). The customer's \
backend revokes tokens with the server API: every token of a user issued until now (`POST \
/v1/users/{user_id}/tokens/revoke`, which compares `iat`) or one by its id (`DELETE \
/v1/users/{user_id}/tokens/{token_id}`).

## Frames

Every frame is a JSON object with a `type`. Binary frames are not supported.

- The server's first frame is `hello`: the connection id, the user and app, the heartbeat \
interval and the largest frame it accepts.
- The client sends requests (`send`, `edit`, `delete`, `react`, `read`, `typing`, `subscribe`, \
`unsubscribe`, `sync`, `ping`). Each may carry an `id` of the client's choosing; the server \
answers every request with exactly one `ack` (with a `result`) or `error` (with a \
machine-readable `code`, the same codes as the server API), echoing that `id`. Replies come in \
the order the requests were sent.
- A frame the server cannot understand (not JSON, unknown `type`, a missing, unknown or \
mistyped field) is answered with an `error` (`invalid_json` or `invalid_frame`); the connection \
stays open.
- Events (`message.new`, `read`, `typing`, `presence`, …) are pushed to every connection of \
every user they concern as they happen, between the replies. Server frames and events share one \
stream: tell them apart by `type`, and ignore fields you do not know.

`result` of an `ack`, per request: `send` → `{message, duplicate}` (`duplicate` when \
`client_msg_id` was seen before: the original message, delivered once); `edit`, `delete` → \
`{message}`; `react` → `{reactions}`; `read` → `{last_read_seq}`; `subscribe` → `{member}`; \
`sync` → `{messages, has_more}` (oldest first); `typing`, `unsubscribe` → `{}`; `ping` → \
`{pong: true}`.

Messages in a conversation have gap-free sequence numbers (`seq`). After a reconnect, or on \
seeing a gap, `sync` the conversation from the last seq seen.

A `resync` frame says pushes to this connection may have been missed although it stayed open \
(the cell's registry of connections was unreachable or lost its state, and is back): `sync` \
every conversation you follow from the last seq seen, as after a reconnect, starting after a \
random delay of up to `spread_ms` so that a node's clients do not all sync at once.

## Heartbeats

The server sends a WebSocket ping every `heartbeat_ms` (from `hello`); clients answer with a \
pong (browsers do so by themselves). A connection the server hears nothing from (no frame, no \
pong) for three heartbeats gets an `error` with code `heartbeat_timeout` and is closed (4002).

## Close codes

- `1001`: the node is shutting down; reconnect (another node will answer).
- `1009`: a frame was larger than `max_frame_bytes`; the connection ends (some stacks report \
`1006` instead, as the node may drop it without a close frame).
- `4001`: token revoked: the token this connection was opened with was revoked (by its id or \
by the user's \"not before\"), or the app's secret that signed it was retired. Get a new token \
and reconnect.
- `4002`: heartbeat timeout: nothing (no frame, no pong) arrived for three heartbeats; the \
`heartbeat_timeout` error frame comes just before.
- `4003`: access ended: the user was banned from the app, deactivated or deleted, or the app \
was suspended or deleted. Do not reconnect until the customer's backend restores access (the \
handshake would be refused with 403 or 404).
- `4008`: slow consumer: the client read its frames too slowly and the node's queue for it \
overflowed. Reconnect and `sync`.

Access ends on every node of the cell within 2 s (tens of milliseconds when the nodes are \
healthy): the connections close with `4001` or `4003`, and until the close arrives the user's \
requests are refused with `error` frames (`banned`, `user_deactivated`, `not_found`, \
`app_suspended`). A ban from one conversation closes nothing: the user gets `member.updated` \
(`banned: true`), receives nothing more from that conversation, and every request about it is \
refused with `banned` (also `subscribe` after leaving a room: a ban outlives it).
";

/// The AsyncAPI 3.0 document of the WebSocket protocol, as committed to
/// `sdk-specs/asyncapi/websocket.json`.
pub fn asyncapi_json() -> String {
    let p = Protocol::new();

    let mut messages = Map::new();
    let mut channel_messages = Map::new();
    let mut refs_of = |f: &Family| -> Vec<Value> {
        f.variants
            .iter()
            .map(|v| {
                let mut m = json!({
                    "name": v.message,
                    "title": format!("{} `{}`", title(f), v.tag),
                    "summary": v.description,
                    "contentType": "application/json",
                    "payload": { "$ref": format!("{COMPONENTS}{}", v.schema) },
                });
                // Requests and their replies carry the request id.
                if f.prefix == "client" || matches!(v.tag.as_str(), "ack" | "error") {
                    m["correlationId"] = json!({ "$ref": "#/components/correlationIds/requestId" });
                }
                messages.insert(v.message.clone(), m);
                channel_messages.insert(
                    v.message.clone(),
                    json!({ "$ref": format!("#/components/messages/{}", v.message) }),
                );
                json!({ "$ref": format!("#/channels/connect/messages/{}", v.message) })
            })
            .collect()
    };
    let client = refs_of(&p.client);
    let server = refs_of(&p.server);
    let events = refs_of(&p.event);
    let replies: Vec<Value> = p
        .server
        .variants
        .iter()
        .filter(|v| v.tag == "ack" || v.tag == "error")
        .map(|v| json!({ "$ref": format!("#/channels/connect/messages/{}", v.message) }))
        .collect();
    assert_eq!(replies.len(), 2, "ServerFrame has ack and error");

    let mut schemas = p.schemas.clone();
    for f in p.families() {
        // AsyncAPI schemas (a JSON Schema draft 07 superset) name the tag of a polymorphic type.
        schemas
            .get_mut(f.root)
            .expect("roots are kept")
            .as_object_mut()
            .expect("roots are objects")
            .insert("discriminator".into(), "type".into());
    }

    let doc = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Starling WebSocket protocol",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
            "license": { "name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0" },
        },
        "defaultContentType": "application/json",
        "servers": {
            "gateway": {
                "host": "{host}",
                "protocol": "ws",
                "description": "A data-plane node, or the load balancer in front of a cell's nodes (`wss` behind TLS).",
                "variables": {
                    "host": {
                        "default": "127.0.0.1:7400",
                        "description": "Host and port of the node (`starling standalone` listens on 127.0.0.1:7400).",
                    },
                },
                "security": [
                    { "$ref": "#/components/securitySchemes/userTokenQuery" },
                    { "$ref": "#/components/securitySchemes/userTokenBearer" },
                ],
            },
        },
        "channels": {
            "connect": {
                "address": "/v1/connect",
                "title": "A user's connection",
                "description": "One WebSocket per device of a user. Client frames, server frames and events all travel on it.",
                "servers": [{ "$ref": "#/servers/gateway" }],
                "messages": channel_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {
                                    "type": "string",
                                    "description": "The user token (JWT); or send `Authorization: Bearer <token>`.",
                                },
                            },
                        },
                        "bindingVersion": "0.1.0",
                    },
                },
            },
        },
        "operations": {
            "sendClientFrame": {
                "action": "receive",
                "channel": { "$ref": "#/channels/connect" },
                "title": "Client requests",
                "summary": "Frames a client sends; each is answered with one `ack` or `error` echoing its `id`.",
                "messages": client,
                "reply": {
                    "channel": { "$ref": "#/channels/connect" },
                    "messages": replies,
                },
            },
            "receiveServerFrame": {
                "action": "send",
                "channel": { "$ref": "#/channels/connect" },
                "title": "Server frames",
                "summary": "The `hello` greeting, the replies to client requests, and `resync`.",
                "messages": server,
            },
            "receiveEvent": {
                "action": "send",
                "channel": { "$ref": "#/channels/connect" },
                "title": "Events",
                "summary": "What happened, pushed to every connection of every user it concerns.",
                "messages": events,
            },
        },
        "components": {
            "schemas": schemas,
            "messages": messages,
            "correlationIds": {
                "requestId": {
                    "description": "The `id` a client chose for a request, echoed in its `ack` or `error`.",
                    "location": "$message.payload#/id",
                },
            },
            "securitySchemes": {
                "userTokenQuery": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "The user token (a JWT minted with `POST /v1/users/{user_id}/tokens`) in the connect URL.",
                },
                "userTokenBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The user token in `Authorization: Bearer <token>` (for clients that can set headers).",
                },
            },
        },
    });
    pretty(doc)
}

fn title(f: &Family) -> &'static str {
    match f.prefix {
        "client" => "Client frame",
        "server" => "Server frame",
        _ => "Event",
    }
}

/// Standalone JSON Schemas (draft 2020-12) of the three kinds of frames, as committed to
/// `sdk-specs/asyncapi/schemas/`: `(file name, contents)`. Each is self-contained: the types
/// it refers to are in its `$defs`.
pub fn json_schemas() -> Vec<(String, String)> {
    let p = Protocol::new();
    p.families()
        .into_iter()
        .map(|f| {
            let mut root = p.schemas[f.root].clone();
            let mut defs = Map::new();
            for name in reachable(&p.schemas, [f.root]) {
                if name != f.root {
                    defs.insert(name.clone(), p.schemas[&name].clone());
                }
            }
            root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
            root["title"] = json!(f.root);
            root["$defs"] = Value::Object(defs);
            rewrite_refs(&mut root, DEFS);
            (f.file.to_owned(), pretty(root))
        })
        .collect()
}
