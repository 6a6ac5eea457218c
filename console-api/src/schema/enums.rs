//! Enums shared by the schema's objects.

use async_graphql::Enum;
use starling_control_plane::entity::{Environment as CpEnvironment, Status as CpStatus};
use starling_control_plane::service::api_key::{KeyStatus as CpKeyStatus, Scope as CpScope};

/// Whether a tenant or an app may be used.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// In service.
    Active,
    /// Refused by the data plane with `app_suspended`; data kept.
    Suspended,
}

impl From<CpStatus> for Status {
    fn from(s: CpStatus) -> Self {
        match s {
            CpStatus::Active => Status::Active,
            CpStatus::Suspended => Status::Suspended,
        }
    }
}

/// What an app is for.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnvironment {
    /// Building and testing.
    Development,
    /// A pre-production copy.
    Staging,
    /// Real users.
    Production,
}

impl From<CpEnvironment> for AppEnvironment {
    fn from(e: CpEnvironment) -> Self {
        match e {
            CpEnvironment::Development => Self::Development,
            CpEnvironment::Staging => Self::Staging,
            CpEnvironment::Production => Self::Production,
        }
    }
}

impl From<AppEnvironment> for CpEnvironment {
    fn from(e: AppEnvironment) -> Self {
        match e {
            AppEnvironment::Development => Self::Development,
            AppEnvironment::Staging => Self::Staging,
            AppEnvironment::Production => Self::Production,
        }
    }
}

/// What an API key may do on the server API.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// Everything the server API offers.
    ServerFull,
    /// Only reads.
    ReadOnly,
}

impl From<CpScope> for KeyScope {
    fn from(s: CpScope) -> Self {
        match s {
            CpScope::ServerFull => Self::ServerFull,
            CpScope::ReadOnly => Self::ReadOnly,
        }
    }
}

impl From<KeyScope> for CpScope {
    fn from(s: KeyScope) -> Self {
        match s {
            KeyScope::ServerFull => Self::ServerFull,
            KeyScope::ReadOnly => Self::ReadOnly,
        }
    }
}

/// Whether a key works now.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Works.
    Active,
    /// Past its expiry (or the end of its rotation overlap).
    Expired,
    /// Revoked.
    Revoked,
}

impl From<CpKeyStatus> for KeyStatus {
    fn from(s: CpKeyStatus) -> Self {
        match s {
            CpKeyStatus::Active => Self::Active,
            CpKeyStatus::Expired => Self::Expired,
            CpKeyStatus::Revoked => Self::Revoked,
        }
    }
}
