//! Length-checked optional strings, the shape of most descriptive fields.

use crate::error::{Error, Result};

/// Checks an optional string's length in characters. An empty string means "unset" (Stripe
/// clears a field when it is posted empty), so it becomes `None`.
pub fn optional_text(
    value: Option<String>,
    param: &str,
    max_chars: usize,
) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => {
            if text.chars().count() > max_chars {
                return Err(Error::invalid_param(
                    param,
                    format!("Invalid {param}: must be at most {max_chars} characters"),
                ));
            }
            Ok(Some(text))
        }
    }
}

/// A field in an update: absent (`None`), cleared (`Some(None)`) or set (`Some(Some(_))`).
pub fn text_update(
    value: Option<String>,
    param: &str,
    max_chars: usize,
) -> Result<Option<Option<String>>> {
    match value {
        None => Ok(None),
        Some(text) => Ok(Some(optional_text(Some(text), param, max_chars)?)),
    }
}

/// A required identifier parameter: absent and empty are both "missing".
pub fn required_id(value: Option<String>, param: &str) -> Result<String> {
    value
        .filter(|value| !value.is_empty())
        .ok_or_else(|| Error::missing_param(param))
}

/// An optional identifier parameter: empty counts as absent.
pub fn optional_id(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_unset_and_length_counts_characters() {
        assert_eq!(optional_text(Some(String::new()), "name", 3).unwrap(), None);
        assert_eq!(
            optional_text(Some("ééé".into()), "name", 3)
                .unwrap()
                .unwrap(),
            "ééé"
        );
        assert!(optional_text(Some("abcd".into()), "name", 3).is_err());
        assert_eq!(
            text_update(Some(String::new()), "d", 3).unwrap(),
            Some(None)
        );
        assert_eq!(text_update(None, "d", 3).unwrap(), None);
    }
}
