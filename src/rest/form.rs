//! Reading Stripe parameters into domain inputs: the mapping of parser errors to Stripe's
//! codes, and the parameters many endpoints share (metadata, pagination, `created`, `expand`).

use super::params::{self, MapOrEmpty, ParamError, ParamValue, Params, StringMapOrEmpty};
use crate::domain::MetadataUpdate;
use crate::domain::pagination::{ListRequest, TimeRangeFields};
use crate::error::{Error, ErrorKind, Result};

impl From<ParamError> for Error {
    fn from(error: ParamError) -> Error {
        let param = error.param().to_string();
        let code = error.stripe_code();
        let message = match &error {
            ParamError::InvalidInteger { value, .. } => format!("Invalid integer: {value}"),
            ParamError::InvalidType { param, expected } => {
                format!("Invalid {expected} for {param}.")
            }
            other => other.to_string(),
        };
        let mut error = Error::new(ErrorKind::InvalidRequest, message).with_code(code);
        if !param.is_empty() {
            error = error.with_param(param);
        }
        error
    }
}

/// Parses a form body or query string.
pub fn parse(raw: &[u8]) -> Result<Params> {
    Ok(params::parse(raw)?)
}

/// `metadata[k]=v` pairs (an empty value removes k), or `metadata=` to remove every key
/// where the endpoint allows it.
pub fn metadata(params: &mut Params, allow_clear_all: bool) -> Result<MetadataUpdate> {
    match params.take_string_map("metadata")? {
        None => Ok(MetadataUpdate::default()),
        Some(StringMapOrEmpty::Map(entries)) => MetadataUpdate::parse(false, entries),
        Some(StringMapOrEmpty::Empty) if allow_clear_all => MetadataUpdate::parse(true, Vec::new()),
        Some(StringMapOrEmpty::Empty) => {
            Err(Error::invalid_param("metadata", "Invalid object")
                .with_code("parameter_invalid_empty"))
        }
    }
}

pub fn list_request(params: &mut Params) -> Result<ListRequest> {
    let limit = params.take_i64("limit")?;
    let starting_after = params.take_str("starting_after")?;
    let ending_before = params.take_str("ending_before")?;
    ListRequest::parse(limit, starting_after, ending_before)
}

/// `created=<t>` or `created[gt|gte|lt|lte]=<t>` as read, for a domain filter to validate.
pub fn created_fields(params: &mut Params) -> Result<TimeRangeFields> {
    let param = params.param_path("created");
    match params.take("created") {
        None => Ok(TimeRangeFields::default()),
        Some(ParamValue::Str(value)) if value.is_empty() => Err(Error::invalid_param(
            param,
            "Invalid created: must be an integer or a hash of gt, gte, lt, lte.",
        )),
        Some(ParamValue::Str(value)) => Ok(TimeRangeFields {
            exactly: Some(params::integer(&param, value)?),
            ..TimeRangeFields::default()
        }),
        Some(value) => {
            let mut bounds = value.into_params(param)?;
            let fields = TimeRangeFields {
                exactly: None,
                gt: bounds.take_i64("gt")?,
                gte: bounds.take_i64("gte")?,
                lt: bounds.take_i64("lt")?,
                lte: bounds.take_i64("lte")?,
            };
            bounds.finish()?;
            Ok(fields)
        }
    }
}

/// The `expand` list (`expand[]=a` or `expand[0]=a`).
pub fn expand(params: &mut Params) -> Result<Vec<String>> {
    Ok(params.take_str_list("expand")?.unwrap_or_default())
}

pub fn finish(params: Params) -> Result<()> {
    Ok(params.finish()?)
}

/// A nested object parameter (`key[field]=…`); `key=` (empty) is refused.
pub fn object(params: &mut Params, key: &str) -> Result<Option<Params>> {
    match params.take_map(key)? {
        None => Ok(None),
        Some(MapOrEmpty::Map(object)) => Ok(Some(object)),
        Some(MapOrEmpty::Empty) => Err(Error::invalid_param(
            params.param_path(key),
            format!(
                "Invalid object: {} must be an object.",
                params.param_path(key)
            ),
        )
        .with_code("parameter_invalid_empty")),
    }
}

/// A scope object (`…[price_type]=metered` or `…[prices][0][id]=price_x`) as its two fields.
pub fn scope_fields(mut scope: Params) -> Result<(Option<String>, Option<Vec<String>>)> {
    let price_type = scope.take_str("price_type")?;
    let prices = match scope.take_list("prices")? {
        None => None,
        Some(items) => {
            let mut ids = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                let path = format!("{}[{index}]", scope.param_path("prices"));
                let mut price = item.into_params(path)?;
                ids.push(price.take_str("id")?.unwrap_or_default());
                price.finish()?;
            }
            Some(ids)
        }
    };
    scope.finish()?;
    Ok((price_type, prices))
}

/// `customer_account` is part of Stripe's schema, but creditd has no accounts-as-customers.
pub fn refuse_customer_account(params: &mut Params) -> Result<()> {
    if params.take_str("customer_account")?.is_some() {
        return Err(Error::invalid_param(
            "customer_account",
            "creditd does not support customer_account; pass customer instead.",
        ));
    }
    Ok(())
}
