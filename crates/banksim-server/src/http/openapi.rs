//! The OpenAPI document as served at `/openapi.json`: what each route declares with `#[utoipa::path]`, completed
//! here with what the layers around every route add, so that no route has to repeat it and none can forget it:
//! the ids and trace headers of every answer, the 401 of protected routes, the 429 of rate-limited ones (decided by
//! [`Group::of`], the limiter's own rule), the body errors of routes that read a body, the 503/504 of the
//! dependencies and the timeout, the closed catalogue of `error_code` values, unique operation ids and the links
//! that let a client (or schemathesis' stateful phase) chain register → login → credit → transfer → rollback.
//!
//! `docs/openapi.snapshot.json` holds the document; the test below fails when it changes without the snapshot.

use axum::http::Method;
use serde_json::{Map, Value, json};

use crate::error::ErrorCode;
use crate::http::rate_limit::Group;

/// Completes `api` (the routes' own declarations) into the served document. The result is JSON, not utoipa's
/// types: those cannot hold `$ref`s to shared response headers.
pub fn complete(api: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(api).expect("an OpenAPI document serializes");
    complete_value(&mut doc);
    doc
}

fn complete_value(doc: &mut Value) {
    add_components(doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    let mut seen_ids = std::collections::BTreeMap::<String, usize>::new();
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            let Ok(http_method) = method.to_uppercase().parse::<Method>() else { continue };
            let Some(operation) = operation.as_object_mut() else { continue };
            complete_operation(path, &http_method, operation);
            if let Some(Value::String(id)) = operation.get("operationId") {
                *seen_ids.entry(id.clone()).or_default() += 1;
            }
        }
    }
    unique_operation_ids(paths, &seen_ids);
    add_links(paths);
}

/// The path as a request would carry it, for rules written on request paths (`{id}` → `x`).
fn concrete(path: &str) -> String {
    path.split('/').map(|segment| if segment.starts_with('{') { "x" } else { segment }).collect::<Vec<_>>().join("/")
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "headers": common_headers(),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

fn common_headers() -> Value {
    json!({
        "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
        "X-Trace-ID": {"$ref": "#/components/headers/X-Trace-ID"}
    })
}

/// Adds `status` to `responses` unless the route declares it itself (its own description is more precise).
fn add_response(responses: &mut Map<String, Value>, status: &str, description: &str) {
    responses.entry(status.to_owned()).or_insert_with(|| error_response(description));
}

fn complete_operation(path: &str, method: &Method, operation: &mut Map<String, Value>) {
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|requirements| requirements.iter().any(|r| r.get("bearer").is_some()));
    let has_body = operation.contains_key("requestBody");
    let has_parameters = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|parameters| parameters.iter().any(|p| p["in"] == "path" || p["in"] == "query"));
    let idempotent = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|parameters| parameters.iter().any(|p| p["name"] == "Idempotency-Key"));
    let api_route = path.starts_with("/api/v1/");
    let service_route = ["/api/v1/ping", "/api/v1/metrics/", "/api/v1/test/"].iter().any(|p| path.starts_with(p));
    let group = Group::of(method, &concrete(path));

    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    if has_parameters {
        add_response(responses, "400", "`invalid_parameter`: a path or query parameter is invalid (see `errors`)");
    }
    if has_body {
        add_response(responses, "400", "`malformed_json`: the body is not JSON");
        add_response(responses, "413", "`payload_too_large`: the body exceeds the configured limit");
        add_response(responses, "415", "`unsupported_media_type`: the body is not `application/json`");
    }
    if secured {
        add_response(responses, "401", "`unauthorized` or `token_expired`: no valid access token");
    }
    if let Some(group) = group {
        let description = format!(
            "`rate_limited`: the {} budget of this client is spent (see `Retry-After` and `retry_after`)",
            group.name()
        );
        add_response(responses, "429", &description);
        if let Some(headers) = responses.get_mut("429").and_then(|r| r.get_mut("headers")) {
            headers["Retry-After"] = json!({"$ref": "#/components/headers/Retry-After"});
        }
    }
    if api_route && !service_route {
        add_response(
            responses,
            "503",
            "`service_unavailable` or `circuit_open`: the database is unavailable (see `Retry-After`)",
        );
    }
    add_response(responses, "504", "`request_timeout`: the request outlasted the configured timeout");

    for (status, response) in responses.iter_mut() {
        let Some(response) = response.as_object_mut() else { continue };
        let headers = response.entry("headers").or_insert_with(|| json!({}));
        let Some(headers) = headers.as_object_mut() else { continue };
        for (name, header) in common_headers().as_object().into_iter().flatten() {
            headers.entry(name.clone()).or_insert_with(|| header.clone());
        }
        if group.is_some() {
            for name in ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] {
                headers.insert(name.to_owned(), json!({"$ref": format!("#/components/headers/{name}")}));
            }
        }
        if idempotent && status.starts_with('2') {
            headers
                .insert("Idempotent-Replayed".to_owned(), json!({"$ref": "#/components/headers/Idempotent-Replayed"}));
        }
    }
}

