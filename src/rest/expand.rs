//! Stripe's `expand`: which ID fields to replace by their objects. Each endpoint states what
//! it can expand; anything else is refused as Stripe does.

use crate::error::{Error, Result};

/// Requested expansions, checked against what the endpoint supports.
#[derive(Debug, Default)]
pub struct Expand {
    paths: Vec<String>,
}

/// At most this many levels, as in Stripe.
const MAX_DEPTH: usize = 4;

impl Expand {
    /// `allowed` lists the expandable paths for this endpoint (with `data.` on lists).
    pub fn parse(requested: Vec<String>, allowed: &[&str]) -> Result<Expand> {
        for path in &requested {
            if path.split('.').count() > MAX_DEPTH {
                return Err(Error::invalid_param(
                    "expand",
                    format!(
                        "You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}"
                    ),
                ));
            }
            if !allowed.contains(&path.as_str()) {
                return Err(Error::invalid_param(
                    "expand",
                    format!("This property cannot be expanded ({path})."),
                ));
            }
        }
        Ok(Expand { paths: requested })
    }

    pub fn has(&self, path: &str) -> bool {
        self.paths.iter().any(|requested| requested == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_paths_expand() {
        let expand = Expand::parse(vec!["customer".into()], &["customer"]).unwrap();
        assert!(expand.has("customer"));
        let error = Expand::parse(vec!["invoice".into()], &["customer"]).unwrap_err();
        assert!(error.message.contains("cannot be expanded (invoice)"));
        assert!(Expand::parse(vec!["a.b.c.d.e".into()], &["a.b.c.d.e"]).is_err());
    }
}
