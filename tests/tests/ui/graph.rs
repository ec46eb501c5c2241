//! The org page and sign-in: a first visit that asks for a token without calling the host, the
//! org as a draggable, collapsible SVG graph whose positions persist, and the actions on a
//! workspace (state-aware buttons, a confirmation that names the count, rename, move, delete).

use std::time::{Duration, Instant};

use fantoccini::Locator;
use fantoccini::actions::{InputSource as _, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use molecule_e2e::{ADMIN_TOKEN, DbBackend, TestApp, eventually, process_runtime};
use serde_json::{Value, json};

use crate::browser::{Browser, DEADLINE, report_time};

const ONLINE: Duration = Duration::from_secs(90);

fn org_templates() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../org-templates")
}

/// The texts of every error message the page shows (page notes and the banner).
const VISIBLE_ERRORS: &str = "return [...document.querySelectorAll('.note.error')] \
     .filter((n) => !n.hidden && n.offsetParent !== null && n.textContent.trim()) \
     .map((n) => n.textContent);";

/// Every card of the graph: `{id: {x, y, status, collapsed}}`.
const CARDS: &str = "const out = {}; \
     for (const g of document.querySelectorAll('#tree svg#graph g.gnode')) { \
       out[g.dataset.id] = { x: Number(g.dataset.x), y: Number(g.dataset.y), \
         status: g.dataset.status, collapsed: g.dataset.collapsed === 'true' }; } \
     return out;";

/// The browser's console lines at level SEVERE (failed requests, WebSocket and script errors).
async fn severe(browser: &Browser) -> Vec<String> {
    browser
        .console_log()
        .await
        .expect("reading the browser's console")
        .into_iter()
        .filter(|line| line.starts_with("SEVERE"))
        .collect()
}