/// Methods sharing one handler share its name: each but the GET (or the first) gets its method appended.
fn unique_operation_ids(paths: &mut Map<String, Value>, counts: &std::collections::BTreeMap<String, usize>) {
    let mut kept = std::collections::BTreeSet::new();
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        let mut methods: Vec<String> = item.keys().cloned().collect();
        // GET keeps the plain name.
        methods.sort_by_key(|m| m != "get");
        for method in methods {
            let Some(Value::String(id)) = item.get_mut(&method).and_then(|o| o.get_mut("operationId")) else {
                continue;
            };
            if counts.get(id.as_str()).copied().unwrap_or(0) > 1 && !kept.insert(id.clone()) {
                *id = format!("{id}_{method}");
            }
        }
    }
}

/// OpenAPI links: the values one answer gives to the next request.
fn add_links(paths: &mut Map<String, Value>) {
    let links: [(&str, &str, &str, &str, Value); 15] = [
        (
            "/api/v1/auth/register",
            "post",
            "201",
            "Login",
            json!({"operationId": "login",
            "requestBody": {"email": "$request.body#/email", "password": "$request.body#/password"}}),
        ),
        (
            "/api/v1/auth/register",
            "post",
            "201",
            "GetUser",
            json!({"operationId": "get_user",
            "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/auth/register",
            "post",
            "201",
            "TransferToUser",
            json!({"operationId": "create_transfer",
            "requestBody": {"to_user_id": "$response.body#/id", "amount": "1.00", "currency": "USD"}}),
        ),
        (
            "/api/v1/auth/login",
            "post",
            "200",
            "Refresh",
            json!({"operationId": "refresh",
            "requestBody": {"refresh_token": "$response.body#/refresh_token"}}),
        ),
        (
            "/api/v1/auth/refresh",
            "post",
            "200",
            "RefreshAgain",
            json!({"operationId": "refresh",
            "requestBody": {"refresh_token": "$response.body#/refresh_token"}}),
        ),
        (
            "/api/v1/transactions/credit",
            "post",
            "201",
            "GetTransaction",
            json!({"operationId": "get_transaction",
            "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/transactions/credit",
            "post",
            "201",
            "Rollback",
            json!({"operationId": "rollback_transaction",
            "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/transactions/debit",
            "post",
            "201",
            "Rollback",
            json!({"operationId": "rollback_transaction",
            "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/transactions/transfer",
            "post",
            "201",
            "GetTransaction",
            json!({"operationId": "get_transaction",
            "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/transactions/transfer",
            "post",
            "201",
            "Rollback",
            json!({"operationId": "rollback_transaction",
            "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/transactions/{id}/rollback",
            "post",
            "201",
            "GetReversal",
            json!({"operationId":
            "get_transaction", "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/scheduled-transactions",
            "post",
            "201",
            "GetSchedule",
            json!({"operationId": "get_schedule",
            "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/scheduled-transactions",
            "post",
            "201",
            "PauseSchedule",
            json!({"operationId": "pause_schedule",
            "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/scheduled-transactions/{id}/pause",
            "post",
            "200",
            "ResumeSchedule",
            json!({"operationId":
            "resume_schedule", "parameters": {"id": "$response.body#/id"}}),
        ),
        (
            "/api/v1/scheduled-transactions",
            "post",
            "201",
            "CancelSchedule",
            json!({"operationId":
            "cancel_schedule", "parameters": {"id": "$response.body#/id"}}),
        ),
    ];
    for (path, method, status, name, link) in links {
        let Some(response) = paths
            .get_mut(path)
            .and_then(|item| item.get_mut(method))
            .and_then(|op| op.get_mut("responses").and_then(|responses| responses.get_mut(status)))
        else {
            panic!("OpenAPI link {name} names {method} {path} {status}, which no route declares");
        };
        response.as_object_mut().expect("a response object").entry("links").or_insert_with(|| json!({}))[name] = link;
    }
}

fn add_components(doc: &mut Value) {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    let components = &mut doc["components"];
    if let Some(error_code) = components.pointer_mut("/schemas/ErrorBody/properties/error_code") {
        error_code["enum"] = json!(codes);
    }
    // A user update names at least one field. Said here, not with `#[schema(min_properties = 1)]`, because
    // utoipa-gen 5.5 writes that attribute as `maxProperties`.
    if let Some(update) = components.pointer_mut("/schemas/UpdateUserRequest") {
        update["minProperties"] = json!(1);
    }
    components["headers"] = json!({
        "X-Request-ID": {
            "description": "The request's id: the client's own `X-Request-ID` if it sent a sane one, else a new one.",
            "required": true,
            "schema": {"type": "string", "minLength": 1}
        },
        "X-Trace-ID": {
            "description": "The W3C trace id of the request (from an incoming `traceparent`, else a new one).",
            "required": true,
            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}
        },
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": true,
            "schema": {"type": "integer", "minimum": 0}
        },
        "RateLimit-Limit": {
            "description": "Requests allowed per window in this route group (when its limit is on).",
            "schema": {"type": "integer", "minimum": 0}
        },
        "RateLimit-Remaining": {
            "description": "Requests left in the current window (when the group's limit is on).",
            "schema": {"type": "integer", "minimum": 0}
        },
        "RateLimit-Reset": {
            "description": "Seconds until the window resets (when the group's limit is on).",
            "schema": {"type": "integer", "minimum": 0}
        },
        "Idempotent-Replayed": {
            "description": "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`.",
            "schema": {"type": "string", "enum": ["true"]}
        }
    });
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// The served document equals `docs/openapi.snapshot.json`; `UPDATE_SNAPSHOT=1` rewrites the snapshot.
    #[test]
    fn openapi_document_matches_the_snapshot() {
        let served = serde_json::to_string_pretty(&crate::router::openapi()).expect("serialize") + "\n";
        let snapshot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.snapshot.json");
        if std::env::var_os("UPDATE_SNAPSHOT").is_some() {
            std::fs::write(&snapshot, &served).expect("write the snapshot");
            return;
        }
        let stored = std::fs::read_to_string(&snapshot).unwrap_or_default();
        assert!(
            stored == served,
            "the OpenAPI document differs from docs/openapi.snapshot.json; review the change, then run \
             `UPDATE_SNAPSHOT=1 cargo test -p banksim-server --lib openapi` and commit the snapshot"
        );
    }

    #[test]
    fn operation_ids_are_unique_and_every_error_code_is_listed() {
        let doc = crate::router::openapi();
        let mut ids = std::collections::BTreeSet::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("path item").values() {
                if let Some(id) = operation.get("operationId").and_then(|id| id.as_str()) {
                    assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
                }
            }
        }
        let codes = doc.pointer("/components/schemas/ErrorBody/properties/error_code/enum").expect("enum");
        assert_eq!(codes.as_array().expect("array").len(), crate::error::ErrorCode::ALL.len());
    }
}
