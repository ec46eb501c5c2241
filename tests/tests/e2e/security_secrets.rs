//! Attack specs for secrets at rest (issue 17, item 7): a ciphertext moved to another row by
//! someone who can write the database must not be read as that row's value, and rows an older
//! host sealed without the row's identity are re-sealed at start, after which only the bound
//! form is read.

use aes_gcm::aead::{Aead as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use molecule_e2e::{DbBackend, Reply, TestApp, on_both_backends};
use molecule_host::store::{Db, secrets};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    a_ciphertext_swapped_into_another_row_is_refused_instead_of_read,
    rows_sealed_by_an_older_host_are_resealed_at_start_and_then_only_bound_rows_are_read,
);

/// The host's key (base64 of 32 bytes).
const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

fn unique_value(label: &str) -> String {
    format!("sv-{label}-{}", Uuid::new_v4().simple())
}

/// A secret row, by workspace (`None`: the global table) and key.
#[derive(Debug, Clone, Copy)]
struct Row<'a> {
    workspace: Option<&'a str>,
    key: &'a str,
}

impl Row<'_> {
    fn label(&self) -> String {
        match self.workspace {
            Some(id) => format!("workspace {id} {}", self.key),
            None => format!("global {}", self.key),
        }
    }
}

async fn database(app: &TestApp) -> Db {
    Db::connect(app.database_url(), 1)
        .await
        .expect("opening the test database")
}

/// The stored bytes and `encryption_version` of `row`, read straight from the database.
async fn read_row(db: &Db, row: Row<'_>) -> (Vec<u8>, i32) {
    let found = match row.workspace {
        Some(id) => {
            let id: Uuid = id.parse().expect("a workspace id");
            secrets::get_workspace(db, id, row.key).await
        }
        None => secrets::list_global(db)
            .await
            .map(|rows| rows.into_iter().find(|r| r.key == row.key)),
    };
    let found = found
        .unwrap_or_else(|err| panic!("reading {}: {err}", row.label()))
        .unwrap_or_else(|| panic!("{} is not stored", row.label()));
    (found.encrypted_value, found.encryption_version)
}

/// Writes `bytes` and `version` into `row`, creating it when missing: what an attacker who can
/// write the database does, or what an older host left behind.
async fn write_row(db: &Db, row: Row<'_>, bytes: &[u8], version: i32) {
    let written = match row.workspace {
        Some(id) => {
            let id: Uuid = id.parse().expect("a workspace id");
            secrets::upsert_workspace(db, id, row.key, bytes, version).await
        }
        None => secrets::upsert_global(db, row.key, bytes, version).await,
    };
    written.unwrap_or_else(|err| panic!("writing {}: {err}", row.label()));
}

/// What a host before row binding stored: `nonce || AES-256-GCM(value)` with no associated
/// data, `encryption_version` 1.
fn seal_like_an_older_host(value: &str) -> Vec<u8> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("the key is base64");
    let cipher = Aes256Gcm::new_from_slice(&key).expect("a 32-byte key");
    let nonce: [u8; 12] = Uuid::new_v4().as_bytes()[..12]
        .try_into()
        .expect("12 bytes");
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), value.as_bytes())
        .expect("sealing");
    [nonce.as_slice(), &sealed].concat()
}

fn sorted(list: &Value) -> Vec<String> {
    let mut items: Vec<String> = list
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    items.sort();
    items
}

#[track_caller]
fn assert_hidden(reply: &Reply, values: &[&str]) {
    for value in values {
        assert!(
            !reply.text.contains(value),
            "a secret value appears in a response: {}",
            reply.text
        );
    }
}

