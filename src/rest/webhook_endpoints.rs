//! `/v1/webhook_endpoints`.

use axum::Json;
use axum::extract::{RawQuery, State};

use super::RestError;
use super::body::FormBody;
use super::context::Ctx;
use super::expand::Expand;
use super::form;
use super::params::Params;
use super::path::Path;
use crate::domain::webhook::{CreateWebhookEndpoint, UpdateWebhookEndpoint, WebhookEndpointFields};
use crate::error::Result;
use crate::render::{DeletedJson, List, WebhookEndpointJson};
use crate::service::Services;

/// `webhook_endpoint` has no expandable fields.
const EXPANDABLE: &[&str] = &[];

fn endpoint_fields(params: &mut Params) -> Result<WebhookEndpointFields> {
    Ok(WebhookEndpointFields {
        url: params.take_str("url")?,
        enabled_events: params.take_str_list("enabled_events")?,
        description: params.take_str("description")?,
        metadata: form::metadata(params, true)?,
        api_version: None,
        connect: None,
        disabled: None,
    })
}

pub async fn create(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    FormBody(body): FormBody,
) -> Result<Json<WebhookEndpointJson>, RestError> {
    let mut params = form::parse(&body)?;
    let mut fields = endpoint_fields(&mut params)?;
    fields.api_version = params.take_str("api_version")?;
    fields.connect = params.take_bool("connect")?;
    Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let command = CreateWebhookEndpoint::parse(fields)?;
    let endpoint = services.create_webhook_endpoint(&ctx, command).await?;
    Ok(Json(WebhookEndpointJson::new(endpoint, true)))
}

pub async fn retrieve(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<WebhookEndpointJson>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let endpoint = services.get_webhook_endpoint(&ctx, &id).await?;
    Ok(Json(WebhookEndpointJson::new(endpoint, false)))
}

pub async fn update(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<WebhookEndpointJson>, RestError> {
    let mut params = form::parse(&body)?;
    let mut fields = endpoint_fields(&mut params)?;
    fields.disabled = params.take_bool("disabled")?;
    Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    // `api_version` and `connect` are left in `params`: `finish` reports them as unknown.
    form::finish(params)?;
    let command = UpdateWebhookEndpoint::parse(fields)?;
    let endpoint = services.update_webhook_endpoint(&ctx, &id, command).await?;
    Ok(Json(WebhookEndpointJson::new(endpoint, false)))
}

pub async fn list(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    RawQuery(query): RawQuery,
) -> Result<Json<List<WebhookEndpointJson>>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let request = form::list_request(&mut params)?;
    Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let page = services.list_webhook_endpoints(&ctx, &request).await?;
    Ok(Json(List::new(
        page,
        "/v1/webhook_endpoints".to_string(),
        |endpoint| WebhookEndpointJson::new(endpoint, false),
    )))
}

pub async fn delete(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    FormBody(body): FormBody,
) -> Result<Json<DeletedJson>, RestError> {
    form::finish(form::parse(query.unwrap_or_default().as_bytes())?)?;
    form::finish(form::parse(&body)?)?;
    let id = services.delete_webhook_endpoint(&ctx, &id).await?;
    Ok(Json(DeletedJson {
        id,
        object: "webhook_endpoint",
        deleted: true,
    }))
}
