//! HTTP foundations: every error is the JSON envelope, whatever went wrong.

use axum::Router;
use axum::routing::get;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, backends};

const REGISTER: &str = "/api/v1/auth/register";

#[tokio::test]
async fn unknown_paths_are_a_json_404() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        for path in ["/nope", "/api/v1/nope", "/api/v2/ping", "/api/v1/users/x/y"] {
            app.get(path, None).await.assert_error(404, "not_found");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let response = app.request(Method::DELETE, "/api/v1/ping", None, None).await;
        response.assert_error(405, "method_not_allowed");
        assert!(response.headers["allow"].to_str().expect("ascii").contains("GET"));
        let response = app.get(REGISTER, None).await;
        response.assert_error(405, "method_not_allowed");
        assert!(response.headers["allow"].to_str().expect("ascii").contains("POST"));
        app.stop().await;
    }
}

#[tokio::test]
async fn a_huge_body_is_a_json_413() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let huge = format!("{{\"username\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
        let response = app.raw(Method::POST, REGISTER, &[("content-type", "application/json")], huge.into()).await;
        response.assert_error(413, "payload_too_large");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_json_415() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let body = br#"{"username":"a"}"#.to_vec();
        for headers in [&[("content-type", "text/plain")][..], &[][..], &[("content-type", "application/xml")][..]] {
            app.raw(Method::POST, REGISTER, headers, body.clone()).await.assert_error(415, "unsupported_media_type");
        }
        let charset = app
            .raw(Method::POST, REGISTER, &[("content-type", "application/json; charset=utf-8")], b"{}".to_vec())
            .await;
        charset.assert_error(422, "validation_failed");
        app.stop().await;
    }
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        for body in ["{", "{\"username\": }", "not json", "", "{} trailing"] {
            let response = app.raw(Method::POST, REGISTER, &[("content-type", "application/json")], body.into()).await;
            response.assert_error(400, "malformed_json");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_a_422_naming_the_field() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let cases = [
            (json!(null), "body"),
            (json!([]), "body"),
            (json!("text"), "body"),
            (json!({"username": 42, "email": "a@b.co", "password": "password1"}), "username"),
            (json!({"username": "abc", "email": "a@b.co", "password": "password1", "admin": true}), "admin"),
        ];
        for (body, field) in cases {
            let response = app.post(REGISTER, None, &body).await;
            response.assert_error(422, "validation_failed");
            assert_eq!(response.error_fields(), vec![field.to_owned()], "{body}");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn a_panicking_handler_is_a_json_500_and_the_server_lives_on() {
    for backend in backends() {
        let extra = Router::new().route(
            "/__test/panic",
            get(|| async {
                panic!("boom");
                #[allow(unreachable_code)]
                ""
            }),
        );
        let app = TestApp::spawn_with(backend, |_| {}, extra).await;
        let response = app.get("/__test/panic", None).await;
        response.assert_error(500, "internal_error");
        assert!(!response.text.contains("boom"), "panic details stay in the log: {}", response.text);
        assert_eq!(app.get("/api/v1/ping", None).await.status, StatusCode::OK);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_request_over_the_timeout_is_a_json_504() {
    for backend in backends() {
        let extra = Router::new().route(
            "/__test/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                "late"
            }),
        );
        let app = TestApp::spawn_with(backend, |config| config.request_timeout_secs = 1, extra).await;
        app.get("/__test/slow", None).await.assert_error(504, "request_timeout");
        app.stop().await;
    }
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    for backend in backends() {
        let allowed = "https://app.example.com";
        let app =
            TestApp::spawn_with(backend, |config| config.allowed_origins = vec![allowed.to_owned()], Router::new())
                .await;
        let server = &app;
        let preflight = |origin: &'static str| async move {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ];
            server.raw(Method::OPTIONS, "/api/v1/me", &headers, vec![]).await
        };
        let ok = preflight(allowed).await;
        assert_eq!(ok.headers.get("access-control-allow-origin").map(|v| v.as_bytes()), Some(allowed.as_bytes()));
        let refused = preflight("https://evil.example.com").await;
        assert!(refused.headers.get("access-control-allow-origin").is_none());

        let simple = app.raw(Method::GET, "/api/v1/ping", &[("origin", allowed)], vec![]).await;
        assert_eq!(simple.headers["access-control-allow-origin"], allowed);
        let exposed = simple.headers["access-control-expose-headers"].to_str().expect("ascii");
        assert!(exposed.contains("x-request-id"));
        app.stop().await;
    }
}
