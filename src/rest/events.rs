//! `/v1/events`: the Events API (read only; events exist because something else changed).

use axum::Json;
use axum::extract::{RawQuery, State};

use super::RestError;
use super::context::Ctx;
use super::expand::Expand;
use super::form;
use super::path::Path;
use crate::domain::event::EventFilter;
use crate::render::{EventJson, List};
use crate::service::Services;

/// Stripe lists `data` and `request` as expandable; neither holds an ID, so expanding them
/// changes nothing, but asking is not an error.
const EXPANDABLE: &[&str] = &["data", "request"];
const LIST_EXPANDABLE: &[&str] = &["data.data", "data.request"];

pub async fn retrieve(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<EventJson>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    Ok(Json(services.get_event(&ctx, &id).await?.into()))
}

pub async fn list(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    RawQuery(query): RawQuery,
) -> Result<Json<List<EventJson>>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let request = form::list_request(&mut params)?;
    let filter = EventFilter::parse(
        form::created_fields(&mut params)?,
        params.take_str("type")?,
        params.take_str_list("types")?,
        params.take_bool("delivery_success")?,
    )?;
    Expand::parse(form::expand(&mut params)?, LIST_EXPANDABLE)?;
    form::finish(params)?;
    let page = services.list_events(&ctx, &filter, &request).await?;
    Ok(Json(List::new(
        page,
        "/v1/events".to_string(),
        EventJson::from,
    )))
}
