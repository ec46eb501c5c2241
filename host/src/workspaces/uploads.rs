//! Chat attachments: files the operator sends with a chat message, stored in the workspace's
//! own files (`/configs/chat-uploads/<when>-<id>/<name>`, through the runtime, so the agent
//! reads them where it reads everything else), and files downloaded back from the workspace.
//!
//! Names are reduced to a safe base name, the type is read from the bytes (the client's word is
//! ignored), sizes are capped per file and per request, and a download reaches only the
//! workspace's file roots, never the host's token file.
//!
//! An agent the host does not run (external, or in poll mode) has no files the host can write:
//! its attachments wait in the database (`pending_uploads`) until it downloads and acknowledges
//! them, and its chat message names them `pending-upload:<file_id>`.

use chrono::Utc;
use uuid::Uuid;

use super::EXTERNAL_RUNTIME;
use super::files::FilesError;
use super::get_live;
use crate::runtime::{CONFIGS_ROOT, FILE_ROOTS, RuntimeError};
use crate::safefs::{FileTree, RelPath};
use crate::services::Services;
use crate::store::pending_uploads::{self, NewUpload};

/// The largest file one upload may carry.
pub const MAX_UPLOAD_FILE_BYTES: usize = 25 * 1024 * 1024;
/// The most one upload request may carry in all.
pub const MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;
/// The most files one upload request may carry.
pub const MAX_UPLOAD_FILES: usize = 20;
/// The longest stored file name.
const MAX_NAME_CHARS: usize = 100;
/// Where uploads go under `/configs`.
pub const UPLOADS_DIR: &str = "chat-uploads";

/// A stored attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub stored: Stored,
    pub name: String,
    /// Read from the bytes.
    pub mime_type: &'static str,
    pub size: usize,
}

/// Where an attachment was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In the workspace's files, at this path relative to `/configs`.
    File(String),
    /// In the database, for an agent the host does not run (external, or fetching its messages
    /// itself): it downloads the file from `GET …/pending-uploads/{file_id}/content`.
    Pending(Uuid),
}

/// How a chat message names an attachment waiting in the database.
pub const PENDING_SCHEME: &str = "pending-upload:";

impl Uploaded {
    /// How a chat message refers to it: `workspace:/configs/…`, or `pending-upload:<file_id>`.
    pub fn uri(&self) -> String {
        match &self.stored {
            Stored::File(path) => format!("workspace:{CONFIGS_ROOT}/{path}"),
            Stored::Pending(file_id) => format!("{PENDING_SCHEME}{file_id}"),
        }
    }
}

/// A file name reduced to what is safe everywhere: its last path segment, letters, digits,
/// `.`, `-`, `_` and spaces only (others become `_`), no leading dot or space, at most 100
/// characters; `file` when nothing is left.
pub fn safe_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed: String = cleaned
        .trim_start_matches(['.', ' '])
        .trim_end()
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    if trimmed.is_empty() {
        "file".to_owned()
    } else {
        trimmed
    }
}

/// The type of `bytes` from their content: a known magic number, else UTF-8 text, else
/// opaque bytes.
pub fn sniff(bytes: &[u8]) -> &'static str {
    if let Some(kind) = infer::get(bytes) {
        return kind.mime_type();
    }
    if std::str::from_utf8(bytes).is_ok() {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// The `Content-Type` a download is served with: the sniffed type, except that a type a browser
/// would run (HTML, SVG, XML) is served as plain text; the download is an attachment anyway.
pub fn served_type(bytes: &[u8]) -> &'static str {
    match sniff(bytes) {
        "text/html"
        | "image/svg+xml"
        | "text/xml"
        | "application/xml"
        | "application/xhtml+xml" => "text/plain",
        other => other,
    }
}

