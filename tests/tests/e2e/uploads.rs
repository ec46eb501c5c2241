//! Chat attachments: files uploaded with a chat message land in the workspace's own files under
//! safe names with their type read from the bytes, come back as downloads, and nothing outside
//! the workspace's files (or its token file) can be downloaded; oversize uploads and strangers
//! are refused and store nothing.

use std::time::Duration;

use molecule_e2e::{DbBackend, TestApp, on_both_backends, process_runtime};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

on_both_backends!(attachments_are_stored_safely_and_downloaded_back_and_escapes_are_refused);

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

fn file(name: &str, bytes: &[u8], claimed: &str) -> Part {
    Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str(claimed)
        .unwrap()
}

async fn stored_uploads(app: &TestApp, id: &str) -> usize {
    let listed = app
        .get(&format!("/workspaces/{id}/files?depth=5"))
        .await
        .expect(200);
    listed
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter(|f| {
                    f["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("chat-uploads/"))
                        && f["dir"] != true
                })
                .count()
        })
        .unwrap_or(0)
}

async fn attachments_are_stored_safely_and_downloaded_back_and_escapes_are_refused(
    backend: DbBackend,
) {
    let app = TestApp::spawn_with(backend, process_runtime).await;
    let id = app.create_workspace("Reader", None).await;
    app.wait_settled(&id, Duration::from_secs(60)).await;

    let form = Form::new()
        .part(
            "files",
            file("notes.txt", b"remember the milk\n", "text/html"),
        )
        .part("files", file("../../etc/evil.png", PNG, "text/plain"));
    let stored = app.upload_chat_files(&id, form).await.expect(201);
    let files = stored["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{stored}");
    assert_eq!(files[0]["name"], "notes.txt");
    assert_eq!(
        files[0]["mimeType"], "text/plain",
        "the bytes decide, not the client"
    );
    assert_eq!(files[0]["size"], 18);
    assert_eq!(files[1]["name"], "evil.png");
    assert_eq!(files[1]["mimeType"], "image/png");
    let path = files[0]["path"].as_str().unwrap();
    assert!(path.starts_with("chat-uploads/"), "{path}");
    assert_eq!(
        files[0]["uri"].as_str().unwrap(),
        format!("workspace:/configs/{path}")
    );
    assert_eq!(stored_uploads(&app, &id).await, 2);

    // Back as downloads, by path or by URI.
    let download = |target: &str| {
        let url = format!("/workspaces/{id}/chat/download?path={}", urlencode(target));
        let app = &app;
        async move { app.get(&url).await }
    };
    let got = download(path).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.text, "remember the milk\n");
    assert_eq!(
        got.headers["content-disposition"],
        "attachment; filename=\"notes.txt\""
    );
    assert_eq!(got.headers["content-type"], "text/plain");
    let png = download(files[1]["uri"].as_str().unwrap()).await;
    assert_eq!(png.status, 200);
    assert_eq!(png.headers["content-type"], "image/png");

    // Nothing outside the workspace's files, never its token.
    for (target, status) in [
        ("../../etc/passwd", 400),
        ("/etc/passwd", 400),
        ("workspace:/etc/passwd", 400),
        ("workspace:/configs/../../etc/passwd", 400),
        (".auth_token", 403),
        ("workspace:/configs/.auth_token", 403),
        ("chat-uploads/nothing-here.txt", 404),
    ] {
        let reply = download(target).await;
        assert_eq!(reply.status.as_u16(), status, "{target}: {}", reply.text);
        assert!(!reply.text.contains("root:"), "{target} leaked a host file");
    }

    // Refused uploads store nothing.
    let big = Form::new().part(
        "files",
        file(
            "big.bin",
            &vec![0u8; 25 * 1024 * 1024 + 1],
            "application/octet-stream",
        ),
    );
    let refused = app.upload_chat_files(&id, big).await.expect(413);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("big.bin is over 25 MiB"),
        "{refused}"
    );
    let other = Form::new().text("note", "hello");
    app.upload_chat_files(&id, other).await.expect(400);
    app.upload_chat_files(&id, Form::new()).await.expect(400);
    assert_eq!(stored_uploads(&app, &id).await, 2);

    // Strangers neither upload nor download.
    let stranger = app.create_workspace("Stranger", None).await;
    let token = app.agent_token(&stranger).await;
    let form = || Form::new().part("files", file("a.txt", b"a", "text/plain"));
    app.anonymous()
        .upload_chat_files(&id, form())
        .await
        .expect(401);
    app.with_token(&token)
        .upload_chat_files(&id, form())
        .await
        .expect(401);
    app.with_token(&token)
        .get(&format!(
            "/workspaces/{id}/chat/download?path={}",
            urlencode(path)
        ))
        .await
        .expect(401);
    // The agent itself uploads with its own token.
    let own = app.agent_token(&id).await;
    app.with_token(&own)
        .upload_chat_files(&id, form())
        .await
        .expect(201);
}

/// Without a runtime a workspace has no files to hold attachments: 503, not a silent loss.
#[tokio::test]
async fn a_host_without_a_runtime_says_attachments_cannot_be_stored() {
    let app = TestApp::spawn(DbBackend::Sqlite).await;
    let id = app.create_workspace("Bare", None).await;
    let form = Form::new().part("files", file("a.txt", b"a", "text/plain"));
    let reply = app.upload_chat_files(&id, form).await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    let _: Value = reply.body;
}

fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
