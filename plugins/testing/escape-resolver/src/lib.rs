//! Test guest: a resolver (scheme `escape`) that tries to get out of its sandbox and reports
//! what it managed to see. The host's tests install it and assert it saw nothing.
//!
//! `source.location` picks the probes:
//!
//! | location | tries |
//! | --- | --- |
//! | `etc-passwd` | read `/etc/passwd` |
//! | `parent-dir` | read `../outside`, `/dest/../outside`, list `/dest/..` |
//! | `registry-escape` | read `/registry/../../etc/passwd`, list `/registry/..` |
//! | `root-dir` | list `/`, `/etc`, `/proc`, `/home`, `/tmp` |
//! | `ungranted-host` | `remote::list_refs` on `source.reference`, else `https://ungranted.invalid/x.git`; anything but `denied` counts as seen, since the host must refuse before any traffic |
//! | `credential` | environment variables, arguments, well-known credential files; with `source.reference` set to a granted repository URL, `list_refs` + `checkout` of its `HEAD` into `/dest`, then every file under `/dest` (`.git/config` included) is searched for credential-looking lines |
//! | `all` | every probe above |
//!
//! The answer: `fetch` returns `name = "saw-nothing"` when every probe came back empty, else
//! `name = "SAW: <findings>"`, and `revision` holds the full transcript (each probe and the error
//! it met). An error text is part of the transcript, so a test that plants a credential should
//! assert it appears in neither field. `resolve-revision` returns the same transcript.

use std::fs;
use std::path::Path;

use molecule_guest::{FetchError, Fetched, Resolver, Source, log, remote};

/// What `fetch` names itself when nothing was seen.
pub const SAW_NOTHING: &str = "saw-nothing";

/// Lines containing one of these (case-insensitive) look like a credential.
const CREDENTIAL_MARKERS: [&str; 6] = [
    "authorization",
    "extraheader",
    "password",
    "x-access-token",
    "bearer ",
    "token=",
];

const CREDENTIAL_FILES: [&str; 12] = [
    "/proc/self/environ",
    "/root/.git-credentials",
    "/root/.netrc",
    "/root/.gitconfig",
    "/etc/gitconfig",
    "/home",
    "/run/secrets",
    "/var/run/secrets",
    "/dest/.git-credentials",
    "/dest/.netrc",
    "/registry/.git-credentials",
    ".git-credentials",
];

#[derive(Debug)]
pub struct EscapeResolver;

impl Resolver for EscapeResolver {
    fn schemes() -> &'static [&'static str] {
        &["escape"]
    }

    fn fetch(source: &Source) -> Result<Fetched, FetchError> {
        let report = probe(source)?;
        log::info(format!(
            "escape-resolver transcript: {}",
            report.transcript()
        ));
        Ok(Fetched {
            name: report.verdict(),
            revision: report.transcript(),
        })
    }

    fn resolve_revision(source: &Source) -> Result<String, FetchError> {
        Ok(probe(source)?.transcript())
    }
}

molecule_guest::export_resolver!(EscapeResolver);

/// What the probes met: `seen` entries are escapes, `blocked` entries are the sandbox working,
/// `done` entries are steps that were meant to succeed (a granted fetch).
#[derive(Debug, Default)]
pub struct Report {
    seen: Vec<String>,
    blocked: Vec<String>,
    done: Vec<String>,
}

impl Report {
    pub fn saw(&mut self, what: impl Into<String>) {
        self.seen.push(what.into());
    }

    pub fn blocked(&mut self, what: impl Into<String>) {
        self.blocked.push(what.into());
    }

    pub fn done(&mut self, what: impl Into<String>) {
        self.done.push(what.into());
    }

    pub fn saw_anything(&self) -> bool {
        !self.seen.is_empty()
    }

    /// `saw-nothing`, or `SAW: ` and the findings.
    pub fn verdict(&self) -> String {
        if self.seen.is_empty() {
            SAW_NOTHING.to_owned()
        } else {
            format!("SAW: {}", self.seen.join("; "))
        }
    }

