//! `/api/v1/me` and the admin user routes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, backends};

fn user_path(id: &str) -> String {
    format!("/api/v1/users/{id}")
}

#[tokio::test]
async fn every_route_answers_each_role_as_it_should() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let user = app.user("sefa").await;
        let target = app.user("target").await;
        let target_path = user_path(&target.id);
        // (method, path, body, status for a user, status for an admin)
        let routes: [(Method, &str, Option<Value>, u16, u16); 6] = [
            (Method::GET, "/api/v1/me", None, 200, 200),
            (Method::GET, "/api/v1/users", None, 403, 200),
            (Method::GET, &target_path, None, 403, 200),
            (Method::PUT, &target_path, Some(json!({"username": "renamed"})), 403, 200),
            (Method::DELETE, &target_path, None, 403, 200),
            (Method::POST, "/api/v1/auth/logout", Some(json!({"refresh_token": "x"})), 401, 401),
        ];
        for (method, path, body, as_user, as_admin) in routes {
            let anonymous = app.request(method.clone(), path, None, body.as_ref()).await;
            anonymous.assert_error(401, "unauthorized");
            let response = app.request(method.clone(), path, Some(&user.token), body.as_ref()).await;
            assert_eq!(response.status.as_u16(), as_user, "user {method} {path}: {}", response.text);
            if as_user == 403 {
                response.assert_error(403, "insufficient_permissions");
            }
            let response = app.request(method.clone(), path, Some(&admin.token), body.as_ref()).await;
            assert_eq!(response.status.as_u16(), as_admin, "admin {method} {path}: {}", response.text);
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn me_returns_the_callers_user_object() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let user = app.user("sefa").await;
        let me = app.get("/api/v1/me", Some(&user.token)).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["id"], user.id.as_str());
        assert_eq!(me.body["username"], "sefa");
        assert_eq!(me.body["role"], "user");
        app.stop().await;
    }
}

#[tokio::test]
async fn the_user_list_pages_by_offset_and_by_cursor_with_a_total() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let mut ids = vec![admin.id.clone()];
        for i in 0..4 {
            ids.push(app.user(&format!("user{i}")).await.id);
        }
        app.delete(&user_path(&ids[4]), Some(&admin.token)).await;

        let page = app.get("/api/v1/users?limit=2&offset=1", Some(&admin.token)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert_eq!(page.body["total"], 4, "inactive users are left out by default");
        assert_eq!(page.body["limit"], 2);
        assert_eq!(page.body["offset"], 1);
        let listed: Vec<&str> =
            page.body["users"].as_array().expect("users").iter().filter_map(|u| u["id"].as_str()).collect();
        assert_eq!(listed, [ids[1].as_str(), ids[2].as_str()]);

        let all = app.get("/api/v1/users?include_inactive=true&limit=100", Some(&admin.token)).await;
        assert_eq!(all.body["total"], 5);
        assert_eq!(all.body["next_cursor"], Value::Null);

        let mut seen = Vec::new();
        let mut path = "/api/v1/users?include_inactive=true&limit=2".to_owned();
        loop {
            let page = app.get(&path, Some(&admin.token)).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.text);
            seen.extend(
                page.body["users"].as_array().expect("users").iter().map(|u| u["id"].as_str().expect("id").to_owned()),
            );
            match page.body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/users?include_inactive=true&limit=2&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen, ids, "the cursor visits every user once, in order");
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_list_parameters_are_a_400() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        for query in
            ["limit=0", "limit=101", "limit=abc", "offset=-1", "cursor=garbage", "include_inactive=maybe", "unknown=1"]
        {
            let response = app.get(&format!("/api/v1/users?{query}"), Some(&admin.token)).await;
            response.assert_error(400, "invalid_parameter");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn getting_a_user_needs_a_known_uuid() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let user = app.user("sefa").await;
        let found = app.get(&user_path(&user.id), Some(&admin.token)).await;
        assert_eq!(found.status, StatusCode::OK);
        assert_eq!(found.body["email"], "sefa@example.com");
        let unknown = uuid::Uuid::new_v4().to_string();
        app.get(&user_path(&unknown), Some(&admin.token)).await.assert_error(404, "user_not_found");
        app.get(&user_path("not-a-uuid"), Some(&admin.token)).await.assert_error(400, "invalid_parameter");
        app.stop().await;
    }
}

