//! Stripe metadata: at most 50 keys of at most 40 characters (no brackets), string values of
//! at most 500 characters. Posting a key with an empty value removes it; posting `metadata=`
//! (where allowed) removes every key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const MAX_KEYS: usize = 50;
pub const MAX_KEY_CHARS: usize = 40;
pub const MAX_VALUE_CHARS: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }

    /// Trusts stored values: they were validated when written.
    pub fn from_stored(map: BTreeMap<String, String>) -> Self {
        Metadata(map)
    }

    /// Applies an update and checks the result against Stripe's limits.
    pub fn apply(&self, update: &MetadataUpdate) -> Result<Metadata> {
        let mut map = if update.clear_all {
            BTreeMap::new()
        } else {
            self.0.clone()
        };
        for (key, value) in &update.entries {
            if value.is_empty() {
                map.remove(key);
            } else {
                map.insert(key.clone(), value.clone());
            }
        }
        if map.len() > MAX_KEYS {
            return Err(Error::invalid_param(
                "metadata",
                format!(
                    "Invalid metadata: metadata can have at most {MAX_KEYS} keys, but {} were given.",
                    map.len()
                ),
            ));
        }
        Ok(Metadata(map))
    }
}

/// A validated change to metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataUpdate {
    /// Remove every key first (`metadata=`).
    pub clear_all: bool,
    /// Keys to set, or to remove when the value is empty. Sorted by key.
    pub entries: Vec<(String, String)>,
}

impl MetadataUpdate {
    pub fn parse(
        clear_all: bool,
        entries: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut entries: Vec<(String, String)> = entries.into_iter().collect();
        entries.sort();
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        if entries.len() > MAX_KEYS {
            return Err(Error::invalid_param(
                "metadata",
                format!("Invalid metadata: metadata can have at most {MAX_KEYS} keys."),
            ));
        }
        for (key, value) in &entries {
            super::text::check_param_name(key)?;
            let param = format!("metadata[{key}]");
            super::text::check_input(&param, value)?;
            if key.is_empty() {
                return Err(Error::invalid_param(
                    "metadata",
                    "Invalid metadata: keys cannot be empty.",
                ));
            }
            if key.chars().count() > MAX_KEY_CHARS {
                return Err(Error::invalid_param(
                    param,
                    format!(
                        "Invalid metadata: keys can be at most {MAX_KEY_CHARS} characters long."
                    ),
                ));
            }
            if key.contains(['[', ']']) {
                return Err(Error::invalid_param(
                    param,
                    "Invalid metadata: keys cannot contain `[` or `]`.",
                ));
            }
            if value.chars().count() > MAX_VALUE_CHARS {
                return Err(Error::invalid_param(
                    param,
                    format!(
                        "Invalid metadata: values can be at most {MAX_VALUE_CHARS} characters long."
                    ),
                ));
            }
        }
        Ok(MetadataUpdate { clear_all, entries })
    }

    pub fn is_empty(&self) -> bool {
        !self.clear_all && self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_value_removes_a_key_and_clear_all_removes_every_key() {
        let base = Metadata::default()
            .apply(&MetadataUpdate::parse(false, pairs(&[("a", "1"), ("b", "2")])).unwrap())
            .unwrap();
        let removed = base
            .apply(&MetadataUpdate::parse(false, pairs(&[("a", "")])).unwrap())
            .unwrap();
        assert_eq!(removed.as_map().keys().collect::<Vec<_>>(), vec!["b"]);
        let cleared = base
            .apply(&MetadataUpdate::parse(true, pairs(&[("c", "3")])).unwrap())
            .unwrap();
        assert_eq!(cleared.as_map().keys().collect::<Vec<_>>(), vec!["c"]);
    }

    #[test]
    fn limits_are_enforced_with_the_offending_param() {
        let long_key = "k".repeat(41);
        let error = MetadataUpdate::parse(false, pairs(&[(long_key.as_str(), "v")])).unwrap_err();
        assert_eq!(error.param.unwrap(), format!("metadata[{long_key}]"));
        assert!(MetadataUpdate::parse(false, pairs(&[("k", &"v".repeat(501))])).is_err());
        assert!(MetadataUpdate::parse(false, pairs(&[("a[b", "v")])).is_err());
        assert!(MetadataUpdate::parse(false, pairs(&[("k", &"v".repeat(500))])).is_ok());
        let fifty_one: Vec<(String, String)> =
            (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(MetadataUpdate::parse(false, fifty_one).is_err());
    }

    #[test]
    fn the_key_limit_applies_to_the_merged_result() {
        let fifty: Vec<(String, String)> = (0..50).map(|i| (format!("k{i}"), "v".into())).collect();
        let full = Metadata::default()
            .apply(&MetadataUpdate::parse(false, fifty).unwrap())
            .unwrap();
        let one_more = MetadataUpdate::parse(false, pairs(&[("extra", "v")])).unwrap();
        assert!(full.apply(&one_more).is_err());
        let swap = MetadataUpdate::parse(false, pairs(&[("extra", "v"), ("k0", "")])).unwrap();
        assert_eq!(full.apply(&swap).unwrap().as_map().len(), 50);
    }
}
