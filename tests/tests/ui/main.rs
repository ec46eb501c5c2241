//! The operator console in headless Chromium, driven over WebDriver (fantoccini + Debian's
//! chromedriver) against the real host: sign-in, org import with live status, the workspace
//! page, plugins, the extension swap with its shadow report, and the drift queue.
//!
//! Every test writes PNG screenshots of the pages it visits to `target/ui-screenshots/` (or
//! `$MOLECULE_UI_SCREENSHOTS`). A missing chromium or chromedriver fails the test with a hint to
//! run `make test-ui`, which installs both; nothing is ever skipped.

mod admin;
mod approvals;
mod browser;
mod budget;
mod bundles;
mod console;
mod graph;
mod netns;
mod operate;
mod schedules;
mod team;
mod templates;
mod workspace;
