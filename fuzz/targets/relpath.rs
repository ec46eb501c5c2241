//! Fuzz target `relpath`: [`RelPath`] parsing and lexical resolution. The input is
//! `<base>\n<raw>` (no newline: no base). Whatever the input, a path that parses is relative,
//! normalised and its own parse; a resolved path never climbs above its base's root, and stays
//! under (or at) the base when the raw path has no `..`.

use molecule_host::safefs::RelPath;

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (base, raw) = match text.split_once('\n') {
        Some((base, raw)) => (Some(base), raw),
        None => (None, text.as_ref()),
    };
    let base = base.and_then(|b| RelPath::parse(b).ok());
    if let Some(base) = &base {
        assert_normalised(base);
    }
    if let Ok(parsed) = RelPath::parse(raw) {
        assert_normalised(&parsed);
        // A clean path resolves to itself.
        if parsed.as_str().trim() == parsed.as_str() {
            let resolved = RelPath::resolve(None, parsed.as_str()).expect("a parsed path resolves");
            assert_eq!(resolved, parsed, "resolve(None, p) == p for a parsed p");
        }
    }
    if let Ok(resolved) = RelPath::resolve(base.as_ref(), raw) {
        assert_normalised(&resolved);
        let climbs = raw.trim().split('/').any(|part| part == "..");
        if let (Some(base), false) = (&base, climbs) {
            assert!(
                resolved.starts_with(base),
                "{resolved} resolved from {raw:?} under {base} left its base"
            );
        }
    }
    if let Some(base) = &base
        && let Ok(joined) = base.join(raw)
    {
        assert_normalised(&joined);
        assert!(joined.starts_with(base), "{joined} joined under {base}");
    }
}

/// The invariants of every [`RelPath`] value.
fn assert_normalised(path: &RelPath) {
    let s = path.as_str();
    assert!(!s.is_empty(), "empty path");
    assert!(!s.starts_with('/'), "{s:?} is absolute");
    assert!(!s.ends_with('/'), "{s:?} ends with /");
    assert!(!s.contains('\\'), "{s:?} has a backslash");
    assert!(
        !s.chars().any(char::is_control),
        "{s:?} has a control character"
    );
    assert!(
        s.split('/').all(|p| !p.is_empty() && p != "." && p != ".."),
        "{s:?} has an empty, . or .. component"
    );
    assert_eq!(path.to_string(), s, "Display is the path");
    assert_eq!(
        RelPath::parse(s).ok().as_ref(),
        Some(path),
        "{s:?} is its own parse"
    );
    // Every ancestor is a prefix of the path.
    let mut at = path.clone();
    while let Some(parent) = at.parent() {
        assert!(
            at.starts_with(&parent) && at != parent,
            "{parent} is above {at}"
        );
        assert!(path.starts_with(&parent));
        at = parent;
    }
}
