//! `GET /openapi.json`: the API description, generated from the handlers' `#[utoipa::path]`
//! annotations as the routers are built (`utoipa_axum::routes!` registers a handler and its
//! spec entry in one step, so a route cannot exist without its description).
//!
//! What every route shares is added here once instead of on each annotation: the security
//! schemes, the answers of the layers around every handler (429 from the rate limit, 500), of
//! the JSON body extractor (400, 413, 415) and of the auth checks (401, 503).

use std::borrow::Cow;
use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

/// Security scheme: the admin token or an org API token.
pub const ADMIN: &str = "admin_token";
/// Security scheme: a token of the workspace in the path (the admin and org tokens pass too).
pub const WORKSPACE: &str = "workspace_token";

/// The body of every error answer: a fixed message, never an echo of the input. Some answers
/// add fields (`code`, `detail`, `retry_after`, ...), which the operation's response describes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: Cow<'static, str>,
}

impl ErrorBody {
    pub fn new(error: impl Into<Cow<'static, str>>) -> Self {
        ErrorBody {
            error: error.into(),
        }
    }
}

/// The answer of the rate limits (429), with a `Retry-After` header.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimited {
    pub error: &'static str,
    /// Seconds to wait before the next request.
    pub retry_after: u64,
}

/// `{"status": "..."}`: the answer of routes that only confirm.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    pub status: &'static str,
}

/// Answers `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)),
)]
pub async fn serve() -> Response {
    static SPEC: LazyLock<String> = LazyLock::new(|| super::openapi().to_string());
    let mut response = SPEC.as_str().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The document's fixed parts: info, tags. Paths come from the routers.
pub fn base() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{InfoBuilder, OpenApiBuilder, tag::TagBuilder};
    let tag = |name: &str, description: &str| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    };
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Molecule host")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(env!("CARGO_PKG_DESCRIPTION")))
                .build(),
        )
        .tags(Some([
            tag("meta", "Health, metrics and this description"),
            tag(
                "workspaces",
                "Workspaces: create, read, change, delete, config",
            ),
            tag("lifecycle", "Restart, pause, resume"),
            tag("files", "A workspace's template files"),
            tag("registry", "Agents register, heartbeat and discover peers"),
            tag("secrets", "Workspace and global secrets, the model choice"),
            tag("tokens", "Workspace and org API tokens"),
            tag("activity", "What agents report; messages to the user"),
            tag("events", "Event history, live streams, the canvas viewport"),
            tag("extensions", "WASM extension versions per slot"),
            tag("org", "Org templates and import"),
            tag("templates", "The workspace template catalogue and import"),
            tag("plugins", "Plugin registry, installs, allow-lists, updates"),
            tag("a2a", "The A2A proxy, its queue, delegations"),
            tag("budget", "A workspace's monthly budget and token usage"),
            tag(
                "audit",
                "The HMAC-chained audit ledger of security-relevant actions",
            ),
            tag("mcp", "MCP over HTTP for agents"),
            tag(
                "schedules",
                "Cron schedules that prompt a workspace's agent",
            ),
            tag(
                "memories",
                "What agents remember: LOCAL, TEAM and GLOBAL memories",
            ),
        ]))
        .build()
}

