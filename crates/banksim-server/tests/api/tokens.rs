//! Access-token tampering: only our own, unexpired, HS256 access tokens of active users open the door.

use std::time::Duration;

use banksim_core::user::Role;
use banksim_server::auth::{AccessClaims, TokenIssuer, TokenKind};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{JWT_SECRET, TestApp, TestUser, backends};

const ME: &str = "/api/v1/me";

fn claims(user: &TestUser, issued: chrono::DateTime<Utc>, kind: TokenKind) -> AccessClaims {
    let id: Uuid = user.id.parse().expect("uuid");
    AccessClaims {
        user_id: id,
        username: "sefa".into(),
        email: user.email.clone(),
        role: Role::Admin,
        kind,
        iss: "banksim".into(),
        aud: "banksim-api".into(),
        sub: id.to_string(),
        exp: (issued + chrono::Duration::minutes(15)).timestamp(),
        nbf: issued.timestamp(),
        iat: issued.timestamp(),
        // Tokens of earlier versions carried whole seconds only.
        iat_us: None,
        jti: Uuid::new_v4(),
    }
}

fn issuer(secret: &str, iss: &str, aud: &str) -> TokenIssuer {
    TokenIssuer::new(secret.as_bytes(), iss, aud, Duration::from_secs(900))
}

#[tokio::test]
async fn forged_and_mistyped_tokens_are_refused() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let user = app.user("sefa").await;
        let now = Utc::now();
        let ours = issuer(JWT_SECRET, "banksim", "banksim-api");
        let sign = |issuer: &TokenIssuer, claims: &AccessClaims| issuer.sign(claims).expect("sign");

        let genuine = sign(&ours, &claims(&user, now, TokenKind::Access));
        assert_eq!(app.get(ME, Some(&genuine)).await.status, StatusCode::OK, "the control token works");

        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&user, now, TokenKind::Access)).expect("json"));
        let alg_none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#));
        let other_key = sign(
            &issuer("another-secret-another-secret-another", "banksim", "banksim-api"),
            &claims(&user, now, TokenKind::Access),
        );
        let other_iss =
            sign(&ours, &AccessClaims { iss: "someone-else".into(), ..claims(&user, now, TokenKind::Access) });
        let other_aud =
            sign(&ours, &AccessClaims { aud: "another-api".into(), ..claims(&user, now, TokenKind::Access) });
        let other_sub =
            sign(&ours, &AccessClaims { sub: Uuid::new_v4().to_string(), ..claims(&user, now, TokenKind::Access) });
        let unknown_user = {
            let mut forged = claims(&user, now, TokenKind::Access);
            forged.user_id = Uuid::new_v4();
            forged.sub = forged.user_id.to_string();
            sign(&ours, &forged)
        };
        let refresh_typed = sign(&ours, &claims(&user, now, TokenKind::Refresh));
        let hs512 = {
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512);
            let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
            jsonwebtoken::encode(&header, &claims(&user, now, TokenKind::Access), &key).expect("sign")
        };
        let mut tampered = genuine.clone();
        tampered.insert(tampered.len() / 2, 'x');

        for (name, token) in [
            ("alg none", alg_none.as_str()),
            ("another key", &other_key),
            ("another issuer", &other_iss),
            ("another audience", &other_aud),
            ("a subject other than the user id", &other_sub),
            ("a user that does not exist", &unknown_user),
            ("a refresh-typed JWT", &refresh_typed),
            ("HS512", &hs512),
            ("a tampered token", &tampered),
            ("the opaque refresh token", &user.refresh_token),
            ("garbage", "garbage"),
        ] {
            let response = app.get(ME, Some(token)).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{name}: {}", response.text);
            response.assert_error(401, "unauthorized");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn expired_tokens_are_refused_as_expired() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let user = app.user("sefa").await;
        let ours = issuer(JWT_SECRET, "banksim", "banksim-api");
        let expired =
            ours.sign(&claims(&user, Utc::now() - chrono::Duration::hours(1), TokenKind::Access)).expect("sign");
        app.get(ME, Some(&expired)).await.assert_error(401, "token_expired");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_token_must_come_as_a_bearer_authorization() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let user = app.user("sefa").await;
        app.get(ME, None).await.assert_error(401, "unauthorized");
        for header in [format!("Basic {}", user.token), user.token.clone(), "Bearer ".to_owned()] {
            let response = app.raw(reqwest::Method::GET, ME, &[("authorization", &header)], vec![]).await;
            response.assert_error(401, "unauthorized");
        }
        let lower =
            app.raw(reqwest::Method::GET, ME, &[("authorization", &format!("bearer {}", user.token))], vec![]).await;
        assert_eq!(lower.status, StatusCode::OK, "the scheme is case-insensitive");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_deactivated_users_token_stops_working_at_once_here() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let user = app.user("sefa").await;
        assert_eq!(app.get(ME, Some(&user.token)).await.status, StatusCode::OK, "cached as active");
        app.delete(&format!("/api/v1/users/{}", user.id), Some(&admin.token)).await;
        app.get(ME, Some(&user.token)).await.assert_error(401, "unauthorized");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_deactivated_users_token_stops_working_on_every_instance_within_seconds() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let other = app.spawn_beside(|config| config.user_cache_ttl_ms = 300).await;
        let admin = app.admin("boss").await;
        let user = app.user("sefa").await;
        assert_eq!(other.get(ME, Some(&user.token)).await.status, StatusCode::OK, "cached as active there");
        let deleted = app.delete(&format!("/api/v1/users/{}", user.id), Some(&admin.token)).await;
        assert_eq!(deleted.status, StatusCode::OK);

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let response = other.get(ME, Some(&user.token)).await;
            if response.status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "still accepted after 5 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        other.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_demoted_admin_loses_admin_rights_despite_the_role_in_the_token() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let boss = app.admin("boss").await;
        let deputy = app.admin("deputy").await;
        assert_eq!(app.get("/api/v1/users", Some(&deputy.token)).await.status, StatusCode::OK);
        let demote =
            app.put(&format!("/api/v1/users/{}", deputy.id), Some(&boss.token), &json!({"role": "user"})).await;
        assert_eq!(demote.status, StatusCode::OK, "{}", demote.text);
        app.get("/api/v1/users", Some(&deputy.token)).await.assert_error(403, "insufficient_permissions");
        app.stop().await;
    }
}

