//! Relay connections over the workspace's cursor pagination. Every list takes `first` (1..=100,
//! default 20) and `after`; its cost is `first` times the cost of its selection.

use async_graphql::OutputType;
use async_graphql::connection::{Connection, Edge};
use starling_core::http::{Page, PageParams, encode_cursor};

use crate::error::{Fail, Result};

/// Largest `first`.
pub const MAX_FIRST: i32 = 100;
/// `first` when none is given.
pub const DEFAULT_FIRST: i32 = 20;

/// A connection of `T`, with a `totalCount`-free page info (counts are expensive at scale).
pub type Conn<T> = Connection<String, T>;

/// Checks `first` and `after` into the workspace's page parameters.
pub fn params(first: Option<i32>, after: Option<String>) -> Result<PageParams> {
    let first = first.unwrap_or(DEFAULT_FIRST);
    if !(1..=MAX_FIRST).contains(&first) {
        return Err(Fail::field(
            "first",
            format!("must be 1..={MAX_FIRST}, got {first}"),
        ));
    }
    Ok(PageParams {
        limit: Some(first as u32),
        cursor: after,
    })
}

/// A connection from one page; `key` gives each item's position for its edge cursor.
pub fn conn<T: OutputType>(page: Page<T>, key: impl Fn(&T) -> String, had_after: bool) -> Conn<T> {
    let mut c = Connection::new(had_after, page.next_cursor.is_some());
    c.edges.extend(
        page.data
            .into_iter()
            .map(|t| Edge::new(encode_cursor(&key(&t)), t)),
    );
    c
}

/// Maps a cursor error (named `cursor` by the REST helpers) to the GraphQL argument `after`.
pub fn after_arg(mut f: Fail) -> Fail {
    if f.field.as_deref() == Some("cursor") {
        f.field = Some("after".into());
        f.message = f.message.replacen("cursor", "after", 1);
    }
    f
}
