//! Accounts: invitation, login, refresh, logout, password change, lockout.

use serde_json::json;

use crate::backend_tests;
use crate::harness::{OPERATOR, PASSWORD, Server, code, unique};

backend_tests!(
    session_lifecycle,
    login_lockout,
    invitations_are_single_use,
    last_owner_stays
);

const LOGIN: &str = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken refreshToken account { email } } }";

async fn session_lifecycle(s: Server) {
    let t = s.tenant().await;
    let email = format!("{}@example.com", unique("dev"));
    let inv = s.invite(OPERATOR, &t, &email, "DEVELOPER").await;
    // Weak password and missing name are refused, naming the argument.
    let v = s
        .gql(
            None,
            "mutation($t: String!) { acceptInvitation(token: $t, name: \"X\", password: \"short\") { accessToken } }",
            json!({"t": inv}),
        )
        .await;
    assert_eq!(code(&v), "validation_failed");
    assert_eq!(v["errors"][0]["extensions"]["field"], "password");
    let d = s
        .ok(
            None,
            "mutation($t: String!, $p: String!) { acceptInvitation(token: $t, name: \"Dev\", password: $p) { accessToken } }",
            json!({"t": inv, "p": PASSWORD}),
        )
        .await;
    assert!(d["acceptInvitation"]["accessToken"].is_string());

    // Login; the viewer sees the membership with its role.
    let d = s
        .ok(
            None,
            LOGIN,
            json!({"e": email.to_uppercase(), "p": PASSWORD}),
        )
        .await;
    let access = d["login"]["accessToken"].as_str().unwrap().to_owned();
    let refresh = d["login"]["refreshToken"].as_str().unwrap().to_owned();
    let d = s
        .ok(
            Some(&access),
            "{ viewer { email memberships(first: 5) { edges { node { role tenant { id myRole } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["viewer"]["email"], email);
    let node = &d["viewer"]["memberships"]["edges"][0]["node"];
    assert_eq!(node["role"], "DEVELOPER");
    assert_eq!(node["tenant"]["id"], t);

    // Without a token: unauthorized. With a forged one: unauthorized.
    let v = s.gql(None, "{ viewer { id } }", json!({})).await;
    assert_eq!(code(&v), "unauthorized");
    let v = s
        .gql(Some("eyJ.forged.token"), "{ viewer { id } }", json!({}))
        .await;
    assert_eq!(code(&v), "unauthorized");

    // Refresh: new tokens; the old refresh token stops working.
    let d = s
        .ok(
            None,
            "mutation($r: String!) { refreshSession(refreshToken: $r) { accessToken refreshToken } }",
            json!({"r": refresh}),
        )
        .await;
    let access2 = d["refreshSession"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = s
        .gql(
            None,
            "mutation($r: String!) { refreshSession(refreshToken: $r) { accessToken } }",
            json!({"r": refresh}),
        )
        .await;
    assert_eq!(code(&v), "unauthorized", "a used refresh token is refused");
    // ... and its reuse ended the session (see doors::a_reused_refresh_token_ends_its_session):
    // sign in again for what follows.
    let v = s.gql(Some(&access2), "{ viewer { id } }", json!({})).await;
    assert_eq!(code(&v), "unauthorized", "{v}");
    let access2 =
        s.ok(None, LOGIN, json!({"e": email, "p": PASSWORD})).await["login"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
    s.ok(Some(&access2), "{ viewer { id } }", json!({})).await;

    // Password change: a wrong current password names the argument; the right one ends the
    // other sessions, and only the new password logs in.
    let other = s.ok(None, LOGIN, json!({"e": email, "p": PASSWORD})).await["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = s
        .gql(
            Some(&access2),
            "mutation { changePassword(currentPassword: \"not the password\", newPassword: \"another long password\") }",
            json!({}),
        )
        .await;
    assert_eq!(code(&v), "validation_failed");
    assert_eq!(v["errors"][0]["extensions"]["field"], "currentPassword");
    s.ok(
        Some(&access2),
        "mutation($p: String!) { changePassword(currentPassword: $p, newPassword: \"another long password\") }",
        json!({"p": PASSWORD}),
    )
    .await;
    let v = s.gql(Some(&other), "{ viewer { id } }", json!({})).await;
    assert_eq!(
        code(&v),
        "unauthorized",
        "other sessions end on password change"
    );
    s.ok(Some(&access2), "{ viewer { id } }", json!({})).await;
    let v = s.gql(None, LOGIN, json!({"e": email, "p": PASSWORD})).await;
    assert_eq!(code(&v), "unauthorized");
    s.ok(
        None,
        LOGIN,
        json!({"e": email, "p": "another long password"}),
    )
    .await;

    // Logout ends the session at once.
    s.ok(Some(&access2), "mutation { logout }", json!({})).await;
    let v = s.gql(Some(&access2), "{ viewer { id } }", json!({})).await;
    assert_eq!(code(&v), "unauthorized");

    // The account's own events are in its audit log.
    let fresh = s
        .ok(
            None,
            LOGIN,
            json!({"e": email, "p": "another long password"}),
        )
        .await["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = s
        .ok(
            Some(&fresh),
            "{ viewer { auditLog(first: 50) { edges { node { action ip userAgent } } } } }",
            json!({}),
        )
        .await;
    let actions: Vec<_> = d["viewer"]["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["action"].as_str().unwrap().to_owned())
        .collect();
    for a in ["login", "changePassword", "logout"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    let first = &d["viewer"]["auditLog"]["edges"][0]["node"];
    assert_eq!(first["ip"], "127.0.0.1");
    assert_eq!(first["userAgent"], "console-it");
}

async fn login_lockout(s: Server) {
    let t = s.tenant().await;
    let (_, _) = s.member(&t, "VIEWER").await;
    let email = format!("{}@example.com", unique("locked"));
    let inv = s.invite(OPERATOR, &t, &email, "VIEWER").await;
    s.ok(
        None,
        "mutation($t: String!, $p: String!) { acceptInvitation(token: $t, name: \"L\", password: $p) { accessToken } }",
        json!({"t": inv, "p": PASSWORD}),
    )
    .await;
    // login_max_failures = 3 in the tests: two plain refusals, then the lock.
    for _ in 0..2 {
        let v = s
            .gql(None, LOGIN, json!({"e": email, "p": "wrong password!"}))
            .await;
        assert_eq!(code(&v), "unauthorized");
        assert_eq!(v["errors"][0]["message"], "wrong email or password");
    }
    let v = s
        .gql(None, LOGIN, json!({"e": email, "p": "wrong password!"}))
        .await;
    assert_eq!(code(&v), "account_locked", "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("locked until"),
        "{v}"
    );
    assert!(v["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() > 500);
    // Even the right password is refused while locked.
    let v = s.gql(None, LOGIN, json!({"e": email, "p": PASSWORD})).await;
    assert_eq!(code(&v), "account_locked");
    // An unknown email is refused like a wrong password (no hint which emails exist).
    let v = s
        .gql(
            None,
            LOGIN,
            json!({"e": "nobody@example.com", "p": PASSWORD}),
        )
        .await;
    assert_eq!(code(&v), "unauthorized");
    assert_eq!(v["errors"][0]["message"], "wrong email or password");
    // One address trying passwords across accounts is stopped too: 20 failures in a burst.
    let mut refused_at = None;
    for i in 0..25 {
        let v = s
            .gql(
                None,
                LOGIN,
                json!({"e": format!("guess{i}@example.com"), "p": PASSWORD}),
            )
            .await;
        match code(&v).as_str() {
            "unauthorized" => {}
            "rate_limited" => {
                assert!(
                    v["errors"][0]["message"]
                        .as_str()
                        .unwrap()
                        .contains("your address")
                );
                refused_at = Some(i);
                break;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    // 3 wrong passwords and 1 unknown email above, then these: refused from the 21st failure on
    // (an attempt or two more may pass while the bucket refills).
    let at = refused_at.expect("the address is rate limited");
    assert!((16..=19).contains(&at), "refused after {at} more failures");
    // A bad email is a validation error on the argument.
    let v = s
        .gql(None, LOGIN, json!({"e": "not-an-email", "p": PASSWORD}))
        .await;
    assert_eq!(code(&v), "validation_failed");
    assert_eq!(v["errors"][0]["extensions"]["field"], "email");
}

async fn invitations_are_single_use(s: Server) {
    let t = s.tenant().await;
    let email = format!("{}@example.com", unique("once"));
    let inv = s.invite(OPERATOR, &t, &email, "ADMIN").await;
    let accept = "mutation($t: String!, $p: String!) { acceptInvitation(token: $t, name: \"Once\", password: $p) { account { id } } }";
    s.ok(None, accept, json!({"t": inv, "p": PASSWORD})).await;
    let v = s.gql(None, accept, json!({"t": inv, "p": PASSWORD})).await;
    assert_eq!(code(&v), "not_found");
    let v = s
        .gql(None, accept, json!({"t": "sci_made-up", "p": PASSWORD}))
        .await;
    assert_eq!(code(&v), "not_found");
    // Inviting a member again is a conflict.
    let v = s
        .gql(
            Some(OPERATOR),
            "mutation($t: ID!, $e: String!) { inviteMember(tenantId: $t, email: $e, role: VIEWER) { token } }",
            json!({"t": t, "e": email}),
        )
        .await;
    assert_eq!(code(&v), "conflict");
    // The same person joins a second tenant with their existing password.
    let t2 = s.tenant().await;
    let inv2 = s.invite(OPERATOR, &t2, &email, "VIEWER").await;
    let v = s
        .gql(None, accept, json!({"t": inv2, "p": "wrong password!"}))
        .await;
    assert_eq!(code(&v), "unauthorized");
    let d = s.ok(None, accept, json!({"t": inv2, "p": PASSWORD})).await;
    assert!(d["acceptInvitation"]["account"]["id"].is_string());
    let d = s.ok(None, LOGIN, json!({"e": email, "p": PASSWORD})).await;
    let token = d["login"]["accessToken"].as_str().unwrap().to_owned();
    let d = s
        .ok(
            Some(&token),
            "{ viewer { memberships { edges { node { role } } } } }",
            json!({}),
        )
        .await;
    let mut roles: Vec<_> = d["viewer"]["memberships"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["role"].as_str().unwrap().to_owned())
        .collect();
    roles.sort();
    assert_eq!(roles, ["ADMIN", "VIEWER"]);
}

async fn last_owner_stays(s: Server) {
    let t = s.tenant().await;
    let (owner, owner_token) = s.member(&t, "OWNER").await;
    let remove = "mutation($t: ID!, $a: ID!) { removeMember(tenantId: $t, accountId: $a) }";
    let demote = "mutation($t: ID!, $a: ID!) { changeMemberRole(tenantId: $t, accountId: $a, role: ADMIN) { role } }";
    let v = s
        .gql(Some(&owner_token), remove, json!({"t": t, "a": owner}))
        .await;
    assert_eq!(code(&v), "conflict");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("last owner")
    );
    let v = s
        .gql(Some(&owner_token), demote, json!({"t": t, "a": owner}))
        .await;
    assert_eq!(code(&v), "conflict");
    // With a second owner, the first may step down.
    let (second, _) = s.member(&t, "OWNER").await;
    let d = s
        .ok(Some(&owner_token), demote, json!({"t": t, "a": owner}))
        .await;
    assert_eq!(d["changeMemberRole"]["role"], "ADMIN");
    let d = s
        .ok(
            Some(OPERATOR),
            "query($t: ID!) { tenant(id: $t) { members(first: 10) { edges { node { accountId role } } } } }",
            json!({"t": t}),
        )
        .await;
    let members = d["tenant"]["members"]["edges"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert!(
        members
            .iter()
            .any(|m| m["node"]["accountId"] == second.as_str() && m["node"]["role"] == "OWNER")
    );
}
