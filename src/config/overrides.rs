//! Values for configuration keys that come from outside the file: the
//! `QUMO_<SECTION>__<KEY>` environment variables (containers set
//! environment, not files) and the `--set section.key=value` flag.
//!
//! Each one is laid over the file's YAML before the typed parse, so it is
//! checked exactly like the same key written in the file, and an error
//! about it names the variable or flag instead of the file.

use serde_yaml::{Mapping, Value};

/// Environment variables that set configuration keys start with this.
pub const ENV_PREFIX: &str = "QUMO_";

/// Separates the section from the key in a variable's name
/// (`QUMO_RELAY__GROUP_CACHE_SIZE`): keys themselves contain single
/// underscores.
pub const ENV_SEPARATOR: &str = "__";

/// One key's value from outside the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Where it came from, as errors name it: `environment variable
    /// QUMO_RELAY__GROUP_CACHE_SIZE` or `--set relay.group_cache_size`.
    pub source: String,
    /// The dotted key, `relay.group_cache_size`.
    pub key: String,
    /// The value as YAML: `5`, `true`, `[a, b]`, `8 MiB`, `"[::]:4433"`.
    pub value: String,
}

impl Override {
    /// The overrides among `vars` (an environment): every
    /// `QUMO_<SECTION>__<KEY>`, the name lowercased into `section.key`, in
    /// name order. Other `QUMO_*` variables (with no `__`) are not
    /// configuration keys and are left alone.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
        let mut overrides: Vec<Override> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(ENV_PREFIX)?;
                if !rest.contains(ENV_SEPARATOR) {
                    return None;
                }
                let key = rest
                    .split(ENV_SEPARATOR)
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join(".");
                Some(Override {
                    source: format!("environment variable {name}"),
                    key,
                    value,
                })
            })
            .collect();
        overrides.sort_by(|a, b| a.source.cmp(&b.source));
        overrides
    }

    /// A `--set section.key=value` argument.
    pub fn from_flag(text: &str) -> Result<Override, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not KEY=VALUE (e.g. relay.group_cache_size=5)"))?;
        let key = key.trim();
        Ok(Override {
            source: format!("--set {key}"),
            key: key.to_string(),
            value: value.to_string(),
        })
    }

    /// Whether an error about the dotted `key` is about this override's
    /// value: the key itself or something inside it (`tls.generate[0]`).
    pub(super) fn covers(&self, key: &str) -> bool {
        key.strip_prefix(self.key.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    }

    /// Whether this override's key is inside the dotted `section`.
    pub(super) fn lies_in(&self, section: &str) -> bool {
        self.key
            .strip_prefix(section)
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// Set this key in `root`, a parsed configuration file; the reason
    /// when the key is not one.
    pub(super) fn apply(&self, root: &mut Value) -> Result<(), String> {
        let parts: Vec<&str> = self.key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err("not a configuration key such as relay.group_cache_size".into());
        }
        let mut node = root;
        for part in &parts {
            if !node.is_mapping() {
                // A section left empty (`relay:`) or absent.
                *node = Value::Mapping(Mapping::new());
            }
            let Value::Mapping(map) = node else {
                unreachable!("made a mapping just above")
            };
            node = map
                .entry(Value::String(part.to_string()))
                .or_insert(Value::Null);
        }
        *node = yaml_value(&self.value);
        Ok(())
    }
}

/// A value as YAML would read it on the right of `key:` (a number, a bool,
/// null, a flow sequence), or else the text itself: `[::]:4433` or
/// `0.0.0.0:4433` stay strings.
fn yaml_value(text: &str) -> Value {
    match serde_yaml::from_str::<Value>(text) {
        Ok(value @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::Sequence(_))) => value,
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn section_and_key_are_split_at_the_double_underscore() {
        let overrides = Override::from_env(env(&[
            ("QUMO_RELAY__GROUP_CACHE_SIZE", "5"),
            ("QUMO_SERVER__ADDRESS", "[::]:1"),
            ("QUMO_FUZZ_SEED", "7"),
            ("QUMO_CONFIG", "x.yaml"),
            ("PATH", "/bin"),
        ]));
        let keys: Vec<_> = overrides.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["relay.group_cache_size", "server.address"]);
        assert_eq!(
            overrides[0].source,
            "environment variable QUMO_RELAY__GROUP_CACHE_SIZE"
        );
    }

    #[test]
    fn values_are_read_as_yaml_scalars_but_addresses_stay_strings() {
        assert_eq!(yaml_value("5"), Value::Number(5.into()));
        assert_eq!(yaml_value("true"), Value::Bool(true));
        assert_eq!(yaml_value("null"), Value::Null);
        assert_eq!(
            yaml_value("[a, b]"),
            Value::Sequence(vec!["a".into(), "b".into()])
        );
        assert_eq!(yaml_value("[::]:4433"), Value::String("[::]:4433".into()));
        assert_eq!(yaml_value("8 MiB"), Value::String("8 MiB".into()));
        assert_eq!(yaml_value("a: b"), Value::String("a: b".into()));
    }

    #[test]
    fn a_flag_needs_key_equals_value() {
        let o = Override::from_flag("relay.group_cache_size=7").unwrap();
        assert_eq!(
            (o.key.as_str(), o.value.as_str()),
            ("relay.group_cache_size", "7")
        );
        assert!(Override::from_flag("relay.group_cache_size").is_err());
    }

    #[test]
    fn covers_the_key_and_what_is_inside_it_only() {
        let o = Override::from_flag("tls.generate=[a]").unwrap();
        assert!(o.covers("tls.generate"));
        assert!(o.covers("tls.generate[0]"));
        assert!(!o.covers("tls.generated"));
        assert!(!o.covers("tls"));
    }
}