#[tokio::test]
async fn an_admin_updates_users_and_can_reactivate_them() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let user = app.user("sefa").await;
        app.user("kerem").await;
        let path = user_path(&user.id);

        let renamed =
            app.put(&path, Some(&admin.token), &json!({"username": "sefa2", "email": "NEW@example.com"})).await;
        assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
        assert_eq!(renamed.body["username"], "sefa2");
        assert_eq!(renamed.body["email"], "new@example.com");
        assert_ne!(renamed.body["updated_at"], renamed.body["created_at"]);

        app.put(&path, Some(&admin.token), &json!({"email": "kerem@example.com"}))
            .await
            .assert_error(409, "email_taken");
        app.put(&path, Some(&admin.token), &json!({"username": "KEREM"})).await.assert_error(409, "username_taken");

        let deactivated = app.put(&path, Some(&admin.token), &json!({"is_active": false})).await;
        assert_eq!(deactivated.body["is_active"], false);
        let login = json!({"email": "new@example.com", "password": PASSWORD});
        app.post("/api/v1/auth/login", None, &login).await.assert_error(401, "invalid_credentials");
        let reactivated = app.put(&path, Some(&admin.token), &json!({"is_active": true})).await;
        assert_eq!(reactivated.body["is_active"], true);
        assert_eq!(app.post("/api/v1/auth/login", None, &login).await.status, StatusCode::OK);

        let promoted = app.put(&path, Some(&admin.token), &json!({"role": "admin"})).await;
        assert_eq!(promoted.body["role"], "admin");

        let unknown = user_path(&uuid::Uuid::new_v4().to_string());
        app.put(&unknown, Some(&admin.token), &json!({"username": "x_y_z"})).await.assert_error(404, "user_not_found");
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_updates_report_every_invalid_field() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let user = app.user("sefa").await;
        let path = user_path(&user.id);

        let empty = app.put(&path, Some(&admin.token), &json!({})).await;
        empty.assert_error(422, "validation_failed");
        assert_eq!(empty.error_fields(), ["body"]);

        let bad = app.put(&path, Some(&admin.token), &json!({"username": "x", "email": "nope", "role": "god"})).await;
        bad.assert_error(422, "validation_failed");
        assert_eq!(bad.error_fields(), ["username", "email", "role"]);

        let unknown_field = app.put(&path, Some(&admin.token), &json!({"password": "new-password"})).await;
        unknown_field.assert_error(422, "validation_failed");
        let wrong_type = app.put(&path, Some(&admin.token), &json!({"is_active": "yes"})).await;
        wrong_type.assert_error(422, "validation_failed");
        assert_eq!(wrong_type.error_fields(), ["is_active"]);

        let unchanged = app.get(&path, Some(&admin.token)).await;
        assert_eq!(unchanged.body["username"], "sefa", "nothing was half-applied");
        app.stop().await;
    }
}

#[tokio::test]
async fn deleting_a_user_deactivates_them_and_revokes_their_tokens() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let user = app.user("sefa").await;
        let response = app.delete(&user_path(&user.id), Some(&admin.token)).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body, json!({"message": "User is deleted"}));

        let refresh = app.post("/api/v1/auth/refresh", None, &json!({"refresh_token": user.refresh_token})).await;
        refresh.assert_error(401, "invalid_refresh_token");
        app.get("/api/v1/me", Some(&user.token)).await.assert_error(401, "unauthorized");
        let kept = app.get(&user_path(&user.id), Some(&admin.token)).await;
        assert_eq!(kept.body["is_active"], false, "the user and their history stay");

        let again = app.delete(&user_path(&user.id), Some(&admin.token)).await;
        assert_eq!(again.status, StatusCode::OK, "deleting twice is harmless");
        let unknown = user_path(&uuid::Uuid::new_v4().to_string());
        app.delete(&unknown, Some(&admin.token)).await.assert_error(404, "user_not_found");
        app.stop().await;
    }
}

#[tokio::test]
async fn the_last_active_admin_is_protected() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin("boss").await;
        let path = user_path(&admin.id);
        app.put(&path, Some(&admin.token), &json!({"role": "user"})).await.assert_error(409, "last_admin");
        app.put(&path, Some(&admin.token), &json!({"is_active": false})).await.assert_error(409, "last_admin");
        app.delete(&path, Some(&admin.token)).await.assert_error(409, "last_admin");
        assert_eq!(app.get("/api/v1/me", Some(&admin.token)).await.body["role"], "admin");

        let deputy = app.admin("deputy").await;
        let response = app.delete(&path, Some(&deputy.token)).await;
        assert_eq!(response.status, StatusCode::OK, "with another admin, one may go");
        app.delete(&user_path(&deputy.id), Some(&deputy.token)).await.assert_error(409, "last_admin");
        app.stop().await;
    }
}
