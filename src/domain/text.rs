//! The rules every string input obeys, and length-checked optional strings (the shape of most
//! descriptive fields).
//!
//! [`check_input`] is the one rule for any string a request carries, on either transport: no NUL
//! character (PostgreSQL cannot store U+0000 in `text`; SQLite can, so without this rule the
//! backends would disagree) and a documented maximum length, so an oversized value is a 400 on
//! every backend instead of an index error on one. The REST parameter parser, REST path IDs and
//! every gRPC request message apply it to each string they read; the resource parses then apply
//! their own, tighter limits.

use crate::error::{Error, Result};

/// The longest string any parameter may carry: Stripe's longest documented field (a customer's
/// `description`).
pub const MAX_TEXT_CHARS: usize = 5000;
/// Identifiers and references: object IDs, page cursors, `invoice`, `invoice_line_item`, price
/// IDs, `expand` paths.
pub const MAX_ID_CHARS: usize = 255;

/// Parameters (the last name in a nested path, list indices left out) that hold an identifier.
const ID_PARAMS: &[&str] = &[
    "id",
    "customer",
    "customer_account",
    "transaction",
    "credit_grant",
    "test_clock",
    "invoice",
    "invoice_line_item",
    "price",
    "prices",
    "starting_after",
    "ending_before",
    "expand",
];

/// The maximum length, in characters, of a string passed as `param` (a parameter path such as
/// `name`, `metadata[order]`, `applicability_config[scope][prices][0][id]` or `page.starting_after`).
pub fn max_input_chars(param: &str) -> usize {
    let mut names = param
        .split(['[', ']', '.'])
        .filter(|name| !name.is_empty() && !name.bytes().all(|byte| byte.is_ascii_digit()));
    let first = names.next().unwrap_or_default();
    if first == "metadata" {
        // Keys and values have their own limits, in `MetadataUpdate::parse`.
        return MAX_TEXT_CHARS;
    }
    let leaf = names.next_back().unwrap_or(first);
    if ID_PARAMS.contains(&leaf) {
        MAX_ID_CHARS
    } else {
        MAX_TEXT_CHARS
    }
}

/// The rule for every string input: refused (400 `parameter_invalid` naming `param`) if it holds
/// a NUL character or is longer than [`max_input_chars`].
pub fn check_input(param: &str, value: &str) -> Result<()> {
    check_param_name(param)?;
    if value.contains('\0') {
        return Err(Error::invalid_param(
            param,
            format!("Invalid {param}: must not contain the NUL character (U+0000)."),
        ));
    }
    let max_chars = max_input_chars(param);
    if value.len() > max_chars && value.chars().count() > max_chars {
        return Err(Error::invalid_param(
            param,
            format!("Invalid {param}: must be at most {max_chars} characters"),
        ));
    }
    Ok(())
}

/// A parameter's name obeys the same rule as its value (a metadata key is a name, for one). The
/// error names the parameter with the NUL shown as `\u0000`, so the reply stays printable.
pub fn check_param_name(param: &str) -> Result<()> {
    if param.contains('\0') {
        let shown = param.replace('\0', "\\u0000");
        return Err(Error::invalid_param(
            shown.clone(),
            format!(
                "Invalid {shown}: parameter names must not contain the NUL character (U+0000)."
            ),
        ));
    }
    if param.len() > MAX_TEXT_CHARS && param.chars().count() > MAX_TEXT_CHARS {
        let shown: String = param.chars().take(40).collect();
        return Err(Error::invalid_param(
            shown,
            format!("Invalid parameter name: must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

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
            check_input(param, &text)?;
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
    let value = value
        .filter(|value| !value.is_empty())
        .ok_or_else(|| Error::missing_param(param))?;
    check_id(param, &value)?;
    Ok(value)
}

/// An optional identifier parameter: empty counts as absent.
pub fn optional_id(value: Option<String>, param: &str) -> Result<Option<String>> {
    match value.filter(|value| !value.is_empty()) {
        None => Ok(None),
        Some(value) => {
            check_id(param, &value)?;
            Ok(Some(value))
        }
    }
}

/// An identifier (a path ID, a reference, a cursor): [`check_input`] with the ID limit whatever
/// the parameter is called.
pub fn check_id(param: &str, value: &str) -> Result<()> {
    check_input(param, value)?;
    if value.len() > MAX_ID_CHARS && value.chars().count() > MAX_ID_CHARS {
        return Err(Error::invalid_param(
            param,
            format!("Invalid {param}: must be at most {MAX_ID_CHARS} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_refused_and_limits_follow_the_parameter() {
        let error = check_input("name", "a\0b").unwrap_err();
        assert_eq!(error.param.as_deref(), Some("name"));
        assert_eq!(error.code, Some("parameter_invalid"));
        assert!(check_input("metadata[a\0b]", "v").is_err());
        assert_eq!(max_input_chars("invoice"), MAX_ID_CHARS);
        assert_eq!(max_input_chars("page.starting_after"), MAX_ID_CHARS);
        assert_eq!(
            max_input_chars("applicability_config[scope][prices][3][id]"),
            MAX_ID_CHARS
        );
        assert_eq!(max_input_chars("expand[0]"), MAX_ID_CHARS);
        assert_eq!(max_input_chars("metadata[invoice]"), MAX_TEXT_CHARS);
        assert_eq!(max_input_chars("description"), MAX_TEXT_CHARS);
        assert!(check_input("invoice", &"x".repeat(255)).is_ok());
        assert!(check_input("invoice", &"x".repeat(256)).is_err());
        assert!(check_input("description", &"é".repeat(5000)).is_ok());
        assert!(check_input("description", &"é".repeat(5001)).is_err());
        assert!(check_id("anything", &"x".repeat(256)).is_err());
    }

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
