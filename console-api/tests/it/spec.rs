//! The committed SDL is the one the code generates.

#[test]
fn committed_sdl_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk-specs/graphql/console.graphql");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = starling_console_api::sdl();
    if committed != generated {
        if std::env::var_os("STARLING_UPDATE_SPECS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        panic!(
            "{} is out of date with the code: run `cargo run -- specs` (or STARLING_UPDATE_SPECS=1 cargo test) and commit it",
            path.display()
        );
    }
    for needle in [
        "type Query",
        "type Mutation",
        "createApiKey(",
        "ApiKeyConnection",
        "enum Role",
    ] {
        assert!(generated.contains(needle), "SDL lacks {needle}");
    }
}
