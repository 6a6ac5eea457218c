//! Console accounts and sessions: argon2id password hashes, login with lockout, session JWTs
//! (HS256) with refresh tokens, logout, password change, invitations.
//!
//! A session is a row; its access token (a JWT naming the session) is checked against that row on
//! every request, so logout and password change end a session at once, not at token expiry. The
//! refresh token is `<session id>.<secret>`; only a keyed hash of the secret is stored, and each
//! refresh replaces it.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use starling_core::error::ErrorCode;
use starling_core::secret::random_token;

use crate::Console;
use crate::entity::{account, invitation, membership, session};
use crate::error::{Fail, Result, code};
use crate::role::Role;

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No credentials: only login, refresh and accepting invitations work.
    Anonymous,
    /// The platform operator (operator token): acts as an owner of every tenant.
    Operator,
    /// A signed-in console account.
    Account {
        /// Account id.
        id: String,
        /// Its email, for the audit log.
        email: String,
        /// The session.
        session_id: String,
    },
}

impl Principal {
    /// The id recorded in the audit log.
    pub fn actor_id(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Operator => "operator",
            Principal::Account { id, .. } => id,
        }
    }

    /// The email recorded in the audit log.
    pub fn actor_email(&self) -> &str {
        match self {
            Principal::Anonymous | Principal::Operator => "",
            Principal::Account { email, .. } => email,
        }
    }
}

/// Where a request came from (for sessions and the audit log).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The client's address.
    pub ip: Option<String>,
    /// Its `User-Agent`, cut to 256 characters.
    pub user_agent: Option<String>,
}

/// The claims of a session access token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    iat: i64,
    exp: i64,
    aud: String,
}

const AUDIENCE: &str = "starling-console";

/// Wrong passwords (or unknown emails) one client address may try in a burst, across all
/// accounts, before its logins are refused with `rate_limited` — the per-account lockout alone
/// would let one address try a few passwords on every account.
pub const FAILED_LOGINS_PER_ADDRESS: u32 = 20;
/// How fast an address earns attempts back: one every 3 seconds.
pub const FAILED_LOGINS_REFILL_PER_SECOND: f64 = 1.0 / 3.0;

/// Tokens of a new or refreshed session.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    /// The JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// When it expires.
    pub access_token_expires_at: DateTime<Utc>,
    /// Trade it for new tokens with `refreshSession`; shown once.
    pub refresh_token: String,
    /// When the refresh token expires.
    pub refresh_token_expires_at: DateTime<Utc>,
    /// The account.
    pub account: account::Model,
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

pub(crate) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Lowercased, checked email.
pub fn check_email(field: &str, email: &str) -> Result<String> {
    let e = email.trim().to_ascii_lowercase();
    let ok = e.len() <= 320
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !e.contains(char::is_whitespace)
        && e.matches('@').count() == 1;
    if ok {
        Ok(e)
    } else {
        Err(Fail::field(field, "must be an email address"))
    }
}

fn check_password(field: &str, password: &str) -> Result<()> {
    let n = password.chars().count();
    if !(10..=256).contains(&n) {
        return Err(Fail::field(field, "must be 10..=256 characters"));
    }
    Ok(())
}

fn check_display_name(field: &str, name: &str) -> Result<String> {
    let t = name.trim();
    if t.is_empty() || t.chars().count() > 128 || t.chars().any(char::is_control) {
        return Err(Fail::field(
            field,
            "must be 1..=128 characters without control characters",
        ));
    }
    Ok(t.to_owned())
}

/// Hashes a password with argon2id (off the async threads: it is slow on purpose).
async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(Fail::internal)?
    .map_err(Fail::internal)
}

/// Checks a password against a stored hash.
async fn verify_password(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| e.to_string())?;
        Ok::<_, String>(
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
        )
    })
    .await
    .map_err(Fail::internal)?
    .map_err(Fail::internal)
}

