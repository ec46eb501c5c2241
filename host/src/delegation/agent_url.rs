//! How the host resolves the names in agent URLs: the A2A client's resolver, and the answers a
//! spec can supply for names it invents ([`DnsAnswers`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// When a name is looked up: to check a URL (registration, the proxy's check) or to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Check,
    Connect,
}

/// DNS answers a spec supplies for names it invents, in place of the machine's resolver. A test
/// hook set in code only (`Config::faults`): configuration cannot reach it. A name answered with
/// no address does not resolve.
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
        self.at_check.insert(key(name), addresses.to_vec());
        self.at_connect.insert(key(name), addresses.to_vec());
        self
    }

    /// `name` answers `at_check` when a URL is checked and `at_connect` when the host connects:
    /// a rebinding name.
    pub fn rebind(&mut self, name: &str, at_check: &[IpAddr], at_connect: &[IpAddr]) -> &mut Self {
        self.at_check.insert(key(name), at_check.to_vec());
        self.at_connect.insert(key(name), at_connect.to_vec());
        self
    }

    fn get(&self, name: &str, lookup: Lookup) -> Option<&[IpAddr]> {
        let answers = match lookup {
            Lookup::Check => &self.at_check,
            Lookup::Connect => &self.at_connect,
        };
        match answers.get(&key(name)) {
            Some(found) => Some(found),
            None if self.closed => Some(&[]),
            None => None,
        }
    }
}

/// Names compare without case and without the root's trailing dot.
fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The addresses `name` resolves to: the supplied answer when there is one, else the machine's
/// resolver. Empty when it does not resolve.
pub async fn resolve(answers: &DnsAnswers, name: &str, lookup: Lookup) -> Vec<IpAddr> {
    if let Some(supplied) = answers.get(name, lookup) {
        return supplied.to_vec();
    }
    match tokio::net::lookup_host((name, 0)).await {
        Ok(found) => found.map(|a| a.ip()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The A2A client's resolver.
#[derive(Debug, Clone)]
pub struct Resolver {
    answers: DnsAnswers,
}

impl Resolver {
    pub fn new(answers: DnsAnswers) -> Self {
        Self { answers }
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let found = resolve(&this.answers, name.as_str(), Lookup::Connect).await;
            if found.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the agent's name does not resolve",
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs =
                Box::new(found.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
