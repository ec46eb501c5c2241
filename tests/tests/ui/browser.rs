//! A headless Chromium session for one test: its own chromedriver on a free port (its process
//! group is killed on drop, taking the browser with it), a temporary profile, and helpers that
//! wait on DOM conditions with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::netns::Netns;

/// How long one DOM condition may take (agents coming online included).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// How long a freshly loaded console may take to show its first page before it is reloaded.
const START_GRACE: Duration = Duration::from_secs(20);

/// True once the console's router has rendered a page.
const STARTED: &str = "return document.body && document.body.dataset.page ? true : null";

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

/// Says how long a UI test took and where its screenshots are.
pub fn report_time(started: std::time::Instant, test: &str) {
    eprintln!(
        "{test}: {:.1}s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        screenshot_dir().display()
    );
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
    /// The chromedriver's address, for the browser's console log.
    driver_url: String,
    _profile: tempfile::TempDir,
    _driver: Driver,
    /// Declared after the driver: the browser is gone before its forwarders stop.
    netns: Netns,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("base", &self.base).finish()
    }
}

/// Makes the host at `base` (`http://127.0.0.1:port`) reachable from the browser's namespace.
fn expose(netns: &mut Netns, base: &str) {
    let port = base
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in the host's address {base}"));
    netns
        .expose_host_port(port)
        .unwrap_or_else(|e| panic!("exposing {base} to the browser's network namespace: {e}"));
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
        // Chromedriver and the browser it starts live in a network namespace of their own
        // (see netns.rs), where the host's port is reachable under its own number.
        let mut netns = Netns::new();
        expose(&mut netns, base);
        let inside = free_port();
        let child = netns
            .enter(|| {
                use std::os::unix::process::CommandExt as _;
                Command::new(&chromedriver)
                    .arg(format!("--port={inside}"))
                    .process_group(0)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let port = netns
            .reach_inside_port(inside)
            .expect("a port that leads to chromedriver");
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
        // The page's console messages (script errors, failed module loads) go into a failure's
        // report.
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
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
            driver_url: url,
            _profile: profile,
            _driver: driver,
            netns,
        }
    }

    /// Lets the browser reach a second host at `base` (it reaches the one it started for).
    pub fn reach(&mut self, base: &str) {
        expose(&mut self.netns, base);
    }

    /// Loads the console at `hash` (e.g. `#/import`) as a fresh document and waits for its
    /// router to show a page.
    ///
    /// A document whose scripts did not start (the page still says "Loading…") is reloaded
    /// once after [`START_GRACE`], and what the first document showed goes to stderr: a browser
    /// on a loaded CI machine has been seen to sit on a fresh profile's first page, and the
    /// report says whether a module request failed or a script threw.
    pub async fn open(&self, hash: &str) {
        let url = format!("{}/{hash}", self.base);
        self.client.goto(&url).await.expect("navigating");
        if self.poll(START_GRACE, STARTED).await.is_some() {
            return;
        }
        eprintln!(
            "the console at {url} had not started after {START_GRACE:?}; reloading once.\n{}",
            self.report("console-not-started").await
        );
        // A reload, not a second `goto`: navigating to the same address with only a fragment is
        // a same-document navigation that loads nothing again (seen in a clean-clone run: three
        // module requests had failed, and the "reloaded" page was still that first document).
        self.client.refresh().await.expect("reloading");
        self.until("the console to start (after a reload)", STARTED)
            .await;
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` for up to `limit` until it returns something truthy, and returns that.
    async fn poll(&self, limit: Duration, script: &str) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
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
                return Some(value);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `script` until it returns something truthy, and returns that. On timeout it fails
    /// with `what` and a [report](Self::report) of the page.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        match self.poll(DEADLINE, script).await {
            Some(value) => value,
            None => panic!(
                "waited {DEADLINE:?} for {what}.\n{}",
                self.report(&format!("FAILED-{}", slug(what))).await
            ),
        }
    }

    /// What the page shows and went through, for a failure message: a screenshot named
    /// `shot`, the address, the document's state, its text, every resource it requested with
    /// its status, and the browser's console log. Never panics: it runs when something is
    /// already wrong.
    pub async fn report(&self, shot: &str) -> String {
        let mut out = match self.try_screenshot(shot).await {
            Ok(path) => format!("screenshot: {}\n", path.display()),
            Err(e) => format!("no screenshot: {e}\n"),
        };
        let page = self
            .client
            .execute(
                "const entries = (type) => performance.getEntriesByType(type).map((e) => \
                   `${e.name} status=${e.responseStatus ?? '?'} ${Math.round(e.duration)}ms`); \
                 return { url: location.href, readyState: document.readyState, \
                   page: document.body ? (document.body.dataset.page || null) : null, \
                   text: document.body ? document.body.innerText.slice(0, 3000) : null, \
                   navigation: entries('navigation'), resources: entries('resource') };",
                vec![],
            )
            .await;
        match page {
            Ok(page) => out.push_str(&format!(
                "page: {}\n",
                serde_json::to_string_pretty(&page).unwrap_or_default()
            )),
            Err(e) => out.push_str(&format!("the page did not answer a script: {e}\n")),
        }
        match self.console_log().await {
            Ok(lines) if lines.is_empty() => out.push_str("browser console: empty\n"),
            Ok(lines) => {
                out.push_str("browser console:\n");
                for line in lines {
                    out.push_str(&format!("  {line}\n"));
                }
            }
            Err(e) => out.push_str(&format!("browser console not read: {e}\n")),
        }
        out
    }

    /// The browser's console messages since the last call (chromedriver's log endpoint), each
    /// as `LEVEL message` (`SEVERE` for failed requests, WebSocket and script errors).
    pub async fn console_log(&self) -> Result<Vec<String>, String> {
        let session = self
            .client
            .session_id()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no session")?;
        let response = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&json!({ "type": "browser" }))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        let entries = body["value"].as_array().ok_or_else(|| body.to_string())?;
        Ok(entries
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["level"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or_default()
                )
            })
            .collect())
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

    /// Waits for an element matching `css` and returns it.
    async fn element(&self, css: &str) -> Element {
        self.until(
            &format!("an element matching {css}"),
            &format!("return document.querySelector({}) !== null", json!(css)),
        )
        .await;
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// Clicks the element matching `css`, as a person would: the console re-renders lists when
    /// an event arrives, so the element found can be replaced before the click reaches it. A
    /// person's click lands on whatever is under the pointer then, so a click WebDriver refuses
    /// as stale (it dispatches nothing) is retried on the element that now matches.
    pub async fn click(&self, css: &str) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            match self.element(css).await.click().await {
                Ok(()) => return,
                Err(e) if e.is_stale_element_reference() && attempt < ATTEMPTS => {
                    eprintln!("clicking {css}: the element was re-rendered, clicking again");
                }
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    /// Replaces the value of the input matching `css` by typing `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.element(css).await;
        el.clear().await.expect("clearing");
        el.send_keys(text).await.expect("typing");
    }

    /// Writes `<test>-<name>.png` into the screenshot dir.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        self.try_screenshot(name)
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"))
    }

    async fn try_screenshot(&self, name: &str) -> Result<PathBuf, String> {
        let png = self.client.screenshot().await.map_err(|e| e.to_string())?;
        let path = screenshot_dir().join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
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