/// A hash to verify against when the email is unknown, so that the answer takes as long.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn dummy_hash() -> String {
    DUMMY_HASH
        .get_or_init(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(b"not a real password at all", &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone()
}

fn wrong_credentials() -> Fail {
    Fail::unauthorized("wrong email or password")
}

impl Console {
    /// The principal of a request from its `Authorization` header.
    pub async fn principal(&self, authorization: Option<&str>) -> Result<Principal> {
        let Some(h) = authorization else {
            return Ok(Principal::Anonymous);
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or_else(|| Fail::unauthorized("authorization: expected `Bearer <token>`"))?
            .trim();
        if starling_core::secret::constant_time_eq(token, &self.operator_token) {
            return Ok(Principal::Operator);
        }
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&[AUDIENCE]);
        v.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.jwt_decoding, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Fail::unauthorized(
                    "the access token has expired; get a new one with refreshSession",
                ),
                _ => Fail::unauthorized("the access token is not valid"),
            })?
            .claims;
        let s = session::Entity::find_by_id(claims.sid.clone())
            .one(&self.cp.db)
            .await?
            .filter(|s| s.account_id == claims.sub && s.revoked_at.is_none())
            .ok_or_else(|| Fail::unauthorized("the session has ended; log in again"))?;
        let a = account::Entity::find_by_id(s.account_id.clone())
            .one(&self.cp.db)
            .await?
            .ok_or_else(|| Fail::unauthorized("the session has ended; log in again"))?;
        Ok(Principal::Account {
            id: a.id,
            email: a.email,
            session_id: s.id,
        })
    }

    async fn start_session(&self, a: account::Model, origin: &Origin) -> Result<SessionTokens> {
        let now = now();
        let sid = new_id("ses");
        let secret = random_token("");
        let refresh_until = now + Duration::seconds(self.cfg.refresh_token_ttl_secs as i64);
        session::ActiveModel {
            id: Set(sid.clone()),
            account_id: Set(a.id.clone()),
            refresh_hash: Set(self.cp.hasher.hash(&secret)),
            created_at: Set(now),
            expires_at: Set(refresh_until),
            revoked_at: Set(None),
            ip: Set(origin.ip.clone()),
        }
        .insert(&self.cp.db)
        .await?;
        self.tokens(a, sid, secret, refresh_until)
    }

    fn tokens(
        &self,
        a: account::Model,
        sid: String,
        secret: String,
        refresh_until: DateTime<Utc>,
    ) -> Result<SessionTokens> {
        let now = Utc::now();
        let exp = now + Duration::seconds(self.cfg.access_token_ttl_secs as i64);
        let claims = Claims {
            sub: a.id.clone(),
            sid: sid.clone(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            aud: AUDIENCE.into(),
        };
        let access_token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.jwt_encoding,
        )
        .map_err(Fail::internal)?;
        Ok(SessionTokens {
            access_token,
            access_token_expires_at: DateTime::from_timestamp(exp.timestamp(), 0).unwrap_or(exp),
            refresh_token: format!("{sid}.{secret}"),
            refresh_token_expires_at: refresh_until,
            account: a,
        })
    }

    /// Checks an email and password, with lockout after repeated failures, and a limit on
    /// failures per client address (`ip`, when known).
    ///
    /// Both limits are taken before the password is checked, never after: a check-then-count
    /// let N logins sent at once all pass the check while none had counted yet (N guesses where
    /// the limit allows a few). An attempt takes one point from the address's bucket up front
    /// and gives it back when the password was right (or the account was locked anyway).
    async fn check_login(
        &self,
        email: &str,
        password: &str,
        ip: Option<&str>,
    ) -> Result<account::Model> {
        let email = check_email("email", email)?;
        let key = ip.map(|ip| format!("login:{ip}"));
        if let Some(k) = &key
            && let Err(wait) = self.failed_logins.spend(k, 1)
        {
            let mut f = Fail::new(
                ErrorCode::RateLimited,
                format!("too many failed logins from your address; retry in {wait} s"),
            );
            f.retry_after = Some(wait);
            return Err(f);
        }
        let res = self.verify_login(&email, password).await;
        if let Some(k) = &key
            && res
                .as_ref()
                .map_or_else(|e| e.code == code::ACCOUNT_LOCKED, |_| true)
        {
            self.failed_logins.refund(k, 1);
        }
        res
    }

    async fn verify_login(&self, email: &str, password: &str) -> Result<account::Model> {
        let Some(a) = account::Entity::find()
            .filter(account::Column::Email.eq(email))
            .one(&self.cp.db)
            .await?
        else {
            // Same work as for a real account, so timing does not tell which emails exist.
            verify_password(password.to_owned(), dummy_hash()).await?;
            return Err(wrong_credentials());
        };
        let now = now();
        // Take one of the account's attempts in one statement before checking: counted before
        // the check, an attempt sent in parallel with others cannot slip past the limit.
        // `failed_logins` counts attempts that failed or are in flight; at the limit (or while
        // locked) nothing is checked.
        let max = self.cfg.login_max_failures as i32;
        let taken = account::Entity::update_many()
            .col_expr(
                account::Column::FailedLogins,
                Expr::col(account::Column::FailedLogins).add(1),
            )
            .filter(account::Column::Id.eq(&a.id))
            .filter(account::Column::FailedLogins.lt(max))
            .filter(
                sea_orm::Condition::any()
                    .add(account::Column::LockedUntil.is_null())
                    .add(account::Column::LockedUntil.lte(now)),
            )
            .exec(&self.cp.db)
            .await?
            .rows_affected
            == 1;
        if !taken {
            // Locked, or `max` attempts are being checked right now: lock it (if not yet) so
            // that the refusal says until when, and a count left behind by a crash mid-check
            // cannot refuse logins for ever.
            let until = now + Duration::seconds(self.cfg.lockout_secs as i64);
            let locked_now = account::Entity::update_many()
                .col_expr(account::Column::FailedLogins, Expr::value(0))
                .col_expr(account::Column::LockedUntil, Expr::value(Some(until)))
                .filter(account::Column::Id.eq(&a.id))
                .filter(account::Column::FailedLogins.gte(max))
                .filter(
                    sea_orm::Condition::any()
                        .add(account::Column::LockedUntil.is_null())
                        .add(account::Column::LockedUntil.lte(now)),
                )
                .exec(&self.cp.db)
                .await?
                .rows_affected
                == 1;
            if locked_now {
                tracing::warn!(account = %a.id, max, "console account locked after failed logins");
                return Err(locked(until, now));
            }
            let until = account::Entity::find_by_id(a.id.clone())
                .one(&self.cp.db)
                .await?
                .and_then(|a| a.locked_until)
                .filter(|u| *u > now)
                .unwrap_or(until);
            return Err(locked(until, now));
        }
        if verify_password(password.to_owned(), a.password_hash.clone()).await? {
            account::Entity::update_many()
                .col_expr(account::Column::FailedLogins, Expr::value(0))
                .col_expr(
                    account::Column::LockedUntil,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(account::Column::Id.eq(&a.id))
                .exec(&self.cp.db)
                .await?;
            return Ok(a);
        }
        // The attempt stays counted. The failure that finds the limit reached locks the account
        // (one of them: the update is conditional) and starts the count again for afterwards.
        let until = now + Duration::seconds(self.cfg.lockout_secs as i64);
        let locked_now = account::Entity::update_many()
            .col_expr(account::Column::FailedLogins, Expr::value(0))
            .col_expr(account::Column::LockedUntil, Expr::value(Some(until)))
            .filter(account::Column::Id.eq(&a.id))
            .filter(account::Column::FailedLogins.gte(max))
            .exec(&self.cp.db)
            .await?
            .rows_affected
            == 1;
        if locked_now {
            tracing::warn!(account = %a.id, max, "console account locked after failed logins");
            return Err(locked(until, now));
        }
        Err(wrong_credentials())
    }

    /// Logs in: a new session.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        origin: &Origin,
    ) -> Result<SessionTokens> {
        let a = self
            .check_login(email, password, origin.ip.as_deref())
            .await?;
        self.start_session(a, origin).await
    }

    /// Trades a refresh token for new tokens; the old refresh token stops working.
    ///
    /// A refresh token of a live session that is not its current one has been used before
    /// (refresh tokens are 256-bit random: not guessed): either its holder or someone who copied
    /// it is replaying it, and the server cannot tell which. The session ends, so that a stolen
    /// refresh token stops working as soon as either party uses it again (refresh token
    /// rotation with reuse detection, OAuth 2.0 Security BCP §4.14.2).
    pub async fn refresh(&self, refresh_token: &str) -> Result<SessionTokens> {
        let bad = || Fail::unauthorized("the refresh token is not valid; log in again");
        let (sid, secret) = refresh_token.split_once('.').ok_or_else(bad)?;
        let s = session::Entity::find_by_id(sid.to_owned())
            .one(&self.cp.db)
            .await?
            .ok_or_else(bad)?;
        if s.revoked_at.is_some() || s.expires_at <= Utc::now() {
            return Err(bad());
        }
        if !self.cp.hasher.verify(secret, &s.refresh_hash) {
            return Err(self.refresh_reused(&s.id).await?);
        }
        let a = account::Entity::find_by_id(s.account_id.clone())
            .one(&self.cp.db)
            .await?
            .ok_or_else(bad)?;
        let new_secret = random_token("");
        // Only the holder of the current secret may replace it: compare-and-set on the hash.
        let res = session::Entity::update_many()
            .col_expr(
                session::Column::RefreshHash,
                Expr::value(self.cp.hasher.hash(&new_secret)),
            )
            .filter(session::Column::Id.eq(&s.id))
            .filter(session::Column::RefreshHash.eq(&s.refresh_hash))
            .filter(session::Column::RevokedAt.is_null())
            .exec(&self.cp.db)
            .await?;
        if res.rows_affected != 1 {
            // The same token presented twice at once: the other use won; this one is a reuse.
            return Err(self.refresh_reused(&s.id).await?);
        }
        self.tokens(a, s.id, new_secret, s.expires_at)
    }

    /// A used refresh token came back: the session ends (see [`Console::refresh`]).
    async fn refresh_reused(&self, session_id: &str) -> Result<Fail> {
        self.revoke_session(session_id).await?;
        tracing::warn!(session = %session_id, "console refresh token reused: session revoked");
        Ok(Fail::unauthorized(
            "the refresh token was already used: the session has ended; log in again",
        ))
    }

    /// Ends a session.
    pub async fn revoke_session(&self, session_id: &str) -> Result<()> {
        session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(Some(now())))
            .filter(session::Column::Id.eq(session_id))
            .filter(session::Column::RevokedAt.is_null())
            .exec(&self.cp.db)
            .await?;
        Ok(())
    }

    /// Changes a password after checking the current one; ends every other session.
    pub async fn change_password(
        &self,
        account_id: &str,
        session_id: &str,
        current: &str,
        new: &str,
    ) -> Result<()> {
        check_password("newPassword", new)?;
        let a = account::Entity::find_by_id(account_id.to_owned())
            .one(&self.cp.db)
            .await?
            .ok_or_else(|| Fail::unauthorized("the session has ended; log in again"))?;
        // Through the lockout, so that a stolen session cannot guess the password either.
        let a = self
            .check_login(&a.email, current, None)
            .await
            .map_err(|e| {
                if e.code == ErrorCode::Unauthorized.as_str() {
                    Fail::field("currentPassword", "is not the current password")
                } else {
                    e
                }
            })?;
        let hash = hash_password(new.to_owned()).await?;
        let txn = starling_core::db::begin_write(&self.cp.db).await?;
        let mut m: account::ActiveModel = a.into();
        m.password_hash = Set(hash);
        m.updated_at = Set(now());
        m.update(&txn).await?;
        session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(Some(now())))
            .filter(session::Column::AccountId.eq(account_id))
            .filter(session::Column::Id.ne(session_id))
            .filter(session::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Makes an invitation; returns it and its token (shown once).
    pub async fn invite(
        &self,
        tenant_id: &str,
        email: &str,
        role: Role,
        invited_by: &str,
    ) -> Result<(invitation::Model, String)> {
        let email = check_email("email", email)?;
        if let Some(a) = account::Entity::find()
            .filter(account::Column::Email.eq(&email))
            .one(&self.cp.db)
            .await?
            && membership::Entity::find_by_id((tenant_id.to_owned(), a.id))
                .one(&self.cp.db)
                .await?
                .is_some()
        {
            return Err(Fail::new(
                ErrorCode::Conflict,
                format!("{email} is already a member of tenant {tenant_id}"),
            ));
        }
        let token = random_token("sci_");
        let now = now();
        let m = invitation::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            id: Set(new_id("inv")),
            email: Set(email),
            role: Set(role.as_str().to_owned()),
            token_hash: Set(self.cp.hasher.hash(&token)),
            invited_by: Set(invited_by.to_owned()),
            expires_at: Set(now + Duration::seconds(self.cfg.invitation_ttl_secs as i64)),
            accepted_at: Set(None),
            created_at: Set(now),
        }
        .insert(&self.cp.db)
        .await?;
        Ok((m, token))
    }

    /// Accepts an invitation: creates the account (or, for an existing one, checks its password),
    /// adds the membership and starts a session.
    pub async fn accept_invitation(
        &self,
        token: &str,
        name: Option<&str>,
        password: &str,
        origin: &Origin,
    ) -> Result<(SessionTokens, invitation::Model)> {
        let bad = || {
            Fail::new(
                ErrorCode::NotFound,
                "the invitation is unknown, used or expired",
            )
        };
        let inv = invitation::Entity::find()
            .filter(invitation::Column::TokenHash.eq(self.cp.hasher.hash(token)))
            .one(&self.cp.db)
            .await?
            .ok_or_else(bad)?;
        if inv.accepted_at.is_some() || inv.expires_at <= Utc::now() {
            return Err(bad());
        }
        let existing = account::Entity::find()
            .filter(account::Column::Email.eq(&inv.email))
            .one(&self.cp.db)
            .await?;
        let account = match existing {
            Some(_) => {
                self.check_login(&inv.email, password, origin.ip.as_deref())
                    .await?
            }
            None => {
                let name = check_display_name("name", name.unwrap_or_default())?;
                check_password("password", password)?;
                let now = now();
                account::ActiveModel {
                    id: Set(new_id("acc")),
                    email: Set(inv.email.clone()),
                    name: Set(name),
                    password_hash: Set(hash_password(password.to_owned()).await?),
                    failed_logins: Set(0),
                    locked_until: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&self.cp.db)
                .await?
            }
        };
        let txn = starling_core::db::begin_write(&self.cp.db).await?;
        // Claim the invitation first: of two concurrent acceptances only one wins.
        let claimed = invitation::Entity::update_many()
            .col_expr(invitation::Column::AcceptedAt, Expr::value(Some(now())))
            .filter(invitation::Column::TenantId.eq(&inv.tenant_id))
            .filter(invitation::Column::Id.eq(&inv.id))
            .filter(invitation::Column::AcceptedAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Err(bad());
        }
        if membership::Entity::find_by_id((inv.tenant_id.clone(), account.id.clone()))
            .one(&txn)
            .await?
            .is_none()
        {
            membership::ActiveModel {
                tenant_id: Set(inv.tenant_id.clone()),
                account_id: Set(account.id.clone()),
                role: Set(inv.role.clone()),
                created_at: Set(now()),
            }
            .insert(&txn)
            .await?;
        }
        txn.commit().await?;
        let tokens = self.start_session(account, origin).await?;
        Ok((tokens, inv))
    }
}

fn locked(until: DateTime<Utc>, now: DateTime<Utc>) -> Fail {
    let mut f = Fail::custom(
        code::ACCOUNT_LOCKED,
        format!(
            "too many failed logins: the account is locked until {}; try again then",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    );
    f.retry_after = Some(Ord::max((until - now).num_seconds(), 1) as u64);
    f
}