/// The id of the listed workspace called `name`.
fn id_of(listed: &Value, name: &str) -> String {
    listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {listed}"))["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

/// Presses the element matching `css`, moves the pointer by (`dx`, `dy`) pixels in a few steps
/// and lets go: a real drag through WebDriver's input actions.
async fn drag(browser: &Browser, css: &str, dx: f64, dy: f64) {
    browser
        .until(
            &format!("{css} to be drawn"),
            &format!("return document.querySelector({}) !== null", json!(css)),
        )
        .await;
    let element = browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    let step = Some(Duration::from_millis(50));
    let actions = MouseActions::new("mouse".to_owned())
        .then(PointerAction::MoveToElement {
            element,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveBy {
            duration: step,
            x: dx / 3.0,
            y: dy / 3.0,
        })
        .then(PointerAction::MoveBy {
            duration: step,
            x: dx / 3.0,
            y: dy / 3.0,
        })
        .then(PointerAction::MoveBy {
            duration: step,
            x: dx / 3.0,
            y: dy / 3.0,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser
        .client
        .perform_actions(actions)
        .await
        .unwrap_or_else(|e| panic!("dragging {css}: {e}"));
    browser
        .client
        .release_actions()
        .await
        .expect("releasing the pointer");
}

/// Waits for the graph to show `count` cards.
async fn until_cards(browser: &Browser, count: usize) -> Value {
    browser
        .until(
            &format!("{count} cards in the graph"),
            &format!(
                "const n = document.querySelectorAll('#tree svg#graph g.gnode').length; \
                 return n === {count} ? true : null;"
            ),
        )
        .await;
    browser.js(CARDS).await
}

/// Reloads the page (a new document: nothing kept but the tab's session) and waits for the
/// graph's `count` cards.
async fn reload(browser: &Browser, count: usize) -> Value {
    // A marker only the old document holds.
    browser.js("window.__old = true; return true;").await;
    browser.client.refresh().await.expect("reloading");
    browser
        .until(
            "the org page in a new document",
            "return window.__old === undefined && document.body.dataset.page === 'tree'",
        )
        .await;
    until_cards(browser, count).await
}

/// Opens the actions panel of workspace `id` from its card.
async fn open_actions(browser: &Browser, id: &str, name: &str) {
    browser
        .click(&format!("#graph g.gnode[data-id='{id}'] g.more"))
        .await;
    browser
        .until(
            &format!("the actions panel of {name}"),
            &format!(
                "const p = document.querySelector('#org-actions'); \
                 return p && !p.hidden && p.dataset.id === {id} && \
                   document.querySelector('#act-title').textContent === {name};",
                id = json!(id),
                name = json!(name),
            ),
        )
        .await;
}

/// Which of the panel's lifecycle buttons are enabled.
async fn buttons(browser: &Browser) -> Value {
    browser
        .js("const on = (id) => !document.querySelector(id).disabled; \
             return { restart: on('#act-restart'), pause: on('#act-pause'), \
               resume: on('#act-resume'), delete: on('#act-delete') };")
        .await
}

/// Waits for the open confirmation dialog and returns its count and message.
async fn confirmation(browser: &Browser) -> Value {
    browser
        .until(
            "the confirmation dialog",
            "const d = document.querySelector('#confirm-dialog'); \
             return d && d.open ? { count: Number(d.dataset.count), \
               message: document.querySelector('#confirm-message').textContent } : null;",
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_visit_asks_for_a_token_without_calling_the_host_and_a_wrong_token_says_so_once() {
    let started = Instant::now();
    let app = TestApp::spawn(DbBackend::Sqlite).await;
    app.create_workspace("Solo", None).await;
    let browser = Browser::start(&app.base, "graph-signin").await;

    // A first visit lands on sign-in: nothing red, no API request, no /ws socket, nothing in
    // the browser's console.
    browser.open("#/").await;
    browser
        .until(
            "the sign-in page",
            "return location.hash === '#/signin' && document.querySelector('#signin-form') !== null",
        )
        .await;
    assert_eq!(browser.js(VISIBLE_ERRORS).await, json!([]));
    let quiet = browser
        .js("return { flash: document.querySelector('#flash').hidden, \
               live: document.querySelector('#live').dataset.state, \
               requests: performance.getEntriesByType('resource') \
                 .map((e) => new URL(e.name).pathname).filter((p) => !p.startsWith('/console/')) };")
        .await;
    assert_eq!(
        quiet,
        json!({ "flash": true, "live": "closed", "requests": [] }),
        "a first visit calls nothing"
    );
    let log = severe(&browser).await;
    assert!(log.is_empty(), "the browser logged errors: {log:#?}");
    browser.screenshot("1-first-visit").await;

    // A wrong token: one message, in the form; the token is not kept and no socket opens.
    browser.type_into("#token", "not-the-admin-token").await;
    browser.click("#signin-submit").await;
    browser
        .until(
            "the refusal",
            "const n = document.querySelector('#signin-note'); \
             return n && !n.hidden && n.classList.contains('error');",
        )
        .await;
    let errors = browser.js(VISIBLE_ERRORS).await;
    assert_eq!(
        errors.as_array().map(Vec::len),
        Some(1),
        "exactly one message: {errors}"
    );
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("did not accept this token"),
        "{errors}"
    );
    assert_eq!(
        browser
            .js("return [sessionStorage.getItem('molecule.console.token'), document.querySelector('#live').dataset.state]")
            .await,
        json!([null, "closed"])
    );
    let log = severe(&browser).await;
    assert!(
        log.iter()
            .all(|l| l.contains("401") && !l.contains("WebSocket")),
        "only the refused check is logged: {log:#?}"
    );
    browser.screenshot("2-wrong-token").await;

    // The admin token: the org and a live stream, and nothing failed on the way.
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("#signin-submit").await;
    browser.until_text("#tree", "Solo").await;
    browser
        .until(
            "the live event stream",
            "return document.querySelector('#live').dataset.state === 'open'",
        )
        .await;
    assert_eq!(browser.js(VISIBLE_ERRORS).await, json!([]));
    let log = severe(&browser).await;
    assert!(log.is_empty(), "the browser logged errors: {log:#?}");
    browser.screenshot("3-signed-in").await;
    browser.close().await;
    report_time(started, "graph-signin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_on_without_a_token_works_on_an_open_development_host_and_is_refused_once_elsewhere()
{
    let started = Instant::now();
    let guarded = TestApp::spawn(DbBackend::Sqlite).await;
    let open = TestApp::spawn_with(DbBackend::Sqlite, |c| {
        c.admin_token = None;
        c.env = molecule_host::config::Environment::Development;
    })
    .await;
    open.create_workspace("Open", None).await;
    let mut browser = Browser::start(&guarded.base, "graph-open-host").await;
    browser.reach(&open.base);

    // A host with an admin token: one message, nothing remembered.
    browser.open("#/signin").await;
    browser.click("#signin-open").await;
    browser
        .until(
            "the refusal",
            "const n = document.querySelector('#signin-note'); \
             return n && !n.hidden && n.classList.contains('error');",
        )
        .await;
    assert_eq!(
        browser.js(VISIBLE_ERRORS).await,
        json!(["This host needs a token: paste the admin token or an org token."])
    );
    assert_eq!(
        browser
            .js("return [sessionStorage.getItem('molecule.console.open-host'), document.body.dataset.signedIn]")
            .await,
        json!([null, "false"])
    );
    browser.screenshot("1-refused").await;

    // A development host without an admin token (a loopback caller is the operator): the org
    // and the live stream, with no token.
    browser
        .client
        .goto(&format!("{}/#/signin", open.base))
        .await
        .expect("navigating to the open host");
    browser
        .until(
            "the sign-in page of the open host",
            "return document.body.dataset.page === 'signin'",
        )
        .await;
    browser.click("#signin-open").await;
    browser.until_text("#tree", "Open").await;
    browser
        .until(
            "the live event stream",
            "return document.querySelector('#live').dataset.state === 'open'",
        )
        .await;
    assert_eq!(browser.js(VISIBLE_ERRORS).await, json!([]));
    browser.screenshot("2-open-host").await;
    browser.close().await;
    report_time(started, "graph-open-host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_org_is_a_graph_whose_dragged_and_collapsed_cards_stay_so_after_a_reload() {
    let started = Instant::now();
    let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
        c.org.templates_dir = org_templates();
    })
    .await;
    app.post("/org/import", json!({ "dir": "demo" }))
        .await
        .expect(201);
    let listed = app.get("/workspaces").await.expect(200);
    let eng = id_of(&listed, "Engineering Lead");
    let backend = id_of(&listed, "Backend Developer");
    let browser = Browser::start(&app.base, "graph").await;
    browser.sign_in(ADMIN_TOKEN).await;

    // Five cards at their stored positions, four edges; the graph is the default here.
    let cards = until_cards(&browser, 5).await;
    assert_eq!(
        browser
            .js("return [document.querySelector('#tree').dataset.view, document.querySelectorAll('#graph path.edge').length]")
            .await,
        json!(["graph", 4])
    );
    for w in listed.as_array().unwrap() {
        let card = &cards[w["id"].as_str().unwrap()];
        assert_eq!(xy(card), xy(w), "{} is drawn where it is stored", w["name"]);
    }
    let before = xy(&cards[&backend]);
    browser.screenshot("1-graph").await;

    // Drag the backend developer's card: the drop is saved.
    drag(
        &browser,
        &format!("#graph g.gnode[data-id='{backend}'] a.name"),
        150.0,
        120.0,
    )
    .await;
    let (x, y) = eventually(DEADLINE, || async {
        let w = app.get(&format!("/workspaces/{backend}")).await.body;
        let (x, y) = (w["x"].as_f64()?, w["y"].as_f64()?);
        (x != before.0 || y != before.1).then_some((x, y))
    })
    .await;
    assert!(
        x - before.0 > 100.0 && y - before.1 > 80.0,
        "moved by about the drag: ({}, {}) -> ({x}, {y})",
        before.0,
        before.1
    );
    let cards = browser.js(CARDS).await;
    assert_eq!(xy(&cards[&backend]), (x, y));
    assert_eq!(
        browser.js("return location.hash").await,
        json!("#/"),
        "a drag does not open the workspace"
    );

    // After a reload the card is where it was dropped, as the list answer says.
    let cards = reload(&browser, 5).await;
    assert_eq!(xy(&cards[&backend]), (x, y));
    let listed = app.get("/workspaces").await.expect(200);
    assert_eq!(xy(id_row(&listed, &backend)), (x, y));
    browser.screenshot("2-dragged").await;

    // Collapse the engineering lead: its two developers go, and stay gone after a reload.
    browser
        .click(&format!("#graph g.gnode[data-id='{eng}'] g.toggle"))
        .await;
    let cards = until_cards(&browser, 3).await;
    assert_eq!(cards[&eng]["collapsed"], json!(true));
    browser.until_text("#graph", "+2 hidden").await;
    eventually(DEADLINE, || async {
        let w = app.get(&format!("/workspaces/{eng}")).await.body;
        (w["collapsed"] == true).then_some(())
    })
    .await;
    let cards = reload(&browser, 3).await;
    assert_eq!(cards[&eng]["collapsed"], json!(true));
    browser.screenshot("3-collapsed").await;

    // The list view honours the same flag; expanding there saves it too.
    browser.click("#view-list").await;
    browser
        .until(
            "three rows in the list",
            "return document.querySelectorAll('#tree li[data-id]').length === 3",
        )
        .await;
    browser
        .until_text(&format!("#tree li[data-id='{eng}']"), "+2 hidden")
        .await;
    browser.screenshot("4-list").await;
    browser
        .click(&format!("#tree li[data-id='{eng}'] > .node button.toggle"))
        .await;
    browser
        .until(
            "five rows in the list",
            "return document.querySelectorAll('#tree li[data-id]').length === 5",
        )
        .await;
    eventually(DEADLINE, || async {
        let w = app.get(&format!("/workspaces/{eng}")).await.body;
        (w["collapsed"] == false).then_some(())
    })
    .await;
    browser.close().await;
    report_time(started, "graph");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_subtree_asks_first_naming_how_many_and_cancelling_pauses_nothing() {
    let started = Instant::now();
    let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
        process_runtime(c);
        c.org.templates_dir = org_templates();
    })
    .await;
    app.post("/org/import", json!({ "dir": "demo" }))
        .await
        .expect(201);
    let listed = app.get("/workspaces").await.expect(200);
    let ceo = id_of(&listed, "CEO");
    let eng = id_of(&listed, "Engineering Lead");
    for w in listed.as_array().unwrap() {
        app.wait_settled(w["id"].as_str().unwrap(), ONLINE).await;
    }
    let browser = Browser::start(&app.base, "graph-pause").await;
    browser.sign_in(ADMIN_TOKEN).await;
    let all = |status: &str| {
        format!(
            "const g = [...document.querySelectorAll('#graph g.gnode')]; \
             return g.length === 5 && g.every((n) => n.dataset.status === '{status}');"
        )
    };
    browser.until("five online cards", &all("online")).await;

    // Online: pause and restart are offered, resume is not.
    open_actions(&browser, &ceo, "CEO").await;
    assert_eq!(
        buttons(&browser).await,
        json!({ "restart": true, "pause": true, "resume": false, "delete": true })
    );
    browser.screenshot("1-actions").await;

    // Pausing the CEO asks first, naming the five workspaces it stops; Cancel pauses nothing.
    browser.click("#act-pause").await;
    let asked = confirmation(&browser).await;
    assert_eq!(asked["count"], 5, "{asked}");
    let message = asked["message"].as_str().unwrap();
    assert!(
        message.contains("4 descendants") && message.contains("5 workspaces"),
        "{message}"
    );
    browser.screenshot("2-confirm-pause").await;
    browser.click("#confirm-cancel").await;
    browser
        .until(
            "the dialog to close",
            "return document.querySelector('#confirm-dialog') === null",
        )
        .await;
    let statuses: Vec<Value> = app
        .workspaces()
        .await
        .iter()
        .map(|w| w["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!("online"); 5],
        "cancelling paused nothing"
    );
    assert_eq!(browser.js(VISIBLE_ERRORS).await, json!([]));

    // Confirmed: all five pause (the cards follow /ws); now only resume is offered.
    browser.click("#act-pause").await;
    confirmation(&browser).await;
    browser.click("#confirm-ok").await;
    browser.until("five paused cards", &all("paused")).await;
    browser
        .until_text("#org-note", "Paused 5 workspaces.")
        .await;
    browser
        .until(
            "only resume offered",
            "return document.querySelector('#act-restart').disabled && \
               document.querySelector('#act-pause').disabled && \
               !document.querySelector('#act-resume').disabled",
        )
        .await;
    browser.screenshot("3-paused").await;

    // Below a paused CEO, resume waits for the CEO.
    open_actions(&browser, &eng, "Engineering Lead").await;
    assert_eq!(
        buttons(&browser).await,
        json!({ "restart": false, "pause": false, "resume": false, "delete": true })
    );
    let why = browser
        .js("return document.querySelector('#act-resume').title")
        .await;
    assert!(why.as_str().unwrap().contains("CEO"), "{why}");

    open_actions(&browser, &ceo, "CEO").await;
    browser.click("#act-resume").await;
    browser
        .until_text("#org-note", "Resuming 5 workspaces.")
        .await;
    browser
        .until("five online cards again", &all("online"))
        .await;
    browser.screenshot("4-resumed").await;

    // Online again, the CEO restarts from its card's panel.
    app.wait_settled(&ceo, ONLINE).await;
    browser
        .until(
            "restart offered again",
            "return !document.querySelector('#act-restart').disabled",
        )
        .await;
    browser.click("#act-restart").await;
    browser.until_text("#org-note", "Restarting CEO.").await;
    assert_eq!(browser.js(VISIBLE_ERRORS).await, json!([]));
    browser.close().await;
    report_time(started, "graph-pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_is_renamed_moved_and_deleted_from_the_console_and_a_failed_one_says_why() {
    let started = Instant::now();
    let app = TestApp::spawn(DbBackend::Sqlite).await;
    let alpha = app.create_workspace("Alpha", None).await;
    let beta = app.create_workspace("Beta", Some(&alpha)).await;
    let echo = app.create_workspace("Echo", Some(&alpha)).await;
    let gamma = app.create_workspace("Gamma", Some(&beta)).await;
    let delta = app.create_workspace("Delta", None).await;
    app.post(
        &format!("/admin/workspaces/{delta}/bootstrap-failed"),
        json!({ "error": "provisioning timed out: the agent started but never called /registry/register" }),
    )
    .await
    .expect(200);
    let why = app.get(&format!("/workspaces/{delta}")).await.expect(200);
    assert_eq!(why["status"], "failed");
    let listed = app.get("/workspaces").await.expect(200);
    let why = id_row(&listed, &delta)["last_sample_error"]
        .as_str()
        .expect("a failure reason")
        .to_owned();
    assert!(why.contains("never called /registry/register"), "{why}");

    let browser = Browser::start(&app.base, "graph-edit").await;
    browser.sign_in(ADMIN_TOKEN).await;

    // Never-placed workspaces are laid out without overlapping; the failed one says why on
    // its badge.
    let cards = until_cards(&browser, 5).await;
    let spots: std::collections::HashSet<String> = cards
        .as_object()
        .unwrap()
        .values()
        .map(|c| format!("{},{}", c["x"], c["y"]))
        .collect();
    assert_eq!(spots.len(), 5, "every card has a place of its own: {cards}");
    let tooltip = browser
        .js(&format!(
            "const t = document.querySelector(\"#graph g.gnode[data-id='{delta}'] g.badge title\"); \
             return t ? t.textContent : null;"
        ))
        .await;
    assert_eq!(tooltip, json!(why));
    browser.screenshot("1-failed").await;

    // Renaming Echo to a sibling's name: the host's refusal, shown once.
    open_actions(&browser, &echo, "Echo").await;
    browser.type_into("#act-name", "Beta").await;
    browser.click("#act-rename").await;
    browser
        .until(
            "the host's refusal",
            "const n = document.querySelector('#org-note'); \
             return n && !n.hidden && n.classList.contains('error');",
        )
        .await;
    assert_eq!(
        browser.js(VISIBLE_ERRORS).await,
        json!(["workspace name already in use under this parent"])
    );

    // A rename that works clears it.
    browser.type_into("#act-name", "Epsilon").await;
    browser.click("#act-rename").await;
    browser
        .until_text("#org-note", "Renamed Echo to Epsilon.")
        .await;
    assert_eq!(browser.js(VISIBLE_ERRORS).await, json!([]));
    browser.until_text("#graph", "Epsilon").await;
    let renamed = app.get(&format!("/workspaces/{echo}")).await.expect(200);
    assert_eq!(renamed["name"], "Epsilon");

    // Moving Alpha under Gamma (below Alpha) is refused before the host is asked.
    open_actions(&browser, &alpha, "Alpha").await;
    let offered = browser
        .js(&format!(
            "const o = document.querySelector(\"#act-parent option[value='{gamma}']\"); \
             o.parentNode.value = o.value; return o.disabled;"
        ))
        .await;
    assert_eq!(offered, json!(true), "its own subtree is not offered");
    browser.click("#act-move").await;
    browser
        .until_text("#org-note", "Alpha cannot move under Gamma")
        .await;
    let asked = browser
        .js(&format!(
            "return performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/workspaces/{alpha}')).length"
        ))
        .await;
    assert_eq!(asked, json!(0), "the host was not asked");
    let unmoved = app.get(&format!("/workspaces/{alpha}")).await.expect(200);
    assert_eq!(unmoved["parent_id"], Value::Null);

    // Gamma moves under Delta: the edge follows.
    open_actions(&browser, &gamma, "Gamma").await;
    browser
        .js(&format!(
            "document.querySelector('#act-parent').value = '{delta}'; return true;"
        ))
        .await;
    browser.click("#act-move").await;
    browser
        .until_text("#org-note", "Moved Gamma under Delta.")
        .await;
    assert_eq!(browser.js(VISIBLE_ERRORS).await, json!([]));
    browser
        .until(
            "an edge from Delta to Gamma",
            &format!(
                "return document.querySelector(\"#graph path.edge[data-from='{delta}'][data-to='{gamma}']\") !== null"
            ),
        )
        .await;
    let moved = app.get(&format!("/workspaces/{gamma}")).await.expect(200);
    assert_eq!(moved["parent_id"], json!(delta));
    browser.screenshot("2-moved").await;

    // The list shows the failure reason as the badge's tooltip too.
    browser.click("#view-list").await;
    let tooltip = browser
        .until(
            "the failed badge in the list",
            &format!(
                "const b = document.querySelector(\"#tree li[data-id='{delta}'] > .node .badge\"); \
                 return b ? b.title : null;"
            ),
        )
        .await;
    assert_eq!(tooltip, json!(why));
    browser.screenshot("3-list").await;

    // Deleting Alpha asks first, naming its subtree (Alpha, Beta, Epsilon).
    browser
        .click(&format!(
            "#tree li[data-id='{alpha}'] > .node button.actions"
        ))
        .await;
    browser.until_text("#act-title", "Alpha").await;
    browser.click("#act-delete").await;
    let asked = confirmation(&browser).await;
    assert_eq!(asked["count"], 3, "{asked}");
    browser.screenshot("4-confirm-delete").await;
    browser.click("#confirm-ok").await;
    browser
        .until_text("#org-note", "Deleted Alpha and 2 descendants.")
        .await;
    browser
        .until(
            "two rows left",
            "return document.querySelectorAll('#tree li[data-id]').length === 2",
        )
        .await;
    let left: Vec<String> = app
        .workspaces()
        .await
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["Delta", "Gamma"]);
    browser.close().await;
    report_time(started, "graph-edit");
}

/// A card's or a listed workspace's `(x, y)`.
fn xy(v: &Value) -> (f64, f64) {
    (
        v["x"].as_f64().unwrap_or(f64::NAN),
        v["y"].as_f64().unwrap_or(f64::NAN),
    )
}

fn id_row<'a>(listed: &'a Value, id: &str) -> &'a Value {
    listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|w| w["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {listed}"))
}

/// A console one of whose modules cannot be fetched (here the host answers 503 for it; in life
/// a connection dropped mid-load) does not sit on "Loading…": it reloads once by itself, then
/// says it did not load and offers a Reload button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_whose_modules_do_not_load_reloads_once_then_says_so() {
    let started = Instant::now();
    let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
        c.faults.console_file_unavailable = Some("pages/tree.js".to_owned());
    })
    .await;
    let browser = Browser::start(&app.base, "console-boot-failed").await;
    browser
        .client
        .goto(&format!("{}/#/signin", app.base))
        .await
        .expect("navigating to the console");
    let note = browser.until_text("#boot-failed", "did not load").await;
    assert!(note.contains("could not be fetched"), "{note}");
    assert_eq!(
        browser
            .js("return [performance.getEntriesByType('navigation')[0].type, sessionStorage.getItem('molecule.console.boot-reloads')]")
            .await,
        json!(["reload", "1"]),
        "one reload by itself, and no more"
    );
    browser.screenshot("1-did-not-load").await;
    // Reload by hand: still broken, so the note again (in the new document), without a loop.
    browser
        .js("document.body.dataset.before = 'yes'; return true")
        .await;
    browser.click("#boot-reload").await;
    browser
        .until(
            "the note in the reloaded page",
            "return !document.body.dataset.before && document.querySelector('#boot-failed') !== null",
        )
        .await;
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('molecule.console.boot-reloads')")
            .await,
        json!("1")
    );
    browser.close().await;
    report_time(started, "console-boot-failed");
}