/// Checks the request's size limits before anything is stored.
pub fn check_sizes(files: &[(String, Vec<u8>)]) -> Result<(), UploadError> {
    if files.is_empty() {
        return Err(UploadError::Empty);
    }
    if files.len() > MAX_UPLOAD_FILES {
        return Err(UploadError::TooMany);
    }
    if let Some((name, _)) = files
        .iter()
        .find(|(_, data)| data.len() > MAX_UPLOAD_FILE_BYTES)
    {
        return Err(UploadError::FileTooLarge(safe_name(name)));
    }
    if files.iter().map(|(_, d)| d.len()).sum::<usize>() > MAX_UPLOAD_BYTES {
        return Err(UploadError::TooLarge);
    }
    Ok(())
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("no files: send them in multipart fields named files")]
    Empty,
    #[error("at most 20 files per upload")]
    TooMany,
    #[error("{0} is over 25 MiB")]
    FileTooLarge(String),
    #[error("an upload carries at most 50 MiB in all")]
    TooLarge,
    #[error(transparent)]
    Files(#[from] FilesError),
}

/// Stores `files` (`(name as sent, bytes)`) in workspace `id`'s files, all in one delivery, in
/// a directory of their own. Returns them in the order given.
pub async fn store(
    svc: &Services,
    id: Uuid,
    files: Vec<(String, Vec<u8>)>,
) -> Result<Vec<Uploaded>, UploadError> {
    check_sizes(&files)?;
    let row = get_live(svc, id).await.map_err(FilesError::from)?;
    if row.runtime == EXTERNAL_RUNTIME || row.polls() {
        return store_pending(svc, id, files).await;
    }
    let runtime = svc
        .lifecycle
        .runtime()
        .ok_or(FilesError::Runtime(RuntimeError::Offline))?;
    let dir = format!(
        "{UPLOADS_DIR}/{}-{}",
        Utc::now().format("%Y%m%d-%H%M%S"),
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let mut tree = FileTree::new();
    let mut stored = Vec::with_capacity(files.len());
    for (name, data) in distinct_names(files) {
        let path = format!("{dir}/{name}");
        let rel = RelPath::parse(&path).map_err(|_| FilesError::Invalid("invalid file name"))?;
        stored.push(Uploaded {
            stored: Stored::File(path),
            name,
            mime_type: sniff(&data),
            size: data.len(),
        });
        tree.insert(rel, data, 0o644);
    }
    runtime
        .write_files(id, &tree)
        .await
        .map_err(FilesError::from)?;
    Ok(stored)
}

/// The files with safe names, distinct within the upload (a second `a.txt` becomes `2-a.txt`).
fn distinct_names(files: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut named: Vec<(String, Vec<u8>)> = Vec::with_capacity(files.len());
    for (raw, data) in files {
        let mut name = safe_name(&raw);
        let mut n = 1;
        while named.iter().any(|(taken, _)| *taken == name) {
            n += 1;
            name = format!("{n}-{}", safe_name(&raw))
                .chars()
                .take(MAX_NAME_CHARS)
                .collect();
        }
        named.push((name, data));
    }
    named
}

/// Stores the files in the database for an agent the host has no files of, in one transaction.
async fn store_pending(
    svc: &Services,
    id: Uuid,
    files: Vec<(String, Vec<u8>)>,
) -> Result<Vec<Uploaded>, UploadError> {
    let mut rows = Vec::with_capacity(files.len());
    let mut stored = Vec::with_capacity(files.len());
    for (name, data) in distinct_names(files) {
        let file_id = Uuid::new_v4();
        let mime_type = sniff(&data);
        stored.push(Uploaded {
            stored: Stored::Pending(file_id),
            name: name.clone(),
            mime_type,
            size: data.len(),
        });
        rows.push(NewUpload {
            file_id,
            workspace_id: id,
            filename: name,
            mimetype: mime_type.to_owned(),
            content: data,
        });
    }
    pending_uploads::insert_many(&svc.db, &rows)
        .await
        .map_err(FilesError::from)?;
    Ok(stored)
}

/// Deletes attachments acknowledged more than an hour ago and unacknowledged ones past their
/// expiry (24 h after upload); how many went.
pub async fn sweep_pending(svc: &Services) -> Result<u64, crate::store::StoreError> {
    let swept = pending_uploads::sweep(&svc.db, Utc::now()).await?;
    if swept > 0 {
        tracing::info!(swept, "acknowledged and expired pending uploads deleted");
    }
    Ok(swept)
}

/// What `GET …/chat/download?path=` names: a path relative to `/configs`, or a
/// `workspace:/<root>/<path>` URI as uploads and agents' attachments give them.
pub fn parse_target(spec: &str) -> Result<(&'static str, RelPath), FilesError> {
    let invalid = FilesError::Invalid("path must be a relative path, or workspace:/<root>/<path>");
    let (root, rel) = match spec.strip_prefix("workspace:") {
        Some(uri) => FILE_ROOTS
            .iter()
            .find_map(|root| {
                uri.strip_prefix(root)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(|rest| (*root, rest))
            })
            .ok_or(invalid)?,
        None => (CONFIGS_ROOT, spec),
    };
    let rel = RelPath::parse(rel)
        .map_err(|_| FilesError::Invalid("path must be a relative path inside the workspace"))?;
    Ok((root, rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_reduced_to_a_safe_base_name() {
        for (raw, safe) in [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\me\\notes.txt", "notes.txt"),
            (".bashrc", "bashrc"),
            ("a<b>c|d?.md", "a_b_c_d_.md"),
            ("", "file"),
            ("...", "file"),
            ("résumé 2026.doc", "r_sum_ 2026.doc"),
        ] {
            assert_eq!(safe_name(raw), safe, "{raw}");
        }
        assert_eq!(safe_name(&"x".repeat(300)).len(), 100);
    }

    #[test]
    fn names_in_one_upload_stay_distinct_and_short() {
        let long = "x".repeat(300);
        let named = distinct_names(vec![
            ("a.txt".into(), vec![]),
            ("dir/a.txt".into(), vec![]),
            (long.clone(), vec![]),
            (long, vec![]),
        ]);
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[..2], ["a.txt", "2-a.txt"]);
        assert_ne!(names[2], names[3]);
        assert!(names.iter().all(|n| n.chars().count() <= MAX_NAME_CHARS));
    }

    #[test]
    fn the_type_comes_from_the_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff(b"remember the milk"), "text/plain");
        assert_eq!(sniff(b"<html><script>x</script></html>"), "text/html");
        assert_eq!(
            served_type(b"<html><script>x</script></html>"),
            "text/plain"
        );
        assert_eq!(served_type(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff(&[0xff, 0xfe, 0x00, 0x81]), "application/octet-stream");
    }

    #[test]
    fn limits_are_checked_before_anything_is_stored() {
        let file = |name: &str, size: usize| (name.to_owned(), vec![b'a'; size]);
        assert!(matches!(check_sizes(&[]), Err(UploadError::Empty)));
        assert!(check_sizes(&[file("a", 10)]).is_ok());
        assert!(matches!(
            check_sizes(&[file("../big.bin", MAX_UPLOAD_FILE_BYTES + 1)]),
            Err(UploadError::FileTooLarge(name)) if name == "big.bin"
        ));
        let three = vec![
            file("a", 20 << 20),
            file("b", 20 << 20),
            file("c", 20 << 20),
        ];
        assert!(matches!(check_sizes(&three), Err(UploadError::TooLarge)));
        let many: Vec<_> = (0..21).map(|i| file(&i.to_string(), 1)).collect();
        assert!(matches!(check_sizes(&many), Err(UploadError::TooMany)));
    }

    #[test]
    fn a_download_names_a_path_or_a_workspace_uri_and_nothing_outside() {
        let (root, rel) = parse_target("chat-uploads/x/a.txt").unwrap();
        assert_eq!((root, rel.as_str()), (CONFIGS_ROOT, "chat-uploads/x/a.txt"));
        let (root, rel) = parse_target("workspace:/workspace/out/report.md").unwrap();
        assert_eq!((root, rel.as_str()), ("/workspace", "out/report.md"));
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "workspace:/etc/passwd",
            "workspace:/configs/../../x",
            "workspace:/configsx/a",
            "",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