/// Finishes the generated document: security schemes, the answers every route shares, unique
/// operation ids, and OpenAPI path templates for axum's catch-all segments.
pub fn finish(spec: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&spec).expect("the OpenAPI document serialises");
    let error = json!({ "$ref": "#/components/schemas/ErrorBody" });
    let answer = |description: &str, schema: &Value| json!({ "description": description, "content": { "application/json": { "schema": schema } } });
    let mut paths = Map::new();
    let old_paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for (path, mut item) in old_paths {
        let Some(methods) = item.as_object_mut() else {
            continue;
        };
        // One handler serving two methods (`method(put, post)`) has one id; each method's
        // operation gets its own.
        let shared: Vec<String> = methods
            .values()
            .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
            .collect();
        for (method, operation) in methods.iter_mut() {
            let Some(op) = operation.as_object_mut() else {
                continue;
            };
            let tag = op["tags"][0].as_str().unwrap_or("api").to_owned();
            let id = op["operationId"].as_str().unwrap_or(method).to_owned();
            let id = if shared.iter().filter(|other| **other == id).count() > 1 {
                format!("{tag}_{id}_{method}")
            } else {
                format!("{tag}_{id}")
            };
            op.insert("operationId".into(), json!(id));
            let has_body = op.contains_key("requestBody");
            let secured = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| {
                    s.iter()
                        .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
                });
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("responses is an object");
            // OpenAPI requires a description on every response; annotations that name only a
            // body get the status's reason phrase.
            for (status, response) in responses.iter_mut() {
                if let Some(response) = response.as_object_mut()
                    && !response.contains_key("description")
                {
                    let reason = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
                        .and_then(|code| code.canonical_reason())
                        .unwrap_or("Response");
                    response.insert("description".into(), json!(reason));
                }
            }
            let mut add = |status: &str, value: Value| {
                responses.entry(status).or_insert(value);
            };
            add(
                "429",
                json!({
                    "description": "Rate limited (per client address; some routes also per token or workspace)",
                    "headers": { "Retry-After": { "description": "Seconds to wait", "schema": { "type": "integer" } } },
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/RateLimited" } } },
                }),
            );
            add(
                "500",
                answer(
                    "Internal error (the cause is logged, never returned)",
                    &error,
                ),
            );
            if has_body {
                add("400", answer("Invalid request body", &error));
                add("413", answer("Request body too large", &error));
                add(
                    "415",
                    answer("Content-Type is not application/json", &error),
                );
            }
            if secured {
                add("401", answer("Missing or invalid token", &error));
                add(
                    "503",
                    answer(
                        "The token store cannot be reached (`code: platform_unavailable`)",
                        &error,
                    ),
                );
            }
        }
        // axum's catch-all `{*path}` is an ordinary `{path}` parameter in OpenAPI.
        paths.insert(path.replace("{*", "{"), item);
    }
    doc["paths"] = Value::Object(paths);
    // The shared answers above refer to these whether or not an annotation did.
    for (name, schema) in [
        ("ErrorBody", <ErrorBody as utoipa::PartialSchema>::schema()),
        (
            "RateLimited",
            <RateLimited as utoipa::PartialSchema>::schema(),
        ),
    ] {
        doc["components"]["schemas"][name] =
            serde_json::to_value(schema).expect("a schema serialises");
    }
    let bearer = |description: &str| json!({ "type": "http", "scheme": "bearer", "description": description });
    doc["components"]["securitySchemes"] = json!({
        ADMIN: bearer("The admin token (MOLECULE_ADMIN_TOKEN) or an org API token (POST /org/tokens). Open on a fresh install and in development without an admin token."),
        WORKSPACE: bearer("A token of the workspace named in the path (POST /registry/register or /workspaces/{id}/tokens); the admin and org tokens pass as well."),
    });
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    const METHODS: &[&str] = &[
        "get", "put", "post", "patch", "delete", "head", "options", "trace",
    ];

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                assert!(
                    METHODS.contains(&method.as_str()),
                    "{path}: unexpected key {method}"
                );
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
        out
    }

    /// Every `$ref` in `value`.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    out.push(target.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_description_is_openapi_3_1_and_self_consistent() {
        let doc = super::super::openapi();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Molecule host");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

        let schemes: BTreeSet<&str> = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(schemes, BTreeSet::from([super::ADMIN, super::WORKSPACE]));

        let mut ids = BTreeSet::new();
        for (path, method, op) in operations(&doc) {
            let at = format!("{method} {path}");
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(
                ids.insert(id.to_owned()),
                "{at}: duplicate operationId {id}"
            );
            assert!(op["tags"][0].is_string(), "{at}: no tag");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2') || s == "101"),
                "{at}: no success response"
            );
            for (status, response) in responses {
                assert!(
                    response["description"].is_string(),
                    "{at} {status}: no description"
                );
            }
            // Every `{name}` of the template is a required path parameter, and nothing else is.
            let in_template: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(str::to_owned)
                .collect();
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{at}: optional path parameter");
                    p["name"].as_str().expect("a name").to_owned()
                })
                .collect();
            assert_eq!(in_template, declared, "{at}: path parameters");
            assert!(
                !path.contains('*'),
                "{at}: an axum catch-all left in the template"
            );
            for requirement in op["security"].as_array().into_iter().flatten() {
                for scheme in requirement.as_object().expect("a requirement").keys() {
                    assert!(
                        schemes.contains(scheme.as_str()),
                        "{at}: unknown scheme {scheme}"
                    );
                }
            }
        }

        let mut targets = Vec::new();
        refs(&doc, &mut targets);
        assert!(!targets.is_empty());
        for target in targets {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {target}"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "$ref to a missing schema {name}"
            );
        }
    }

    #[test]
    fn the_description_names_the_routes_of_every_resource() {
        let doc = super::super::openapi();
        let ops: BTreeSet<String> = operations(&doc)
            .into_iter()
            .map(|(path, method, _)| format!("{} {path}", method.to_uppercase()))
            .collect();
        for expected in [
            "GET /health",
            "GET /metrics",
            "GET /openapi.json",
            "GET /workspaces",
            "POST /workspaces",
            "PATCH /workspaces/{id}",
            "DELETE /workspaces/{id}",
            "POST /workspaces/{id}/restart",
            "GET /workspaces/{id}/files/{path}",
            "PUT /workspaces/{id}/files/{path}",
            "POST /registry/register",
            "PUT /workspaces/{id}/secrets",
            "POST /admin/secrets",
            "DELETE /org/tokens/{token_id}",
            "POST /workspaces/{id}/notify",
            "GET /ws",
            "GET /workspaces/{id}/events/stream",
            "POST /admin/extensions/{key}/rollback",
            "POST /org/import",
            "POST /admin/plugin-updates/{queue_id}/apply",
            "POST /workspaces/{id}/a2a",
            "POST /workspaces/{id}/mcp",
        ] {
            assert!(ops.contains(expected), "{expected} is not described");
        }
    }

    /// API types are declared at the edge: a `utoipa` derive anywhere else would mean a domain
    /// type or a store row is (or describes) an HTTP answer, which the DTOs in `http/` map.
    #[test]
    fn api_types_live_only_in_http() {
        fn visit(dir: &std::path::Path, found: &mut Vec<String>, checked: &mut usize) {
            for entry in std::fs::read_dir(dir).expect("a source directory") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    if !path.ends_with("http") {
                        visit(&path, found, checked);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let source = std::fs::read_to_string(&path).expect("a source file");
                    if source.contains(concat!("uto", "ipa")) {
                        found.push(path.display().to_string());
                    }
                    *checked += 1;
                }
            }
        }
        let (mut found, mut checked) = (Vec::new(), 0);
        visit(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
            &mut found,
            &mut checked,
        );
        assert!(checked > 50, "only {checked} source files found");
        assert!(found.is_empty(), "utoipa outside http/: {found:?}");
    }

    /// The other half of "the description and the router agree": a route can only be added
    /// through `utoipa_axum::routes!`, which registers its description with it. Any other way
    /// of adding a route to an HTTP module would escape the description, so none may appear.
    #[test]
    fn no_route_is_added_outside_routes_macro() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
        // Spelled in pieces so this file does not trip its own check.
        let forbidden = [
            concat!(".rou", "te("),
            concat!(".rou", "te_service("),
            concat!(".ne", "st("),
            concat!(".ne", "st_service("),
            concat!(".fallback", "_service("),
            concat!("axum::", "routing::"),
        ];
        let plain_router = concat!("Router::", "new()");
        let wrapped_router = concat!("OpenApiRouter::", "new()");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).expect("the http sources") {
            let path = entry.expect("an entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("a source file");
            for pattern in forbidden {
                assert!(
                    !source.contains(pattern),
                    "{} adds routes with `{pattern}`, outside `routes!`",
                    path.display()
                );
            }
            assert_eq!(
                source.matches(plain_router).count(),
                source.matches(wrapped_router).count(),
                "{} builds a plain axum router",
                path.display()
            );
            checked += 1;
        }
        assert!(checked > 10, "only {checked} HTTP modules found");
    }
}

