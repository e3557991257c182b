//! `/v1/customers/{customer}/balance_transactions`.

use axum::Json;
use axum::extract::{RawQuery, State};

use super::path::Path;

use super::RestError;
use super::body::FormBody;
use super::context::Ctx;
use super::expand::Expand;
use super::form;
use crate::domain::customer::Customer;
use crate::domain::customer_balance_transaction::{
    CreateBalanceTransaction, CustomerBalanceTransaction, CustomerBalanceTransactionFilter,
    TransactionFields, UpdateBalanceTransaction,
};
use crate::error::Result;
use crate::render::{CustomerBalanceTransactionJson, List};
use crate::service::{RequestContext, Services};

const EXPANDABLE: &[&str] = &["customer"];
const LIST_EXPANDABLE: &[&str] = &["data.customer"];

/// Renders one transaction, fetching its customer when `customer` is expanded.
async fn render(
    services: &Services,
    ctx: &RequestContext,
    transaction: CustomerBalanceTransaction,
    expand_customer: bool,
) -> Result<CustomerBalanceTransactionJson> {
    let customer: Option<Customer> = if expand_customer {
        Some(services.get_customer(ctx, &transaction.customer_id).await?)
    } else {
        None
    };
    Ok(CustomerBalanceTransactionJson::new(transaction, customer))
}

pub async fn create(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(customer): Path<String>,
    FormBody(body): FormBody,
) -> Result<Json<CustomerBalanceTransactionJson>, RestError> {
    let mut params = form::parse(&body)?;
    let fields = TransactionFields {
        amount: params.take_i64("amount")?,
        currency: params.take_str("currency")?,
        description: params.take_str("description")?,
        metadata: form::metadata(&mut params, true)?,
    };
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let command = CreateBalanceTransaction::parse(customer, fields)?;
    let transaction = services
        .create_customer_balance_transaction(&ctx, command)
        .await?;
    Ok(Json(
        render(&services, &ctx, transaction, expand.has("customer")).await?,
    ))
}

pub async fn retrieve(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path((customer, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<CustomerBalanceTransactionJson>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let transaction = services
        .get_customer_balance_transaction(&ctx, &customer, &id)
        .await?;
    Ok(Json(
        render(&services, &ctx, transaction, expand.has("customer")).await?,
    ))
}

pub async fn update(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path((customer, id)): Path<(String, String)>,
    FormBody(body): FormBody,
) -> Result<Json<CustomerBalanceTransactionJson>, RestError> {
    let mut params = form::parse(&body)?;
    let description = params.take_str("description")?;
    let metadata = form::metadata(&mut params, true)?;
    let expand = Expand::parse(form::expand(&mut params)?, EXPANDABLE)?;
    form::finish(params)?;
    let command = UpdateBalanceTransaction::parse(description, metadata)?;
    let transaction = services
        .update_customer_balance_transaction(&ctx, &customer, &id, command)
        .await?;
    Ok(Json(
        render(&services, &ctx, transaction, expand.has("customer")).await?,
    ))
}

pub async fn list(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(customer): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<List<CustomerBalanceTransactionJson>>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let request = form::list_request(&mut params)?;
    let created = form::created_fields(&mut params)?;
    let invoice = params.take_str("invoice")?;
    let expand = Expand::parse(form::expand(&mut params)?, LIST_EXPANDABLE)?;
    form::finish(params)?;
    let filter = CustomerBalanceTransactionFilter::parse(created, invoice)?;
    let page = services
        .list_customer_balance_transactions(&ctx, &customer, &filter, &request)
        .await?;
    // Every entry belongs to the same customer: fetch it once.
    let owner = if expand.has("data.customer") {
        Some(services.get_customer(&ctx, &customer).await?)
    } else {
        None
    };
    let url = format!("/v1/customers/{customer}/balance_transactions");
    Ok(Json(List::new(page, url, |transaction| {
        CustomerBalanceTransactionJson::new(transaction, owner.clone())
    })))
}