async fn a_ciphertext_swapped_into_another_row_is_refused_instead_of_read(backend: DbBackend) {
    // Arrange: two workspaces (one the attacker controls) and a global secret, sealed with the
    // host's key.
    let app = TestApp::spawn_with(backend, |c| {
        c.secrets_encryption_key = Some(KEY.to_owned().into())
    })
    .await;
    let mine = app.create_workspace("Attacker's", None).await;
    let theirs = app.create_workspace("Victim", None).await;
    let (my_key, my_other, their_key, global) = (
        unique_value("mine"),
        unique_value("my-other"),
        unique_value("theirs"),
        unique_value("global"),
    );
    for (id, key, value) in [
        (&mine, "API_KEY", &my_key),
        (&mine, "OTHER", &my_other),
        (&theirs, "API_KEY", &their_key),
    ] {
        app.post(
            &format!("/workspaces/{id}/secrets"),
            json!({ "key": key, "value": value }),
        )
        .await
        .expect(200);
    }
    app.put(
        "/settings/secrets",
        json!({ "key": "SHARED_TOKEN", "value": global }),
    )
    .await
    .expect(200);
    let values_path = format!("/workspaces/{mine}/secrets/values");
    let honest = json!({ "API_KEY": my_key, "OTHER": my_other, "SHARED_TOKEN": global });
    assert_eq!(app.get(&values_path).await.expect(200), honest);

    let my_api_key = Row {
        workspace: Some(&mine),
        key: "API_KEY",
    };
    let swaps = [
        (
            "another workspace's secret of the same name",
            Row {
                workspace: Some(&theirs),
                key: "API_KEY",
            },
            my_api_key,
            "workspace:API_KEY",
        ),
        (
            "another secret of the same workspace",
            Row {
                workspace: Some(&mine),
                key: "OTHER",
            },
            my_api_key,
            "workspace:API_KEY",
        ),
        (
            "a global secret",
            Row {
                workspace: None,
                key: "SHARED_TOKEN",
            },
            my_api_key,
            "workspace:API_KEY",
        ),
        (
            "a workspace secret moved into a global one",
            Row {
                workspace: Some(&theirs),
                key: "API_KEY",
            },
            Row {
                workspace: None,
                key: "SHARED_TOKEN",
            },
            "global:SHARED_TOKEN",
        ),
    ];
    let db = database(&app).await;
    let mut read_back = Vec::new();
    for (what, from, into, failed_key) in swaps {
        // Act: copy `from`'s stored bytes and version over `into`.
        let original = read_row(&db, into).await;
        let (bytes, version) = read_row(&db, from).await;
        write_row(&db, into, &bytes, version).await;
        let reply = app.get(&values_path).await;

        // Assert: all or nothing, the failed row named, no value anywhere.
        if reply.status.is_success() {
            read_back.push(format!("{what}: read back as {}", reply.text));
        } else {
            assert_hidden(&reply, &[&my_key, &my_other, &their_key, &global]);
            let body = reply.expect(500);
            assert_eq!(body["code"], "secrets_undecryptable", "{what}");
            assert_eq!(sorted(&body["failed_keys"]), vec![failed_key], "{what}");
        }
        // Put the row back: the honest values read again.
        write_row(&db, into, &original.0, original.1).await;
        assert_eq!(app.get(&values_path).await.expect(200), honest, "{what}");
    }
    db.close().await;
    assert!(
        read_back.is_empty(),
        "swapped ciphertexts were accepted: {read_back:#?}"
    );
}

async fn rows_sealed_by_an_older_host_are_resealed_at_start_and_then_only_bound_rows_are_read(
    backend: DbBackend,
) {
    // Arrange: rows as an older host left them: sealed without the row's identity (version 1),
    // and plaintext written before a key was configured (version 0).
    let mut app = TestApp::spawn_with(backend, |c| {
        c.secrets_encryption_key = Some(KEY.to_owned().into())
    })
    .await;
    let id = app.create_workspace("Agent", None).await;
    let (legacy, legacy_global, plain) = (
        unique_value("legacy"),
        unique_value("legacy-global"),
        unique_value("plain"),
    );
    let legacy_row = Row {
        workspace: Some(&id),
        key: "LEGACY",
    };
    let global_row = Row {
        workspace: None,
        key: "LEGACY_GLOBAL",
    };
    let plain_row = Row {
        workspace: Some(&id),
        key: "PLAIN",
    };
    let legacy_bytes = seal_like_an_older_host(&legacy);
    let db = database(&app).await;
    write_row(&db, legacy_row, &legacy_bytes, 1).await;
    write_row(&db, global_row, &seal_like_an_older_host(&legacy_global), 1).await;
    write_row(&db, plain_row, plain.as_bytes(), 0).await;

    // Act: the host starts again (on PostgreSQL two replicas start together first).
    app.stop().await.expect("the host stops");
    if backend == DbBackend::Postgres {
        let with_key =
            |c: &mut molecule_host::Config| c.secrets_encryption_key = Some(KEY.to_owned().into());
        let (a, b) = tokio::join!(app.run_once_with(with_key), app.run_once_with(with_key));
        a.expect("the first replica starts");
        b.expect("the second replica starts");
    }
    app.restart_with(|_| {})
        .await
        .expect("the host starts again");

    // Assert: every row is bound (version 2, new bytes) and reads back.
    for row in [legacy_row, global_row, plain_row] {
        let (bytes, version) = read_row(&db, row).await;
        assert_eq!(version, 2, "{} is re-sealed", row.label());
        assert!(
            !String::from_utf8_lossy(&bytes).contains("sv-"),
            "{} is stored in plaintext",
            row.label()
        );
    }
    assert_ne!(read_row(&db, legacy_row).await.0, legacy_bytes);
    let values_path = format!("/workspaces/{id}/secrets/values");
    assert_eq!(
        app.get(&values_path).await.expect(200),
        json!({ "LEGACY": legacy, "LEGACY_GLOBAL": legacy_global, "PLAIN": plain })
    );

    // After the start, a legacy row written into the table is refused, not read.
    write_row(&db, legacy_row, &legacy_bytes, 1).await;
    let refused = app.get(&values_path).await;
    assert_hidden(&refused, &[&legacy, &legacy_global, &plain]);
    let body = refused.expect(500);
    assert_eq!(sorted(&body["failed_keys"]), vec!["workspace:LEGACY"]);
    write_row(&db, plain_row, plain.as_bytes(), 0).await;
    let refused = app.get(&values_path).await;
    assert_hidden(&refused, &[&legacy, &legacy_global, &plain]);
    assert_eq!(
        sorted(&refused.expect(500)["failed_keys"]),
        vec!["workspace:LEGACY", "workspace:PLAIN"]
    );
    db.close().await;
}