/// The route table of `SECURITY.md`, parsed: `(METHOD, path, owners, notes)` per row. The two
/// tests that keep the table true (against the router here, route by route in the e2e specs)
/// read it with this one parser.
pub fn security_route_table(text: &str) -> Vec<(String, String, Vec<String>, String)> {
    text.split("\n## Routes\n")
        .nth(1)
        .expect("SECURITY.md has a Routes section")
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a route row has four cells: {line}");
            let code = |cell: &str| cell.trim_matches('`').to_owned();
            (
                code(cells[0]),
                code(cells[1]),
                cells[2].split(" or ").map(str::to_owned).collect(),
                cells[3].to_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod security_table_tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// What each owner in `SECURITY.md` requires the route's OpenAPI security to offer.
    fn scheme_of(owner: &str) -> Option<&'static str> {
        match owner {
            "admin" | "canvas" => Some(super::ADMIN),
            "workspace" | "agent" | "peer" => Some(super::WORKSPACE),
            "any" | "public" => None,
            other => panic!("unknown owner {other:?} in SECURITY.md"),
        }
    }

    #[test]
    fn the_security_route_table_is_the_router() {
        let table = super::security_route_table(include_str!("../../../SECURITY.md"));
        let doc = super::super::openapi();
        let mut routed: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let schemes = op["security"]
                    .as_array()
                    .map(|reqs| {
                        reqs.iter()
                            .flat_map(|r| r.as_object().expect("a requirement").keys().cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                let optional = op["security"].as_array().is_some_and(|reqs| {
                    reqs.iter()
                        .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
                });
                assert!(
                    !optional,
                    "{method} {path}: no route is optionally authenticated any more"
                );
                routed.insert((method.to_uppercase(), path.clone()), schemes);
            }
        }
        let mut listed = BTreeSet::new();
        for (method, path, owners, _) in &table {
            let key = (method.clone(), path.clone());
            assert!(
                listed.insert(key.clone()),
                "{method} {path} is listed twice"
            );
            let schemes = routed
                .get(&key)
                .unwrap_or_else(|| panic!("{method} {path} is listed but not routed"));
            let public = owners.iter().any(|o| o == "public");
            assert!(
                !public || owners.len() == 1,
                "{method} {path}: public has no alternatives"
            );
            assert_eq!(
                public,
                schemes.is_empty(),
                "{method} {path}: a public route has no security requirement, and only it"
            );
            for owner in owners {
                if let Some(scheme) = scheme_of(owner) {
                    assert!(
                        schemes.iter().any(|s| s == scheme),
                        "{method} {path}: owner {owner} needs {scheme} in its description"
                    );
                }
            }
            if owners.iter().any(|o| o == "any") {
                assert_eq!(
                    schemes.iter().collect::<BTreeSet<_>>(),
                    BTreeSet::from([&super::ADMIN.to_owned(), &super::WORKSPACE.to_owned()]),
                    "{method} {path}: any credential"
                );
            }
        }
        let unlisted: Vec<_> = routed.keys().filter(|k| !listed.contains(*k)).collect();
        assert!(
            unlisted.is_empty(),
            "routes missing from SECURITY.md: {unlisted:?}"
        );
    }
}
