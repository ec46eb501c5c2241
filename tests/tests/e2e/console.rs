//! The operator console's files: served without auth at `/` and under `/console/`, with their
//! content types, revalidation, the non-API content security policy, and 404 for anything else.

use molecule_e2e::{DbBackend, TestApp, on_both_backends};
use reqwest::header;

on_both_backends!(
    the_console_is_served_with_types_revalidation_and_its_security_policy,
    unknown_console_files_are_not_found,
);

async fn the_console_is_served_with_types_revalidation_and_its_security_policy(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    // No bearer: the files hold no data, and the sign-in page must load before any token.
    let anon = app.anonymous();
    let page = anon.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-cache");
    assert!(
        page.text
            .contains(r#"<script type="module" src="/console/app.js">"#)
    );
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self' ws: wss:"), "{csp}");

    for (path, content_type) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        (
            "/console/pages/extensions.js",
            "text/javascript; charset=utf-8",
        ),
        ("/console/style.css", "text/css; charset=utf-8"),
        ("/console/favicon.svg", "image/svg+xml"),
    ] {
        let reply = anon.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.headers[header::CONTENT_TYPE], content_type, "{path}");
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = reply.headers[header::ETAG].to_str().unwrap().to_owned();
        // Revalidation with the validator costs no body.
        let again = anon
            .call(
                reqwest::Method::GET,
                path,
                None,
                &[("if-none-match", etag.as_str())],
            )
            .await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.text.is_empty());
        let stale = anon
            .call(
                reqwest::Method::GET,
                path,
                None,
                &[("if-none-match", "\"something-else\"")],
            )
            .await;
        assert_eq!(stale.status, 200, "{path}");
    }
}

async fn unknown_console_files_are_not_found(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let anon = app.anonymous();
    for path in [
        "/console/missing.js",
        "/console/",
        "/console/pages",
        "/console/../Cargo.toml",
        "/console/%2e%2e/Cargo.toml",
        "/console/index.html/x",
    ] {
        let reply = anon.get(path).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
        assert!(reply.body["error"].is_string(), "{path}: {}", reply.text);
    }
    // The API's own 404 is unchanged.
    assert_eq!(anon.get("/nothing-here").await.status, 404);
}
