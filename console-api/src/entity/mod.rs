//! sea-orm entities of the console's tables. Ids are prefixed text (`acc_`, `inv_`, `ses_`,
//! `aud_` + ULID); tenant-owned rows start with the tenant id.

pub mod account;
pub mod audit;
pub mod invitation;
pub mod membership;
pub mod session;