#[tokio::test]
async fn logout_ends_the_access_tokens_of_the_session_at_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        assert_eq!(app.get(ME, Some(&sefa.token)).await.status, StatusCode::OK);
        let logout =
            app.post("/api/v1/auth/logout", Some(&sefa.token), &json!({"refresh_token": sefa.refresh_token})).await;
        assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.text);
        app.get(ME, Some(&sefa.token)).await.assert_error(401, "unauthorized");
        // A new login is a new session.
        let again = app.login(&sefa.email).await;
        assert_eq!(app.get(ME, Some(&again.token)).await.status, StatusCode::OK);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_reused_refresh_token_ends_the_access_tokens_of_its_user_at_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let sefa = app.user("sefa").await;
        let rotated = app.post("/api/v1/auth/refresh", None, &json!({"refresh_token": sefa.refresh_token})).await;
        assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
        let thief_token = rotated.body["access_token"].as_str().expect("token").to_owned();
        assert_eq!(app.get(ME, Some(&thief_token)).await.status, StatusCode::OK);
        // The victim's client presents the spent token: reuse is detected and the whole session ends.
        let reused = app.post("/api/v1/auth/refresh", None, &json!({"refresh_token": sefa.refresh_token})).await;
        reused.assert_error(401, "refresh_token_reused");
        for token in [&sefa.token, &thief_token] {
            app.get(ME, Some(token)).await.assert_error(401, "unauthorized");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn sessions_ended_on_one_instance_end_on_the_others_within_the_cache_lifetime() {
    for backend in backends() {
        let first = TestApp::spawn_with(backend, |config| config.user_cache_ttl_ms = 200, axum::Router::new()).await;
        let second = first.spawn_beside(|config| config.user_cache_ttl_ms = 200).await;
        let sefa = first.user("sefa").await;
        assert_eq!(second.get(ME, Some(&sefa.token)).await.status, StatusCode::OK, "cached on the second");
        let logout =
            first.post("/api/v1/auth/logout", Some(&sefa.token), &json!({"refresh_token": sefa.refresh_token})).await;
        assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.text);
        tokio::time::sleep(Duration::from_millis(300)).await;
        second.get(ME, Some(&sefa.token)).await.assert_error(401, "unauthorized");
        second.stop().await;
        first.stop().await;
    }
}
