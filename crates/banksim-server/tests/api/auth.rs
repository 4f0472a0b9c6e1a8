//! `/api/v1/auth`: register, login, refresh, logout.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_refused, backends};

const REGISTER: &str = "/api/v1/auth/register";
const LOGIN: &str = "/api/v1/auth/login";
const REFRESH: &str = "/api/v1/auth/refresh";

#[tokio::test]
async fn registering_returns_the_user_object_with_a_lower_case_email() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let body = json!({"username": "Sefa_1", "email": "Sefa@Example.COM", "password": PASSWORD});
        let response = app.post(REGISTER, None, &body).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        let user = response.body.as_object().expect("object");
        let mut keys: Vec<&str> = user.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["created_at", "email", "id", "is_active", "role", "updated_at", "username"]);
        assert_eq!(user["username"], "Sefa_1");
        assert_eq!(user["email"], "sefa@example.com");
        assert_eq!(user["role"], "user");
        assert_eq!(user["is_active"], true);
        assert!(user["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(!response.text.contains(PASSWORD) && !response.text.contains("argon2"));
        app.stop().await;
    }
}

#[tokio::test]
async fn registering_reports_every_invalid_field_at_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let response =
            app.post(REGISTER, None, &json!({"username": "a b", "email": "nope", "password": "short"})).await;
        response.assert_error(422, "validation_failed");
        assert_eq!(response.error_fields(), ["username", "email", "password"]);

        let missing = app.post(REGISTER, None, &json!({})).await;
        missing.assert_error(422, "validation_failed");
        assert_eq!(missing.error_fields(), ["username", "email", "password"]);

        let bad_role = json!({"username": "abc", "email": "a@b.co", "password": PASSWORD, "role": "root"});
        let response = app.post(REGISTER, None, &bad_role).await;
        response.assert_error(422, "validation_failed");
        assert_eq!(response.error_fields(), ["role"]);
        app.stop().await;
    }
}

#[tokio::test]
async fn emails_and_usernames_are_unique_regardless_of_case() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        app.user("sefa").await;
        let same_email = json!({"username": "other", "email": "SEFA@example.com", "password": PASSWORD});
        app.post(REGISTER, None, &same_email).await.assert_error(409, "email_taken");
        let same_name = json!({"username": "SeFa", "email": "other@example.com", "password": PASSWORD});
        app.post(REGISTER, None, &same_name).await.assert_error(409, "username_taken");
        app.stop().await;
    }
}

#[tokio::test]
async fn only_an_admin_can_register_an_admin() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let user = app.user("plain").await;
        let admin = app.admin("boss").await;
        let body = |name: &str| json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD, "role": "admin"});

        app.post(REGISTER, None, &body("anon")).await.assert_error(403, "insufficient_permissions");
        app.post(REGISTER, Some(&user.token), &body("byuser")).await.assert_error(403, "insufficient_permissions");
        app.post(REGISTER, Some("garbage"), &body("bybad")).await.assert_error(401, "unauthorized");

        let created = app.post(REGISTER, Some(&admin.token), &body("second")).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        assert_eq!(created.body["role"], "admin");

        let explicit_user =
            json!({"username": "user2", "email": "user2@example.com", "password": PASSWORD, "role": "user"});
        assert_eq!(app.post(REGISTER, None, &explicit_user).await.status, StatusCode::CREATED);
        app.stop().await;
    }
}

#[tokio::test]
async fn login_returns_the_user_and_a_token_pair() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        app.user("sefa").await;
        let response = app.post(LOGIN, None, &json!({"email": "SEFA@example.com", "password": PASSWORD})).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        assert_eq!(response.body["user"]["username"], "sefa");
        assert_eq!(response.body["token_type"], "Bearer");
        assert_eq!(response.body["expires_in"], 900);
        assert!(response.body["access_token"].as_str().is_some_and(|t| t.split('.').count() == 3));
        assert!(response.body["refresh_token"].as_str().is_some_and(|t| t.len() >= 43));
        let token = response.body["access_token"].as_str().expect("token");
        let me = app.get("/api/v1/me", Some(token)).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["email"], "sefa@example.com");
        app.stop().await;
    }
}

#[tokio::test]
async fn every_failed_login_gets_the_same_answer() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let user = app.user("sefa").await;
        app.delete(&format!("/api/v1/users/{}", user.id), Some(&admin.token)).await;

        let attempts = [
            json!({"email": "nobody@example.com", "password": PASSWORD}),
            json!({"email": "boss@example.com", "password": "wrong-password"}),
            json!({"email": "sefa@example.com", "password": PASSWORD}),
        ];
        let mut messages = Vec::new();
        for attempt in attempts {
            let response = app.post(LOGIN, None, &attempt).await;
            response.assert_error(401, "invalid_credentials");
            messages.push(response.body["error"].clone());
        }
        assert!(messages.windows(2).all(|pair| pair[0] == pair[1]), "{messages:?}");

        let missing = app.post(LOGIN, None, &json!({})).await;
        missing.assert_error(422, "validation_failed");
        assert_eq!(missing.error_fields(), ["email", "password"]);
        app.stop().await;
    }
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let user = app.user("sefa").await;

        let first = app.api.refresh(&user.refresh_token).await.expect("a new pair");
        assert_eq!(first.token_type, "Bearer");
        assert_ne!(first.refresh_token, user.refresh_token);
        let me = app.api.with_token(&first.access_token).me().await.expect("the new access token works");
        assert_eq!(me.id, user.uuid());

        assert_refused(app.api.refresh(&user.refresh_token).await, 401, "refresh_token_reused");
        assert_refused(app.api.refresh(&first.refresh_token).await, 401, "invalid_refresh_token");

        let other_session = app.login(&user.email).await;
        app.api.refresh(&other_session.refresh_token).await.expect("other logins are other families");
        app.stop().await;
    }
}

#[tokio::test]
async fn unknown_or_missing_refresh_tokens_are_refused() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        app.post(REFRESH, None, &json!({"refresh_token": "not-a-token"}))
            .await
            .assert_error(401, "invalid_refresh_token");
        let missing = app.post(REFRESH, None, &json!({})).await;
        missing.assert_error(422, "validation_failed");
        assert_eq!(missing.error_fields(), ["refresh_token"]);
        app.stop().await;
    }
}

#[tokio::test]
async fn logout_revokes_the_session_of_its_refresh_token() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let user = app.user("sefa").await;
        let other = app.user("kerem").await;

        assert_refused(app.api.logout(&user.refresh_token).await, 401, "unauthorized");
        assert_refused(other.api.logout(&user.refresh_token).await, 401, "invalid_refresh_token");

        let response = user.api.logout(&user.refresh_token).reply().await.expect("logged out");
        assert_eq!(response.status, StatusCode::NO_CONTENT);
        assert_refused(app.api.refresh(&user.refresh_token).await, 401, "invalid_refresh_token");
        app.api.refresh(&other.refresh_token).await.expect("another user's session is untouched");
        app.stop().await;
    }
}
