//! The committed webhook event schemas and the catalog in docs/WEBHOOKS.md are the ones the
//! code generates.

use std::path::Path;

#[test]
fn committed_webhook_schemas_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let update = std::env::var_os("STARLING_UPDATE_SPECS").is_some();
    let dir = root.join("sdk-specs/webhooks");
    let files = starling_data_plane::webhook::catalog::schema_files();
    assert_eq!(files.len(), starling_core::webhook::EVENT_TYPES.len());
    let mut stale = Vec::new();
    for (name, text) in &files {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).unwrap_or_default() != *text {
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, text).unwrap();
            } else {
                stale.push(name.clone());
            }
        }
        // Each is a valid JSON Schema.
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        jsonschema::draft202012::meta::validate(&v).expect("a valid draft 2020-12 schema");
    }
    // No schema of a type that is gone.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !files.iter().any(|(f, _)| *f == n) {
            stale.push(n);
        }
    }
    assert!(
        stale.is_empty(),
        "sdk-specs/webhooks is out of date ({stale:?}): run `cargo run -- specs` and commit it"
    );

    let doc_path = root.join("docs/WEBHOOKS.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/WEBHOOKS.md exists");
    let generated =
        starling_data_plane::webhook::catalog::with_catalog(&doc).expect("catalog markers");
    if generated != doc {
        if update {
            std::fs::write(&doc_path, &generated).unwrap();
            return;
        }
        panic!("the event catalog in docs/WEBHOOKS.md is out of date: run `cargo run -- specs`");
    }
}
