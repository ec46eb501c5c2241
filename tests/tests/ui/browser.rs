//! A headless Chromium session for one test: its own chromedriver on a free port (its process
//! group is killed on drop, taking the browser with it), a temporary profile, and helpers that
//! wait on DOM conditions with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long one DOM condition may take (agents coming online included).
pub const DEADLINE: Duration = Duration::from_secs(90);

fn binary(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing ({env} unset or wrong): the UI tests need Debian's chromium and \
         chromedriver; run `make test-ui`, which installs them",
        path.display()
    );
    path
}

/// Where screenshots go: `$MOLECULE_UI_SCREENSHOTS`, else `target/ui-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("MOLECULE_UI_SCREENSHOTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots"),
        PathBuf::from,
    )
}

/// A chromedriver process and the group it leads (chromedriver and the browsers it starts).
struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The driver was started as the leader of its own process group, so this ends the
        // browser processes it started too, and nothing else.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// One browser pointed at one host.
pub struct Browser {
    pub client: Client,
    base: String,
    /// Prefix of this test's screenshot files.
    test: &'static str,
    _profile: tempfile::TempDir,
    _driver: Driver,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("base", &self.base).finish()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium for the host at `base`.
    pub async fn start(base: &str, test: &'static str) -> Browser {
        let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("CHROMIUM", "/usr/bin/chromium");
        let port = free_port();
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()))
        };
        let driver = Driver { child };
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer on {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a browser profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--window-size=1280,1600",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        std::fs::create_dir_all(screenshot_dir()).expect("creating the screenshot dir");
        Browser {
            client,
            base: base.to_owned(),
            test,
            _profile: profile,
            _driver: driver,
        }
    }

    /// Loads the console at `hash` (e.g. `#/import`) as a fresh document.
    pub async fn open(&self, hash: &str) {
        self.client
            .goto(&format!("{}/{hash}", self.base))
            .await
            .expect("navigating");
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something truthy, and returns that. On timeout it saves
    /// a screenshot and fails with `what` and the page's text.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let value = self
                .client
                .execute(script, vec![])
                .await
                .unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                self.screenshot(&format!("FAILED-{}", slug(what))).await;
                let text = self.js("return document.body.innerText").await;
                panic!(
                    "waited {DEADLINE:?} for {what}; the page says:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the text of the first element matching `css` to contain `needle`.
    pub async fn until_text(&self, css: &str, needle: &str) -> String {
        let script = format!(
            "const el = document.querySelector({css}); \
             return el && el.textContent.includes({needle}) ? el.textContent : null;",
            css = json!(css),
            needle = json!(needle),
        );
        let found = self
            .until(&format!("{css} to say {needle:?}"), &script)
            .await;
        found.as_str().unwrap_or_default().to_owned()
    }

    pub async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Replaces the value of the input matching `css` by typing `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self
            .client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        el.clear().await.expect("clearing");
        el.send_keys(text).await.expect("typing");
    }

    /// Writes `<test>-<name>.png` into the screenshot dir.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = screenshot_dir().join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }

    /// Signs in on the sign-in page with `token` and waits for the org tree.
    pub async fn sign_in(&self, token: &str) {
        self.open("#/signin").await;
        self.type_into("#token", token).await;
        self.click("#signin-submit").await;
        self.until(
            "the org page after signing in",
            "return document.body.dataset.page === 'tree' && document.querySelector('#tree-summary') !== null \
             && !document.querySelector('#tree-summary').textContent.startsWith('Loading')",
        )
        .await;
    }

    /// Ends the WebDriver session (the browser quits); the driver is killed on drop.
    pub async fn close(self) {
        let Browser { client, .. } = self;
        let _ = client.close().await;
    }
}

fn slug(what: &str) -> String {
    what.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(60)
        .collect()
}
