//! What a resolver may ask for (an admitted URL, a full commit id, a plain subdirectory) and
//! what git answers (refs, a tree listing within the quotas), checked before anything runs or is
//! written.

use super::*;

/// A URL a resolver may reach: `https://`, no credentials in it, host granted.
pub(super) struct Admitted {
    /// `host` or `host:port`, lowercased: what grants and credentials are keyed by.
    pub(super) authority: String,
}

pub(super) fn admit(allowed_hosts: &[String], url: &str) -> Result<Admitted, FetchError> {
    let denied = |why: &str| FetchError::Denied(format!("{why}: {}", url.escape_debug()));
    if url.len() > 2048 || url.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(denied("not a plain https URL"));
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(denied("only https URLs are fetched"));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(FetchError::Denied(
            "credentials do not belong in a URL: the host attaches them itself".into(),
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    let path_ok = !path.is_empty()
        && !path.contains(['?', '#', '\\'])
        && path.split('/').all(|segment| segment != "..");
    if !host_ok || !port_ok || !path_ok {
        return Err(denied("not a plain https URL"));
    }
    let authority = match port {
        Some("443") => host.to_ascii_lowercase(),
        _ => authority.to_ascii_lowercase(),
    };
    if !allowed_hosts
        .iter()
        .any(|granted| granted.eq_ignore_ascii_case(&authority))
    {
        return Err(FetchError::Denied(format!(
            "host `{authority}` is not granted to this resolver"
        )));
    }
    Ok(Admitted { authority })
}

pub(super) fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A subdirectory of a repository: `/`-separated plain names, no `.`, `..`, `.git`, or
/// anything git could read as revision syntax.
pub(super) fn validate_subdir(subdir: &str) -> Result<(), FetchError> {
    let ok = subdir.len() <= 1024
        && subdir.split('/').all(|segment| {
            !segment.is_empty()
                && !segment.starts_with('-')
                && segment.bytes().any(|b| b != b'.')
                && !segment.eq_ignore_ascii_case(".git")
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(FetchError::InvalidSource(format!(
            "`{}` is not a plain relative directory",
            subdir.escape_debug()
        )))
    }
}

/// Parses `git ls-remote` output: `<sha>\t<ref>` per line.
pub(super) fn parse_refs(out: &[u8]) -> Result<Vec<RemoteRef>, FetchError> {
    let text = std::str::from_utf8(out).map_err(|_| {
        FetchError::Upstream("the remote advertised a ref that is not UTF-8".into())
    })?;
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (revision, name) = line.split_once('\t').ok_or_else(|| {
                FetchError::Upstream("the remote answered something unreadable".into())
            })?;
            Ok(RemoteRef {
                name: name.to_owned(),
                revision: revision.to_owned(),
            })
        })
        .collect()
}

/// Checks a `git ls-tree -r -t -l -z` listing against the quotas before anything is written:
/// only directories and regular files, no links or submodules, paths git itself would check
/// out safely.
pub(super) fn check_listing(listing: &[u8], quotas: &FetchQuotas) -> Result<(), FetchError> {
    let mut files = 0u64;
    let mut bytes = 0u64;
    for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = std::str::from_utf8(entry)
            .map_err(|_| FetchError::Denied("the tree holds a path that is not UTF-8".into()))?;
        let (meta, path) = entry
            .split_once('\t')
            .ok_or_else(|| FetchError::Upstream("git listed the tree unreadably".into()))?;
        let mut fields = meta.split_whitespace();
        let (mode, size) = (fields.next().unwrap_or(""), fields.nth(2).unwrap_or("-"));
        if path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.eq_ignore_ascii_case(".git"))
        {
            return Err(FetchError::Denied(format!(
                "the tree holds the unsafe path `{}`",
                path.escape_debug()
            )));
        }
        let depth = path.split('/').count();
        if depth > quotas.max_depth {
            return Err(FetchError::TooLarge(format!(
                "`{}` is nested deeper than {} levels",
                path.escape_debug(),
                quotas.max_depth
            )));
        }
        match mode {
            "040000" => {}
            "100644" | "100755" => {
                files += 1;
                bytes = bytes.saturating_add(size.parse::<u64>().unwrap_or(u64::MAX));
                over_quota(files, bytes, quotas)?;
            }
            "120000" => {
                return Err(FetchError::Denied(format!(
                    "`{}` is a symbolic link; links in fetched trees are refused",
                    path.escape_debug()
                )));
            }
            "160000" => {
                return Err(FetchError::Denied(format!(
                    "`{}` is a submodule; submodules are not fetched",
                    path.escape_debug()
                )));
            }
            other => {
                return Err(FetchError::Denied(format!(
                    "`{}` has the unsupported mode {other}",
                    path.escape_debug()
                )));
            }
        }
    }
    Ok(())
}

pub(super) fn over_quota(files: u64, bytes: u64, quotas: &FetchQuotas) -> Result<(), FetchError> {
    if files > quotas.max_files {
        return Err(FetchError::TooLarge(format!(
            "more than {} files",
            quotas.max_files
        )));
    }
    if bytes > quotas.max_bytes {
        return Err(FetchError::TooLarge(format!(
            "more than {} bytes",
            quotas.max_bytes
        )));
    }
    Ok(())
}
