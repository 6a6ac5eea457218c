//! The committed server API spec is the one the code generates.

#[test]
fn committed_server_openapi_matches_the_code() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-specs/openapi/server.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = starling_data_plane::api::openapi_json();
    if committed != generated {
        if std::env::var_os("STARLING_UPDATE_SPECS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        panic!(
            "{} is out of date: run `cargo run -- specs` and commit it",
            path.display()
        );
    }
    let v: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(v["openapi"], "3.1.0");
    assert!(v["paths"]["/v1/conversations/{conversation_id}/messages"]["post"].is_object());
}
