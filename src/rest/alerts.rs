//! `/v1/billing/alerts` (`alert_type=credit_balance_threshold`, Stripe's preview shape).

use axum::Json;
use axum::extract::{RawQuery, State};

use super::RestError;
use super::body::FormBody;
use super::context::Ctx;
use super::expand::Expand;
use super::form;
use super::params::Params;
use super::path::Path;
use crate::domain::alert::{AlertAction, AlertFields, AlertFilter, AlertFilterFields, CreateAlert};
use crate::error::Result;
use crate::render::{BillingAlertJson, List};
use crate::service::Services;

/// The alert's `x-expandableFields` are nested configs, never IDs: expanding changes nothing.
const EXPANDABLE: &[&str] = &[
    "credit_balance_threshold",
    "spend_threshold",
    "usage_threshold",
];
const LIST_EXPANDABLE: &[&str] = &[
    "data.credit_balance_threshold",
    "data.spend_threshold",
    "data.usage_threshold",
];

/// `credit_balance_threshold[…]` into `fields`.
fn credit_balance_threshold(mut config: Params, fields: &mut AlertFields) -> Result<()> {
    fields.credit_balance_threshold = true;
    if let Some(items) = config.take_list("filters")? {
        for (index, item) in items.into_iter().enumerate() {
            let mut filter =
                item.into_params(format!("{}[{index}]", config.param_path("filters")))?;
            let mut parsed = AlertFilterFields {
                kind: filter.take_str("type")?,
                customer: filter.take_str("customer")?,
                ..AlertFilterFields::default()
            };
            if let Some(mut grants) = form::object(&mut filter, "credit_grants")? {
                if let Some(mut applicability) = form::object(&mut grants, "applicability_config")?
                {
                    if let Some(scope) = form::object(&mut applicability, "scope")? {
                        parsed.has_scope = true;
                        (parsed.scope_price_type, parsed.scope_prices) = form::scope_fields(scope)?;
                    }
                    applicability.finish()?;
                }
                grants.finish()?;
            }
            filter.finish()?;
            fields.filters.push(parsed);
        }
    }
    if let Some(mut lte) = form::object(&mut config, "lte")? {
        fields.balance_type = lte.take_str("balance_type")?;
        fields.custom_pricing_unit = lte.take("custom_pricing_unit").is_some();
        if let Some(mut monetary) = form::object(&mut lte, "monetary")? {
            fields.currency = monetary.take_str("currency")?;
            fields.value = monetary.take_i64("value")?;
            monetary.finish()?;
        }
        lte.finish()?;
    }
    config.finish()?;
    Ok(())
}

pub async fn create(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    FormBody(body): FormBody,
) -> Result<Json<BillingAlertJson>, RestError> {
    let mut params = form::parse(&body)?;
    let mut fields = AlertFields {
        alert_type: params.take_str("alert_type")?,
        title: params.take_str("title")?,
        usage_threshold: params.take("usage_threshold").is_some(),
        ..AlertFields::default()
    };
    if let Some(config) = form::object(&mut params, "credit_balance_threshold")? {
        credit_balance_threshold(config, &mut fields)?;
    }
    Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let command = CreateAlert::parse(fields)?;
    let alert = services.create_alert(&ctx, command).await?;
    Ok(Json(BillingAlertJson::new(alert)))
}

pub async fn retrieve(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<BillingAlertJson>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let alert = services.get_alert(&ctx, &id).await?;
    Ok(Json(BillingAlertJson::new(alert)))
}

pub async fn list(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    RawQuery(query): RawQuery,
) -> Result<Json<List<BillingAlertJson>>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let request = form::list_request(&mut params)?;
    let alert_type = params.take_str("alert_type")?;
    let customer = params.take_str("customer")?;
    // `meter` filters usage alerts, which creditd has none of: a meter matches nothing.
    let meter = params.take_str("meter")?;
    Expand::parse(form::expand(&mut params)?, LIST_EXPANDABLE)?;
    form::finish(params)?;
    let mut filter = AlertFilter::parse(alert_type, customer)?;
    filter.other_type |= meter.is_some_and(|meter| !meter.is_empty());
    let page = services.list_alerts(&ctx, &filter, &request).await?;
    Ok(Json(List::new(
        page,
        "/v1/billing/alerts".to_string(),
        BillingAlertJson::new,
    )))
}

async fn change(
    services: Services,
    ctx: crate::service::RequestContext,
    id: String,
    body: axum::body::Bytes,
    action: AlertAction,
) -> Result<Json<BillingAlertJson>, RestError> {
    let mut params = form::parse(&body)?;
    Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let alert = services.change_alert(&ctx, &id, action).await?;
    Ok(Json(BillingAlertJson::new(alert)))
}

pub async fn activate(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<BillingAlertJson>, RestError> {
    change(services, ctx, id, body, AlertAction::Activate).await
}

pub async fn deactivate(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<BillingAlertJson>, RestError> {
    change(services, ctx, id, body, AlertAction::Deactivate).await
}

pub async fn archive(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<BillingAlertJson>, RestError> {
    change(services, ctx, id, body, AlertAction::Archive).await
}
