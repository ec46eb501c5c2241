//! Fuzz target `plugin_source`: the plugin `source` parser (`scheme://location#reference`, a
//! bare name being `local`) and the `track` parser (`none`, `tag:x`, `sha:x`). Every line of the
//! input is tried as both. What parses must print back to itself and keep the parsers' own
//! rules.

use molecule_host::extensions::types::Source;
use molecule_host::plugins::{self, PluginError, Track};

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_one(&text);
    for line in text.lines() {
        check_one(line);
    }
}

fn check_one(raw: &str) {
    if let Some(source) = Source::parse(raw) {
        assert!(!source.scheme.is_empty() && source.scheme.len() <= 32);
        assert!(
            source
                .scheme
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "scheme {:?}",
            source.scheme
        );
        assert!(!source.location.is_empty());
        assert_ne!(source.reference.as_deref(), Some(""));
        let printed = source.to_string();
        assert_eq!(
            Source::parse(&printed).as_ref(),
            Some(&source),
            "{raw:?} printed as {printed:?} does not parse back"
        );
    }
    let available = vec!["local".to_owned(), "git".to_owned()];
    match plugins::parse_source_among(available.clone(), raw) {
        Ok(source) => {
            assert!(available.contains(&source.scheme));
            if source.scheme == "local" {
                assert!(
                    plugins::valid_name(&source.location),
                    "{:?}",
                    source.location
                );
                assert!(!source.location.contains('/') && !source.location.starts_with('.'));
            }
        }
        Err(
            PluginError::InvalidSource
            | PluginError::InvalidName
            | PluginError::UnknownScheme { .. },
        ) => {}
        Err(other) => panic!("parse_source_among failed with {other:?}"),
    }
    if let Some(track) = Track::parse(Some(raw)) {
        let printed = track.as_string();
        assert_eq!(
            Track::parse(Some(&printed)),
            Some(track.clone()),
            "{printed:?}"
        );
        if let Track::Tag(value) | Track::Sha(value) = &track {
            assert!(!value.is_empty() && value.len() <= 255 && !value.contains(".."));
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
            );
        }
    }
}
