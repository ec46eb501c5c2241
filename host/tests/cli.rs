//! `molecule ext` as a person uses it: the real binary, real components, a real host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn molecule() -> Command {
    Command::new(env!("CARGO_BIN_EXE_molecule"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn component(name: &str) -> PathBuf {
    let path = repo()
        .join("plugins/target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins`",
        path.display()
    );
    path
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn validate_accepts_a_component_for_its_slot_and_explains_a_mismatch() {
    let ok = molecule()
        .args(["ext", "validate"])
        .arg(component("skill-classifier"))
        .args(["--slot", "classifier"])
        .output()
        .unwrap();
    let report = json_of(&ok);
    assert_eq!(report["valid"], true);
    assert!(report["digest"].as_str().unwrap().starts_with("sha256:"));

    let wrong = molecule()
        .args(["ext", "validate"])
        .arg(component("skill-classifier"))
        .args(["--slot", "restart-policy"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("molecule:plugin/restart"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[test]
fn test_runs_a_case_in_the_real_runtime_and_prints_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let classify = dir.path().join("classify.json");
    std::fs::write(
        &classify,
        r#"{"changes":[{"path":"skills/a/SKILL.md","kind":"modified","old_digest":"sha256:aa","new_digest":"sha256:bb"}]}"#,
    )
    .unwrap();
    let out = molecule()
        .args(["ext", "test"])
        .arg(component("skill-classifier"))
        .arg("--input")
        .arg(&classify)
        .output()
        .unwrap();
    assert_eq!(
        json_of(&out)["reload"],
        serde_json::json!({ "kind": "hot" })
    );

    let decide = dir.path().join("decide.json");
    std::fs::write(
        &decide,
        r#"{"workspace":{"id":"w","name":"Dev","runtime":"langgraph","tier":3,"status":"online","update_tier":"production","recent_restarts":2},
            "trigger":{"kind":"agent_exited","code":1}}"#,
    )
    .unwrap();
    let out = molecule()
        .args(["ext", "test"])
        .arg(component("default-restart-policy"))
        .arg("--input")
        .arg(&decide)
        .output()
        .unwrap();
    assert_eq!(
        json_of(&out)["decision"],
        serde_json::json!({ "kind": "restart_after_ms", "ms": 4000 })
    );

    // A guest that loops forever is stopped with the host's limits, and the CLI says so.
    let out = molecule()
        .args(["ext", "test"])
        .arg(component("loop-classifier"))
        .arg("--input")
        .arg(&classify)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deadline"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_scaffolded_classifier_passes_its_own_test_builds_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("docs-hot");
    let out = molecule()
        .args(["ext", "new", "classifier", "docs-hot", "--dir"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(crate_dir.join("manifest.json").is_file());
    // Reuse one target directory across runs so the SDK is compiled once.
    let target = repo().join("target/ext-scaffold");
    let test = Command::new("cargo")
        .arg("test")
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}",
        String::from_utf8_lossy(&test.stderr)
    );
    let build = molecule()
        .args(["ext", "build"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = PathBuf::from(String::from_utf8_lossy(&build.stdout).trim());
    let validated = molecule()
        .args(["ext", "validate"])
        .arg(&wasm)
        .args(["--slot", "classifier"])
        .output()
        .unwrap();
    assert_eq!(json_of(&validated)["valid"], true);
    // Scaffolding over an existing directory is refused.
    let again = molecule()
        .args(["ext", "new", "classifier", "docs-hot", "--dir"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
}

/// A `molecule serve` child process on SQLite, killed when dropped.
struct Served {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(token: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = molecule()
        .args(["serve"])
        .env("MOLECULE_DATA_DIR", dir.path())
        .env("MOLECULE_BIND_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "MOLECULE_BUILTIN_EXTENSIONS_DIR",
            repo().join("plugins/target/wasm32-wasip2/release"),
        )
        .env("ADMIN_TOKEN", token)
        .env_remove("DATABASE_URL")
        .env_remove("MOLECULE_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let served = Served {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "molecule serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    served
}

#[test]
fn install_activate_shadow_and_rollback_through_a_running_host() {
    let token = "cli-test-admin-token-0123456789";
    let host = serve(token);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.json");
    std::fs::write(
        &manifest,
        r#"{"name":"strict","version":"2.0.0","slot":"classifier"}"#,
    )
    .unwrap();
    let remote = |args: &[&str]| {
        let mut cmd = molecule();
        cmd.arg("ext")
            .args(args)
            .args(["--host", &host.url])
            .env("MOLECULE_ADMIN_TOKEN", token);
        cmd
    };
    let installed = json_of(
        &remote(&[
            "install",
            component("answer-classifier").to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ])
        .output()
        .unwrap(),
    );
    let id = installed["id"].as_str().unwrap().to_owned();
    json_of(&remote(&["shadow", &id]).output().unwrap());
    assert_eq!(
        json_of(&remote(&["report", "classifier"]).output().unwrap())["candidate_id"],
        id.as_str()
    );
    json_of(&remote(&["activate", &id]).output().unwrap());
    let listed = json_of(&remote(&["list"]).output().unwrap());
    let active: Vec<&str> = listed["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["active"] == true)
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(active.contains(&"strict"), "{listed}");
    let rolled = json_of(&remote(&["rollback", "classifier"]).output().unwrap());
    assert_eq!(rolled["status"], "rolled_back");
    // Without the token the host refuses, and the CLI exits non-zero.
    let refused = molecule()
        .args(["ext", "list", "--host", &host.url])
        .env_remove("MOLECULE_ADMIN_TOKEN")
        .env_remove("ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

/// `make plugins` (which `make run` and `make test` depend on) builds the components where the
/// host and the tests look for them, even for someone whose environment sets `CARGO_TARGET_DIR`
/// (a common Rust habit that used to make the Makefile list files cargo had built elsewhere).
#[test]
fn make_plugins_builds_where_the_host_looks_even_with_cargo_target_dir_set() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new("make")
        .args(["--no-print-directory", "plugins"])
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", elsewhere.path())
        .output()
        .expect("make runs");
    assert!(
        out.status.success(),
        "make plugins failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(component("skill-classifier").is_file());
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none(),
        "nothing was built under CARGO_TARGET_DIR"
    );
}