    /// Every finding and every blocked attempt.
    pub fn transcript(&self) -> String {
        let seen = self.seen.iter().map(|s| format!("SAW {s}"));
        let blocked = self.blocked.iter().map(|s| format!("blocked {s}"));
        let done = self.done.iter().map(|s| format!("done {s}"));
        seen.chain(blocked)
            .chain(done)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Runs the probes `source.location` names.
pub fn probe(source: &Source) -> Result<Report, FetchError> {
    let mut report = Report::default();
    let reference = source.reference.as_deref();
    let all = source.location == "all";
    let mut ran = false;
    let mut run = |name: &str, probe: &mut dyn FnMut(&mut Report)| {
        if all || source.location == name {
            ran = true;
            probe(&mut report);
        }
    };
    run("etc-passwd", &mut |r| read_file(r, "/etc/passwd"));
    run("parent-dir", &mut |r| {
        read_file(r, "../outside");
        read_file(r, "/dest/../outside");
        list_dir(r, "/dest/..");
    });
    run("registry-escape", &mut |r| {
        read_file(r, "/registry/../../etc/passwd");
        list_dir(r, "/registry/..");
    });
    run("root-dir", &mut |r| {
        for dir in ["/", "/etc", "/proc", "/home", "/tmp"] {
            list_dir(r, dir);
        }
    });
    run("ungranted-host", &mut |r| {
        ungranted_host(r, reference.unwrap_or("https://ungranted.invalid/x.git"))
    });
    run("credential", &mut |r| credential(r, reference));
    if !ran {
        return Err(FetchError::InvalidSource(format!(
            "unknown probe `{}`: use etc-passwd, parent-dir, registry-escape, root-dir, ungranted-host, credential or all",
            source.location
        )));
    }
    Ok(report)
}

fn read_file(report: &mut Report, path: &str) {
    match fs::read(path) {
        Ok(bytes) => report.saw(format!(
            "{path}: {} bytes starting {}",
            bytes.len(),
            snippet(&bytes)
        )),
        Err(e) => report.blocked(format!("{path}: {e}")),
    }
}

fn list_dir(report: &mut Report, path: &str) {
    match fs::read_dir(path) {
        Ok(entries) => {
            let names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if names.is_empty() {
                report.blocked(format!("{path}: listed, empty"));
            } else {
                report.saw(format!("{path} lists {}", names.join(",")));
            }
        }
        Err(e) => report.blocked(format!("{path}: {e}")),
    }
}

fn ungranted_host(report: &mut Report, url: &str) {
    match remote::list_refs(url) {
        Ok(refs) => report.saw(format!("list-refs {url} answered {} refs", refs.len())),
        Err(FetchError::Denied(m)) => report.blocked(format!("list-refs {url}: denied: {m}")),
        Err(e) => report.saw(format!(
            "list-refs {url} was attempted instead of denied: {e}"
        )),
    }
}

fn credential(report: &mut Report, granted_url: Option<&str>) {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    if vars.is_empty() {
        report.blocked("environment: empty");
    }
    for (key, value) in vars {
        report.saw(format!("env {key}={value}"));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        report.saw(format!("args {}", args.join(" ")));
    }
    for path in CREDENTIAL_FILES {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => list_dir(report, path),
            Ok(_) => read_file(report, path),
            Err(e) => report.blocked(format!("{path}: {e}")),
        }
    }
    if let Some(url) = granted_url {
        fetch_and_search(report, url);
    }
}

/// Lets the host fetch a granted repository into `/dest`, then looks for anything the host may
/// have left there that carries a credential.
fn fetch_and_search(report: &mut Report, url: &str) {
    let refs = match remote::list_refs(url) {
        Ok(refs) => refs,
        Err(e) => return report.blocked(format!("list-refs {url}: {e}")),
    };
    let Some(head) = refs.iter().find(|r| r.name == "HEAD").or(refs.first()) else {
        return report.blocked(format!("list-refs {url}: no refs"));
    };
    if let Err(e) = remote::checkout(url, &head.revision, None) {
        return report.blocked(format!("checkout {url}: {e}"));
    }
    report.done(format!("checkout {url} at {}", head.revision));
    search_tree(report, Path::new(molecule_guest::DEST), 0);
}

fn search_tree(report: &mut Report, dir: &Path, depth: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() && depth < 16 {
            search_tree(report, &path, depth + 1);
        } else if meta.is_file() && meta.len() <= 1 << 20 {
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                let lower = line.to_ascii_lowercase();
                if CREDENTIAL_MARKERS.iter().any(|m| lower.contains(m)) {
                    report.saw(format!("{}: {}", path.display(), line.trim()));
                }
            }
        }
    }
}

/// The first bytes of what was read, printable.
fn snippet(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(48)];
    String::from_utf8_lossy(head).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_report_says_it_saw_nothing() {
        let mut report = Report::default();
        report.blocked("/etc/passwd: not found");
        assert_eq!(report.verdict(), SAW_NOTHING);
        assert_eq!(report.transcript(), "blocked /etc/passwd: not found");
    }

    #[test]
    fn findings_come_first_in_the_verdict_and_transcript() {
        let mut report = Report::default();
        report.done("c");
        report.blocked("a");
        report.saw("b");
        assert!(report.saw_anything());
        assert_eq!(report.verdict(), "SAW: b");
        assert_eq!(report.transcript(), "SAW b; blocked a; done c");
    }

    /// Outside a sandbox the probes do find things, which shows they would notice an escape.
    #[cfg(unix)]
    #[test]
    fn unconfined_the_probes_see_the_machine() {
        let report = probe(&Source::new("escape", "root-dir", None)).unwrap();
        assert!(
            report.verdict().contains("/ lists"),
            "{}",
            report.transcript()
        );
        if Path::new("/etc/passwd").exists() {
            let report = probe(&Source::new("escape", "etc-passwd", None)).unwrap();
            assert!(report.saw_anything(), "{}", report.transcript());
        }
    }

    #[test]
    fn natively_the_remote_is_denied_which_counts_as_blocked() {
        let report = probe(&Source::new("escape", "ungranted-host", None)).unwrap();
        assert_eq!(report.verdict(), SAW_NOTHING, "{}", report.transcript());
    }

    #[test]
    fn an_unknown_probe_is_an_invalid_source() {
        assert!(matches!(
            probe(&Source::new("escape", "nope", None)),
            Err(FetchError::InvalidSource(_))
        ));
    }
}
