//! The WebSocket protocol's specs: the committed AsyncAPI document and JSON Schemas are the ones
//! the code generates; the golden frames in `sdk-specs/asyncapi/examples/` are valid against the
//! schemas and are what the Rust wire types read and write; frames that are wrong are refused.
//! None of this needs a database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use starling_data_plane::asyncapi;
use starling_data_plane::protocol::{ClientFrame, Event, MemberOut, MessageOut, ServerFrame};

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-specs/asyncapi")
}

/// What `starling specs` writes into `sdk-specs/asyncapi/`.
fn generated() -> Vec<(PathBuf, String)> {
    let dir = spec_dir();
    let mut files = vec![(dir.join("websocket.json"), asyncapi::asyncapi_json())];
    for (name, text) in asyncapi::json_schemas() {
        files.push((dir.join("schemas").join(name), text));
    }
    files
}

#[test]
fn committed_asyncapi_and_json_schemas_match_the_code() {
    let update = std::env::var_os("STARLING_UPDATE_SPECS").is_some();
    let files = generated();
    let mut stale = Vec::new();
    for (path, text) in &files {
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        if &committed != text {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    // A schema the code no longer generates (a renamed file) must not linger.
    let wanted: BTreeSet<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    for entry in std::fs::read_dir(spec_dir().join("schemas")).unwrap() {
        let path = entry.unwrap().path();
        if !wanted.contains(&path) {
            stale.push(format!("{} (not generated any more)", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {}: run `cargo run -- specs` and commit them",
        stale.join(", ")
    );
}

/// The three kinds of frames, told apart in `examples/` by the file name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Client,
    Server,
    Event,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Client, Kind::Server, Kind::Event];

    fn of(file: &str) -> Kind {
        match file.split('-').next() {
            Some("client") => Kind::Client,
            Some("server") => Kind::Server,
            Some("event") => Kind::Event,
            _ => panic!("{file}: golden frames are named client-*, server-* or event-*"),
        }
    }

    fn schema_file(self) -> &'static str {
        match self {
            Kind::Client => "client-frame.schema.json",
            Kind::Server => "server-frame.schema.json",
            Kind::Event => "event.schema.json",
        }
    }

    /// The schema as generated (the drift test checks it is also the committed one).
    fn schema(self) -> Value {
        let (_, text) = asyncapi::json_schemas()
            .into_iter()
            .find(|(name, _)| name == self.schema_file())
            .unwrap_or_else(|| panic!("no {} generated", self.schema_file()));
        serde_json::from_str(&text).unwrap()
    }

    fn validator(self) -> jsonschema::Validator {
        let schema = self.schema();
        if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
            panic!("{} is not a valid 2020-12 schema: {e}", self.schema_file());
        }
        jsonschema::draft202012::new(&schema).unwrap()
    }

    /// Reads the frame into its Rust type and writes it back.
    fn round_trip(self, frame: &Value) -> Result<Value, serde_json::Error> {
        fn rt<T: serde::Serialize + serde::de::DeserializeOwned>(
            v: &Value,
        ) -> Result<Value, serde_json::Error> {
            serde_json::to_value(serde_json::from_value::<T>(v.clone())?)
        }
        match self {
            Kind::Client => rt::<ClientFrame>(frame),
            Kind::Server => rt::<ServerFrame>(frame),
            Kind::Event => rt::<Event>(frame),
        }
    }

    /// The `type` tags the schema defines.
    fn tags(self) -> BTreeSet<String> {
        let schema = self.schema();
        schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let name = r["$ref"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("#/$defs/")
                    .unwrap();
                schema["$defs"][name]["properties"]["type"]["enum"][0]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

fn golden_frames() -> Vec<(String, Kind, Value)> {
    let mut frames = Vec::new();
    for entry in std::fs::read_dir(spec_dir().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let frame: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        frames.push((name.clone(), Kind::of(&name), frame));
    }
    frames.sort_by(|a, b| a.0.cmp(&b.0));
    frames
}

/// `back` is `golden` with, at most, fields added that the client left out and that only say
/// "nothing" (`null`, `false`, `[]`, `{}`): clients may omit optional fields, the server
/// writes them all.
fn same_but_omitted_defaults(golden: &Value, back: &Value) -> bool {
    match (golden, back) {
        (Value::Object(g), Value::Object(b)) => {
            g.iter()
                .all(|(k, v)| b.get(k).is_some_and(|bv| same_but_omitted_defaults(v, bv)))
                && b.iter().all(|(k, v)| {
                    g.contains_key(k)
                        || matches!(v, Value::Null | Value::Bool(false))
                        || v.as_array().is_some_and(Vec::is_empty)
                        || v.as_object().is_some_and(|o| o.is_empty())
                })
        }
        (Value::Array(g), Value::Array(b)) => {
            g.len() == b.len()
                && g.iter()
                    .zip(b)
                    .all(|(g, b)| same_but_omitted_defaults(g, b))
        }
        _ => golden == back,
    }
}

/// An `ack`'s `result` is free-form JSON in the protocol (its shape depends on the request), so
/// the schema cannot check it: check that its fields are what the gateway writes, through the
/// Rust types it writes them from.
fn ack_result_round_trip(result: &Value) -> Result<(), String> {
    fn exact<T: serde::Serialize + serde::de::DeserializeOwned>(v: &Value) -> Result<(), String> {
        let back = serde_json::to_value(
            serde_json::from_value::<T>(v.clone()).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        if &back == v {
            Ok(())
        } else {
            Err(format!("not what the server writes: it writes {back}"))
        }
    }
    let fields = result.as_object().ok_or("not an object")?;
    for (k, v) in fields {
        match k.as_str() {
            "message" => exact::<MessageOut>(v),
            "messages" => exact::<Vec<MessageOut>>(v),
            "member" => exact::<MemberOut>(v),
            "reactions" => exact::<BTreeMap<String, i64>>(v),
            "last_read_seq" => exact::<i64>(v),
            "duplicate" | "has_more" | "pong" => exact::<bool>(v),
            _ => Err("no request answers with it".into()),
        }
        .map_err(|e| format!("`{k}`: {e}"))?;
    }
    Ok(())
}

#[test]
fn golden_frames_are_valid_and_round_trip_through_the_rust_types() {
    let validators: Vec<(Kind, jsonschema::Validator)> =
        Kind::ALL.into_iter().map(|k| (k, k.validator())).collect();
    let validator = |k: Kind| &validators.iter().find(|(v, _)| *v == k).unwrap().1;
    let frames = golden_frames();
    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    for (name, kind, frame) in &frames {
        let errors: Vec<String> = validator(*kind)
            .iter_errors(frame)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if !errors.is_empty() {
            problems.push(format!(
                "{name}: refused by {}: {}",
                kind.schema_file(),
                errors.join("; ")
            ));
        }
        match kind.round_trip(frame) {
            Err(e) => problems.push(format!("{name}: the Rust type refuses it: {e}")),
            // Clients may leave optional fields out; what the server sends is exact.
            Ok(back) if *kind == Kind::Client && !same_but_omitted_defaults(frame, &back) => {
                problems.push(format!("{name}: reads back as {back}"))
            }
            Ok(back) if *kind != Kind::Client && &back != frame => problems.push(format!(
                "{name}: not what the server writes: it writes {back}"
            )),
            Ok(_) => {}
        }
        if frame["type"] == "ack"
            && let Err(e) = ack_result_round_trip(&frame["result"])
        {
            problems.push(format!("{name}: result: {e}"));
        }
        covered.insert((*kind, frame["type"].as_str().unwrap_or("?").to_owned()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Every type of frame has at least one golden frame.
    for kind in Kind::ALL {
        let missing: Vec<String> = kind
            .tags()
            .into_iter()
            .filter(|t| !covered.contains(&(kind, t.clone())))
            .collect();
        assert!(
            missing.is_empty(),
            "no golden {kind:?} frame in sdk-specs/asyncapi/examples/ for: {missing:?}"
        );
    }
}

const CID: &str = "cnv_01m8es6wdjj6f5eyp6x26gv2vh";

#[test]
fn wrong_frames_are_refused_by_the_schemas() {
    // (kind, frame, why it is wrong, whether serde refuses it too)
    let bad = [
        (
            Kind::Client,
            json!({"type": "shout", "id": "r1", "text": "hi"}),
            "unknown type",
            true,
        ),
        (
            Kind::Client,
            json!({"type": "read", "id": "r1", "conversation_id": CID, "seq": "1"}),
            "seq is a string",
            true,
        ),
        (
            Kind::Client,
            json!({"type": "send", "id": "r1", "conversation_id": 42, "text": "hi"}),
            "conversation_id is a number",
            true,
        ),
        (
            Kind::Client,
            json!({"type": "send", "id": "r1", "text": "hi"}),
            "no conversation_id",
            true,
        ),
        (
            Kind::Client,
            json!({"type": "send", "conversation_id": CID, "attachments": [{"url": "https://cdn.example.com/a.png", "type": "image/png", "size": -1}]}),
            "negative attachment size",
            true,
        ),
        (
            Kind::Client,
            json!({"type": "react", "conversation_id": CID, "message_id": "msg_x", "emoji": "👍", "remove": "yes"}),
            "remove is a string",
            true,
        ),
        // serde reads past unknown fields; the gateway refuses them, and so does the schema.
        (
            Kind::Client,
            json!({"type": "ping", "id": "r1", "pad": "x"}),
            "unknown field",
            false,
        ),
        (
            Kind::Server,
            json!({"type": "goodbye"}),
            "unknown type",
            true,
        ),
        (
            Kind::Server,
            json!({"type": "hello", "connection_id": "con_x", "user_id": "alice", "app_id": "app_x", "heartbeat_ms": "25000", "max_frame_bytes": 65536}),
            "heartbeat_ms is a string",
            true,
        ),
        (
            Kind::Server,
            json!({"type": "error", "id": "r1", "code": "forbidden"}),
            "no message",
            true,
        ),
        (
            Kind::Event,
            json!({"type": "message.exploded", "conversation_id": CID}),
            "unknown type",
            true,
        ),
        (
            Kind::Event,
            json!({"type": "presence", "user_id": "bob", "online": "yes", "last_seen_at": null}),
            "online is a string",
            true,
        ),
        (
            Kind::Event,
            json!({"type": "read", "conversation_id": CID, "user_id": "bob"}),
            "no seq",
            true,
        ),
        (
            Kind::Event,
            json!({"type": "message.new", "message": {"id": "msg_x", "seq": 1}}),
            "incomplete message",
            true,
        ),
    ];
    for kind in Kind::ALL {
        let v = kind.validator();
        for (k, frame, why, serde_refuses) in bad.iter().filter(|b| b.0 == kind) {
            assert!(
                !v.is_valid(frame),
                "{k:?} schema accepts a frame with {why}: {frame}"
            );
            if *serde_refuses {
                assert!(
                    kind.round_trip(frame).is_err(),
                    "the Rust type accepts a frame with {why}: {frame}"
                );
            }
        }
    }
}

/// Every `$ref` in `v`, with where it is.
fn refs<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                    _ => refs(v, format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn target<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let pointer = r
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("{r}: only local references"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{r} points at nothing"))
}

#[test]
fn asyncapi_document_is_self_consistent() {
    let doc: Value = serde_json::from_str(&asyncapi::asyncapi_json()).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let description = doc["info"]["description"].as_str().unwrap();
    for needle in [
        "?token=",
        "hello",
        "`id`",
        "ack",
        "error",
        "heartbeat",
        "1001",
        "1009",
        "4001",
        "4002",
        "4003",
        "4008",
        "404 `not_found`",
        "403 `banned`",
        "`nbf`",
        "`jti`",
    ] {
        assert!(description.contains(needle), "info.description: {needle}?");
    }
    assert_eq!(doc["servers"]["gateway"]["protocol"], "ws");

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, String::new(), &mut all);
    assert!(all.len() > 50, "{} references only", all.len());
    for (at, r) in &all {
        assert!(
            r.strip_prefix('#').and_then(|p| doc.pointer(p)).is_some(),
            "{r} (at {at}) points at nothing"
        );
    }

    // One channel; every message is on it and in exactly one operation.
    let channels = doc["channels"].as_object().unwrap();
    assert_eq!(channels.len(), 1);
    let channel = &doc["channels"]["connect"];
    assert_eq!(channel["address"], "/v1/connect");
    let on_channel: BTreeSet<String> = channel["messages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, m)| {
            assert_eq!(
                m["$ref"],
                format!("#/components/messages/{k}"),
                "channel message {k}"
            );
            k.clone()
        })
        .collect();
    let components: BTreeSet<String> = doc["components"]["messages"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(on_channel, components);

    let mut in_operations = Vec::new();
    let ops = doc["operations"].as_object().unwrap();
    for (op, action) in [
        ("sendClientFrame", "receive"),
        ("receiveServerFrame", "send"),
        ("receiveEvent", "send"),
    ] {
        let o = &ops[op];
        assert_eq!(o["action"], action, "{op}");
        assert_eq!(o["channel"]["$ref"], "#/channels/connect", "{op}");
        for m in o["messages"].as_array().unwrap() {
            let name = m["$ref"]
                .as_str()
                .unwrap()
                .strip_prefix("#/channels/connect/messages/")
                .unwrap_or_else(|| panic!("{op}: {m} is not a message of the channel"));
            in_operations.push(name.to_owned());
        }
    }
    assert_eq!(ops.len(), 3);
    in_operations.sort();
    assert_eq!(
        in_operations,
        components.iter().cloned().collect::<Vec<_>>(),
        "every message in exactly one operation"
    );
    let replies: Vec<&str> = ops["sendClientFrame"]["reply"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["$ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        replies,
        [
            "#/channels/connect/messages/serverAck",
            "#/channels/connect/messages/serverError"
        ]
    );

    // The messages are the frame types, each with the schema of its type.
    let mut tags = BTreeSet::new();
    for name in &components {
        let m = &doc["components"]["messages"][name];
        let schema = target(&doc, m["payload"]["$ref"].as_str().unwrap());
        let tag = schema["properties"]["type"]["enum"][0].as_str().unwrap();
        let kind = if name.starts_with("client") {
            Kind::Client
        } else if name.starts_with("server") {
            Kind::Server
        } else {
            Kind::Event
        };
        assert!(tags.insert((kind, tag.to_owned())), "{name}: {tag} twice");
    }
    let expected: BTreeSet<(Kind, String)> = Kind::ALL
        .into_iter()
        .flat_map(|k| k.tags().into_iter().map(move |t| (k, t)))
        .collect();
    assert_eq!(tags, expected);
    assert_eq!(expected.len(), 10 + 4 + 13);
}
