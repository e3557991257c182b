//! ISO 4217 currencies that Stripe supports, as lowercase codes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Stripe's supported presentment currencies (lowercase ISO 4217).
const SUPPORTED: &[&str] = &[
    "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd", "bdt",
    "bgn", "bhd", "bif", "bmd", "bnd", "bob", "brl", "bsd", "bwp", "byn", "bzd", "cad", "cdf",
    "chf", "clp", "cny", "cop", "crc", "cve", "czk", "djf", "dkk", "dop", "dzd", "egp", "etb",
    "eur", "fjd", "fkp", "gbp", "gel", "gip", "gmd", "gnf", "gtq", "gyd", "hkd", "hnl", "htg",
    "huf", "idr", "ils", "inr", "isk", "jmd", "jod", "jpy", "kes", "kgs", "khr", "kmf", "krw",
    "kwd", "kyd", "kzt", "lak", "lbp", "lkr", "lrd", "lsl", "mad", "mdl", "mga", "mkd", "mmk",
    "mnt", "mop", "mur", "mvr", "mwk", "mxn", "myr", "mzn", "nad", "ngn", "nio", "nok", "npr",
    "nzd", "omr", "pab", "pen", "pgk", "php", "pkr", "pln", "pyg", "qar", "ron", "rsd", "rub",
    "rwf", "sar", "sbd", "scr", "sek", "sgd", "shp", "sle", "sos", "srd", "std", "szl", "thb",
    "tjs", "tnd", "top", "try", "ttd", "twd", "tzs", "uah", "ugx", "usd", "uyu", "uzs", "vnd",
    "vuv", "wst", "xaf", "xcd", "xof", "xpf", "yer", "zar", "zmw",
];

/// A supported currency, always lowercase.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Parses a currency code, accepting any letter case. `param` names the field in errors.
    pub fn parse(raw: &str, param: &str) -> Result<Currency> {
        if raw.is_empty() {
            return Err(Error::missing_param(param));
        }
        let lower = raw.to_ascii_lowercase();
        if SUPPORTED.binary_search(&lower.as_str()).is_ok() {
            Ok(Currency(lower))
        } else {
            Err(Error::invalid_param(
                param,
                format!(
                    "Invalid currency: {raw}. Stripe currently supports these currencies: {}",
                    SUPPORTED.join(", ")
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Currency::parse(&value, "currency")
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supported_list_is_sorted_so_binary_search_works() {
        assert!(SUPPORTED.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn codes_are_normalized_to_lowercase() {
        assert_eq!(Currency::parse("USD", "currency").unwrap().as_str(), "usd");
        assert_eq!(Currency::parse("eur", "currency").unwrap().as_str(), "eur");
    }

    #[test]
    fn unknown_and_empty_codes_are_rejected_with_the_param() {
        let error = Currency::parse("xyz", "currency").unwrap_err();
        assert_eq!(error.param.as_deref(), Some("currency"));
        let error = Currency::parse("", "amount[monetary][currency]").unwrap_err();
        assert_eq!(error.code, Some("parameter_missing"));
    }
}
