//! `/v1/billing/credit_grants`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};

use super::path::Path;

use super::RestError;
use super::body::FormBody;
use super::context::Ctx;
use super::expand::Expand;
use super::form;
use super::params::Params;
use crate::domain::credit_grant::{
    CreateCreditGrant, CreditGrant, GrantFields, UpdateCreditGrant, UpdateGrantFields,
};
use crate::domain::text::optional_id;
use crate::error::{Error, ErrorKind, Result};
use crate::render::{CreditGrantJson, List};
use crate::service::{RequestContext, Services};

const EXPANDABLE: &[&str] = &["customer"];
const LIST_EXPANDABLE: &[&str] = &["data.customer"];

/// Renders a grant, fetching its customer when `customer` is expanded.
pub(super) async fn render(
    services: &Services,
    ctx: &RequestContext,
    grant: CreditGrant,
    expand_customer: bool,
) -> Result<CreditGrantJson> {
    let customer = if expand_customer {
        Some(services.get_customer(ctx, &grant.customer_id).await?)
    } else {
        None
    };
    Ok(CreditGrantJson::new(grant, customer))
}

fn grant_fields(params: &mut Params) -> Result<GrantFields> {
    let mut fields = GrantFields {
        customer: params.take_str("customer")?,
        category: params.take_str("category")?,
        priority: params.take_i64("priority")?,
        effective_at: params.take_i64("effective_at")?,
        expires_at: params.take_i64("expires_at")?,
        name: params.take_str("name")?,
        metadata: form::metadata(params, false)?,
        ..GrantFields::default()
    };
    form::refuse_customer_account(params)?;
    if let Some(mut amount) = form::object(params, "amount")? {
        fields.amount_type = amount.take_str("type")?;
        if let Some(mut monetary) = form::object(&mut amount, "monetary")? {
            fields.currency = monetary.take_str("currency")?;
            fields.value = monetary.take_i64("value")?;
            monetary.finish()?;
        }
        amount.finish()?;
    } else {
        return Err(Error::missing_param("amount"));
    }
    let mut config = form::object(params, "applicability_config")?
        .ok_or_else(|| Error::missing_param("applicability_config"))?;
    let scope = form::object(&mut config, "scope")?
        .ok_or_else(|| Error::missing_param("applicability_config[scope]"))?;
    (fields.scope_price_type, fields.scope_prices) = form::scope_fields(scope)?;
    config.finish()?;
    Ok(fields)
}

pub async fn create(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    FormBody(body): FormBody,
) -> Result<Json<CreditGrantJson>, RestError> {
    let mut params = form::parse(&body)?;
    let fields = grant_fields(&mut params)?;
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let grant = services
        .create_credit_grant(&ctx, CreateCreditGrant::parse(fields)?)
        .await?;
    Ok(Json(
        render(&services, &ctx, grant, expand.has("customer")).await?,
    ))
}

pub async fn retrieve(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<CreditGrantJson>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let grant = services.get_credit_grant(&ctx, &id).await?;
    Ok(Json(
        render(&services, &ctx, grant, expand.has("customer")).await?,
    ))
}

pub async fn update(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<CreditGrantJson>, RestError> {
    let mut params = form::parse(&body)?;
    // `expires_at=<t>` sets the expiry; `expires_at=` removes it.
    let (expires_at, clear_expires_at) = match params.take_str("expires_at")? {
        None => (None, false),
        Some(raw) if raw.is_empty() => (None, true),
        Some(raw) => (
            Some(raw.parse::<i64>().map_err(|_| {
                Error::new(ErrorKind::InvalidRequest, format!("Invalid integer: {raw}"))
                    .with_code("parameter_invalid_integer")
                    .with_param("expires_at")
            })?),
            false,
        ),
    };
    let metadata = form::metadata(&mut params, false)?;
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let grant = services
        .update_credit_grant(
            &ctx,
            &id,
            UpdateCreditGrant::parse(UpdateGrantFields {
                expires_at,
                clear_expires_at,
                metadata,
            })?,
        )
        .await?;
    Ok(Json(
        render(&services, &ctx, grant, expand.has("customer")).await?,
    ))
}

/// The body of `/expire` and `/void`: only `expand`.
fn action_params(body: &Bytes) -> Result<Expand> {
    let mut params = form::parse(body)?;
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    Ok(expand)
}

pub async fn expire(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<CreditGrantJson>, RestError> {
    let expand = action_params(&body)?;
    let grant = services.expire_credit_grant(&ctx, &id).await?;
    Ok(Json(
        render(&services, &ctx, grant, expand.has("customer")).await?,
    ))
}

pub async fn void(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<CreditGrantJson>, RestError> {
    let expand = action_params(&body)?;
    let grant = services.void_credit_grant(&ctx, &id).await?;
    Ok(Json(
        render(&services, &ctx, grant, expand.has("customer")).await?,
    ))
}

pub async fn list(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    RawQuery(query): RawQuery,
) -> Result<Json<List<CreditGrantJson>>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let request = form::list_request(&mut params)?;
    let customer = optional_id(params.take_str("customer")?, "customer")?;
    form::refuse_customer_account(&mut params)?;
    let expand = Expand::parse(form::expand(&mut params)?, LIST_EXPANDABLE)?;
    form::finish(params)?;
    let page = services
        .list_credit_grants(&ctx, customer.as_deref(), &request)
        .await?;
    let mut data = Vec::with_capacity(page.data.len());
    for grant in page.data {
        data.push(render(&services, &ctx, grant, expand.has("data.customer")).await?);
    }
    Ok(Json(List {
        object: "list",
        data,
        has_more: page.has_more,
        url: "/v1/billing/credit_grants".to_string(),
    }))
}
