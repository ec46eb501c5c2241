//! Test-only fault hooks (`Config::faults`), set in code: configuration cannot reach them. They
//! are plain data here, so `config` needs nothing from the modules they fault; those modules
//! read them.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Fault hooks a spec sets on the host it starts.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fail this step of every plugin reinstall (a live copy exists).
    pub plugin_reinstall: Option<DeliveryStep>,
    /// DNS answers for names a spec invents (agent URLs); other names use the machine's resolver.
    pub dns: DnsAnswers,
    /// Store the secrets of an org import's `n`th new workspace (from 0) with an encryption
    /// version the schema refuses, so the import's one transaction fails in the database after
    /// the workspace, layout and config rows (and the secrets before them) were written.
    pub org_import_refused_secret_at: Option<usize>,
    /// Answer 503 for this console file (`pages/tree.js`), as a dropped fetch would fail it.
    pub console_file_unavailable: Option<String>,
    /// Fail this step of every workspace template import (`POST /templates/import`).
    pub template_import: Option<TemplateImportStep>,
    /// The unit of `hibernation_idle_minutes` in place of a minute, so a spec sees the idle
    /// monitor fire in seconds.
    pub hibernation_minute: Option<std::time::Duration>,
    /// The background loop of this name (`kv-expiry`) hangs in its first pass, so liveness
    /// reports it stale.
    pub stalled_loop: Option<&'static str>,
}

/// A step of a workspace template import, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateImportStep {
    /// After the new files were written into the staging directory, before anything moved.
    Stage,
    /// After the old template was moved aside, before the new one was moved into its place.
    Swap,
}

/// A step of a plugin delivery (`plugins::deliver`), for fault injection and error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStep {
    Stage,
    Snapshot,
    Swap,
    Marker,
}

impl DeliveryStep {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStep::Stage => "stage",
            DeliveryStep::Snapshot => "snapshot",
            DeliveryStep::Swap => "swap",
            DeliveryStep::Marker => "marker",
        }
    }
}

/// DNS answers a spec supplies for names it invents, in place of the machine's resolver
/// (`delegation::agent_url` reads them). A name answered with no address does not resolve.
#[derive(Debug, Clone, Default)]
pub struct DnsAnswers {
    at_check: BTreeMap<String, Vec<IpAddr>>,
    at_connect: BTreeMap<String, Vec<IpAddr>>,
    closed: bool,
}

impl DnsAnswers {
    /// Names without a supplied answer do not resolve either: the machine's resolver is never
    /// asked.
    pub fn closed(&mut self) -> &mut Self {
        self.closed = true;
        self
    }

    /// `name` answers `addresses` whenever it is looked up.
    pub fn answer(&mut self, name: &str, addresses: &[IpAddr]) -> &mut Self {
        self.rebind(name, addresses, addresses)
    }

    /// `name` answers `at_check` when a URL is checked and `at_connect` when the host connects:
    /// a rebinding name.
    pub fn rebind(&mut self, name: &str, at_check: &[IpAddr], at_connect: &[IpAddr]) -> &mut Self {
        self.at_check.insert(name_key(name), at_check.to_vec());
        self.at_connect.insert(name_key(name), at_connect.to_vec());
        self
    }

    /// Whether a spec answered `name` itself.
    pub fn answers(&self, name: &str) -> bool {
        self.at_check.contains_key(&name_key(name))
    }

    /// The supplied answer for `name` when checking (`at_connect` false) or connecting; `None`
    /// when the machine's resolver should be asked, an empty list when the name must not
    /// resolve.
    pub fn get(&self, name: &str, at_connect: bool) -> Option<&[IpAddr]> {
        let answers = if at_connect {
            &self.at_connect
        } else {
            &self.at_check
        };
        match answers.get(&name_key(name)) {
            Some(found) => Some(found),
            None if self.closed => Some(&[]),
            None => None,
        }
    }
}

/// Names compare without case and without the root's trailing dot.
pub(crate) fn name_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}
