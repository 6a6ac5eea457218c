//! API-key scopes, and the permission each route of the server API needs.
//!
//! A handler names the permission it needs in its signature — `p: Allowed<Read>`,
//! `Allowed<Write>` or `Allowed<Secrets>` — and that extractor is the only way a handler gets the
//! calling key's principal, so a route cannot forget its check. The permission is about what the
//! route yields, not its HTTP method: reading a webhook signing secret is a GET, and whoever holds
//! the secret can sign webhooks as the platform, so it needs [`Permission::Secrets`], which
//! `read_only` keys lack. The table in docs/SECURITY.md ("API key scopes") lists every route's
//! permission and what each scope grants; the data plane's integration test `scopes` walks every
//! route of `sdk-specs/openapi/server.json` with each scope and holds the answers to that table.

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use starling_core::error::{ApiError, ErrorCode};

use crate::directory::KeyPrincipal;

/// What a route lets its caller do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read the app's users, conversations, messages and webhook records.
    Read,
    /// Change them, mint user tokens, configure webhook endpoints, replay events.
    Write,
    /// Obtain a secret that lets the holder act as the platform: a webhook signing secret (read,
    /// rotated, or returned by creating an endpoint).
    Secrets,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 3] = [Permission::Read, Permission::Write, Permission::Secrets];

    /// The name used in errors and in docs/SECURITY.md.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Secrets => "secrets",
        }
    }
}

/// The permissions a scope grants. A scope this version does not know grants none: a key is
/// never given more than its scopes say.
pub fn scope_grants(scope: &str) -> &'static [Permission] {
    match scope {
        "server_full" => &[Permission::Read, Permission::Write, Permission::Secrets],
        "read_only" => &[Permission::Read],
        _ => &[],
    }
}

/// The permissions a key holds: the union of its scopes' grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants(u8);

impl Grants {
    /// What `scopes` grant together.
    pub fn of<S: AsRef<str>>(scopes: &[S]) -> Grants {
        Grants(
            scopes
                .iter()
                .flat_map(|s| scope_grants(s.as_ref()))
                .fold(0, |bits, p| bits | (1 << *p as u8)),
        )
    }

    /// Whether `p` is among them.
    pub fn allows(self, p: Permission) -> bool {
        self.0 & (1 << p as u8) != 0
    }
}

/// A permission as a type, for [`Allowed`].
pub trait Needs: Send + Sync + 'static {
    /// The permission.
    const PERMISSION: Permission;
}

/// Needs [`Permission::Read`].
pub struct Read;
/// Needs [`Permission::Write`].
pub struct Write;
/// Needs [`Permission::Secrets`].
pub struct Secrets;

impl Needs for Read {
    const PERMISSION: Permission = Permission::Read;
}
impl Needs for Write {
    const PERMISSION: Permission = Permission::Write;
}
impl Needs for Secrets {
    const PERMISSION: Permission = Permission::Secrets;
}

/// The calling key, checked to hold the permission `P`; else 403 `forbidden`, naming the
/// permission. (The authenticating middleware put the principal in the request first.)
pub struct Allowed<P>(KeyPrincipal, PhantomData<fn() -> P>);

impl<P> Deref for Allowed<P> {
    type Target = KeyPrincipal;

    fn deref(&self) -> &KeyPrincipal {
        &self.0
    }
}

impl<S: Send + Sync, P: Needs> FromRequestParts<S> for Allowed<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let p = parts
            .extensions
            .get::<KeyPrincipal>()
            .cloned()
            .ok_or_else(|| {
                ApiError::internal(
                    "no API key principal: the route is outside the authenticating layer",
                )
            })?;
        let needs = P::PERMISSION;
        if !p.grants.allows(needs) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "API key {} (scopes: {}) lacks the `{}` permission this route needs",
                    p.key_id,
                    p.scopes.join(", "),
                    needs.as_str()
                ),
            ));
        }
        Ok(Allowed(p, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_reads_and_nothing_else_and_unknown_scopes_grant_nothing() {
        let ro = Grants::of(&["read_only"]);
        assert!(ro.allows(Permission::Read));
        assert!(!ro.allows(Permission::Write));
        assert!(!ro.allows(Permission::Secrets));
        let full = Grants::of(&["server_full"]);
        assert!(Permission::ALL.iter().all(|p| full.allows(*p)));
        assert_eq!(Grants::of(&["read_only", "server_full"]), full);
        let none = Grants::of(&["admin", ""]);
        assert!(Permission::ALL.iter().all(|p| !none.allows(*p)));
    }
}
