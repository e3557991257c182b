//! `/v1/test_helpers/test_clocks`.

use axum::Json;
use axum::extract::{RawQuery, State};

use super::path::Path;

use super::RestError;
use super::body::FormBody;
use super::context::Ctx;
use super::expand::Expand;
use super::form;
use crate::domain::test_clock::{CreateTestClock, parse_advance_target};
use crate::render::{DeletedJson, List, TestClockJson};
use crate::service::Services;

pub async fn create(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    FormBody(body): FormBody,
) -> Result<Json<TestClockJson>, RestError> {
    let mut params = form::parse(&body)?;
    let frozen_time = params.take_i64("frozen_time")?;
    let name = params.take_str("name")?;
    let customer = params.take_str("customer")?;
    Expand::parse(form::expand(&mut params)?, &[])?;
    form::finish(params)?;
    let clock = services
        .create_test_clock(&ctx, CreateTestClock::parse(frozen_time, name, customer)?)
        .await?;
    Ok(Json(clock.into()))
}

pub async fn retrieve(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<TestClockJson>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    Expand::parse(form::expand(&mut params)?, &[])?;
    form::finish(params)?;
    Ok(Json(services.get_test_clock(&ctx, &id).await?.into()))
}

pub async fn list(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    RawQuery(query): RawQuery,
) -> Result<Json<List<TestClockJson>>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let request = form::list_request(&mut params)?;
    Expand::parse(form::expand(&mut params)?, &[])?;
    form::finish(params)?;
    let page = services.list_test_clocks(&ctx, &request).await?;
    Ok(Json(List::new(
        page,
        "/v1/test_helpers/test_clocks".to_string(),
        TestClockJson::from,
    )))
}

pub async fn delete(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> Result<Json<DeletedJson>, RestError> {
    let id = services.delete_test_clock(&ctx, &id).await?;
    Ok(Json(DeletedJson {
        id,
        object: "test_helpers.test_clock",
        deleted: true,
    }))
}

pub async fn advance(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<TestClockJson>, RestError> {
    let mut params = form::parse(&body)?;
    let frozen_time = params.take_i64("frozen_time")?;
    Expand::parse(form::expand(&mut params)?, &[])?;
    form::finish(params)?;
    let frozen_time = parse_advance_target(frozen_time)?;
    Ok(Json(
        services
            .advance_test_clock(&ctx, &id, frozen_time)
            .await?
            .into(),
    ))
}
