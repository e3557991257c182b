//! `/v1/customers`.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};

use super::path::Path;

use super::RestError;
use super::body::FormBody;
use super::context::Ctx;
use super::expand::Expand;
use super::form;
use super::params::Params;
use crate::domain::customer::Customer;
use crate::domain::customer::{CreateCustomer, CustomerFields, CustomerFilter, UpdateCustomer};
use crate::error::Result;
use crate::render::{CustomerJson, DeletedJson, Expandable, List};
use crate::service::{RequestContext, Services};

const EXPANDABLE: &[&str] = &["test_clock"];
const LIST_EXPANDABLE: &[&str] = &["data.test_clock"];

/// Renders a customer, embedding its test clock when `test_clock` is expanded.
async fn render(
    services: &Services,
    ctx: &RequestContext,
    customer: Customer,
    expand_clock: bool,
) -> Result<CustomerJson> {
    let clock = match (&customer.test_clock, expand_clock) {
        (Some(clock), true) => Some(services.get_test_clock(ctx, clock).await?),
        _ => None,
    };
    let mut json = CustomerJson::from(customer);
    if let Some(clock) = clock {
        json.test_clock = Some(Expandable::Object(Box::new(clock.into())));
    }
    Ok(json)
}

fn customer_fields(params: &mut Params, allow_clear_metadata: bool) -> Result<CustomerFields> {
    Ok(CustomerFields {
        name: params.take_str("name")?,
        email: params.take_str("email")?,
        description: params.take_str("description")?,
        phone: params.take_str("phone")?,
        metadata: form::metadata(params, allow_clear_metadata)?,
        balance: params.take_i64("balance")?,
    })
}

pub async fn create(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    FormBody(body): FormBody,
) -> Result<Json<CustomerJson>, RestError> {
    let mut params = form::parse(&body)?;
    let fields = customer_fields(&mut params, true)?;
    let test_clock = params.take_str("test_clock")?;
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let command = CreateCustomer::parse(fields, test_clock)?;
    let customer = services.create_customer(&ctx, command).await?;
    Ok(Json(
        render(&services, &ctx, customer, expand.has("test_clock")).await?,
    ))
}

pub async fn retrieve(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let customer = services.get_customer(&ctx, &id).await?;
    // Stripe answers 200 with the `deleted_customer` stub for a deleted customer.
    if customer.deleted {
        return Ok(Json(deleted_customer(customer.id)).into_response());
    }
    Ok(Json(render(&services, &ctx, customer, expand.has("test_clock")).await?).into_response())
}

pub async fn delete(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    FormBody(body): FormBody,
) -> Result<Json<DeletedJson>, RestError> {
    // The request schema is empty with `additionalProperties: false`: any parameter is unknown.
    form::finish(form::parse(query.unwrap_or_default().as_bytes())?)?;
    form::finish(form::parse(&body)?)?;
    let id = services.delete_customer(&ctx, &id).await?;
    Ok(Json(deleted_customer(id)))
}

fn deleted_customer(id: String) -> DeletedJson {
    DeletedJson {
        id,
        object: "customer",
        deleted: true,
    }
}

pub async fn update(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<CustomerJson>, RestError> {
    let mut params = form::parse(&body)?;
    let fields = customer_fields(&mut params, true)?;
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let command = UpdateCustomer::parse(fields)?;
    let customer = services.update_customer(&ctx, &id, command).await?;
    Ok(Json(
        render(&services, &ctx, customer, expand.has("test_clock")).await?,
    ))
}

pub async fn list(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    RawQuery(query): RawQuery,
) -> Result<Json<List<CustomerJson>>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let request = form::list_request(&mut params)?;
    let filter = CustomerFilter::parse(
        form::created_fields(&mut params)?,
        params.take_str("email")?,
        params.take_str("test_clock")?,
    )?;
    let expand = Expand::parse(form::expand(&mut params)?, LIST_EXPANDABLE)?;
    form::finish(params)?;
    let page = services.list_customers(&ctx, &filter, &request).await?;
    let mut data = Vec::with_capacity(page.data.len());
    for customer in page.data {
        data.push(render(&services, &ctx, customer, expand.has("data.test_clock")).await?);
    }
    Ok(Json(List {
        object: "list",
        data,
        has_more: page.has_more,
        url: "/v1/customers".to_string(),
    }))
}
