//! `/v1/billing/credit_balance_summary` and `/v1/billing/credit_balance_transactions`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{RawQuery, State};

use super::path::Path;

use super::RestError;
use super::context::Ctx;
use super::credit_grants::render as render_grant;
use super::expand::Expand;
use super::form;
use super::params::Params;
use crate::domain::credit_balance_transaction::{
    CreditBalanceTransaction, CreditTransactionFilter,
};
use crate::domain::credit_grant::{ScopeFields, SummaryFilterFields, SummaryQuery};
use crate::error::Result;
use crate::render::{
    CreditAmountJson, CreditBalanceJson, CreditBalanceSummaryJson, CreditBalanceTransactionJson,
    CreditGrantJson, Expandable, List,
};
use crate::service::{RequestContext, Services};

/// The `filter[…]` parameters, when sent; unknown sub-keys are refused here.
fn summary_filter_fields(params: &mut Params) -> Result<Option<SummaryFilterFields>> {
    let Some(mut filter) = form::object(params, "filter")? else {
        return Ok(None);
    };
    let kind = filter.take_str("type")?;
    let credit_grant = filter.take_str("credit_grant")?;
    let applicability_scope = match form::object(&mut filter, "applicability_scope")? {
        None => None,
        Some(scope) => {
            let (price_type, prices) = form::scope_fields(scope)?;
            Some(ScopeFields { price_type, prices })
        }
    };
    filter.finish()?;
    Ok(Some(SummaryFilterFields {
        kind,
        credit_grant,
        applicability_scope,
    }))
}

pub async fn summary(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    RawQuery(query): RawQuery,
) -> Result<Json<CreditBalanceSummaryJson>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let customer = params.take_str("customer")?;
    form::refuse_customer_account(&mut params)?;
    let filter = summary_filter_fields(&mut params)?;
    let expand = Expand::parse(form::expand(&mut params)?, &["customer"])?;
    form::finish(params)?;
    let query = SummaryQuery::parse(customer, filter)?;
    let balances = services.credit_balance_summary(&ctx, &query).await?;
    let customer = query.customer_id().to_string();
    let customer = if expand.has("customer") {
        Expandable::Object(Box::new(
            services.get_customer(&ctx, &customer).await?.into(),
        ))
    } else {
        Expandable::Id(customer)
    };
    Ok(Json(CreditBalanceSummaryJson {
        object: "billing.credit_balance_summary",
        balances: balances
            .into_iter()
            .map(|balance| CreditBalanceJson {
                available_balance: CreditAmountJson::new(&balance.currency, balance.available),
                ledger_balance: CreditAmountJson::new(&balance.currency, balance.ledger),
            })
            .collect(),
        customer,
        customer_account: None,
        livemode: ctx.tenant.livemode,
    }))
}

/// Renders entries, expanding each distinct grant once when asked.
async fn render(
    services: &Services,
    ctx: &RequestContext,
    entries: Vec<CreditBalanceTransaction>,
    expand_grant: bool,
) -> Result<Vec<CreditBalanceTransactionJson>> {
    let mut grants: HashMap<String, crate::domain::credit_grant::CreditGrant> = HashMap::new();
    let mut rendered = Vec::with_capacity(entries.len());
    for entry in entries {
        let grant: Option<CreditGrantJson> = if expand_grant {
            if !grants.contains_key(&entry.credit_grant_id) {
                let grant = services
                    .get_credit_grant(ctx, &entry.credit_grant_id)
                    .await?;
                grants.insert(grant.id.clone(), grant);
            }
            let grant = grants[&entry.credit_grant_id].clone();
            Some(render_grant(services, ctx, grant, false).await?)
        } else {
            None
        };
        rendered.push(CreditBalanceTransactionJson::new(entry, grant));
    }
    Ok(rendered)
}

pub async fn retrieve_transaction(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<CreditBalanceTransactionJson>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let expand = Expand::parse(form::expand(&mut params)?, &["credit_grant"])?;
    form::finish(params)?;
    let entry = services.get_credit_balance_transaction(&ctx, &id).await?;
    let mut rendered = render(&services, &ctx, vec![entry], expand.has("credit_grant")).await?;
    Ok(Json(rendered.remove(0)))
}

pub async fn list_transactions(
    State(services): State<Services>,
    Ctx(ctx): Ctx,
    RawQuery(query): RawQuery,
) -> Result<Json<List<CreditBalanceTransactionJson>>, RestError> {
    let mut params = form::parse(query.unwrap_or_default().as_bytes())?;
    let request = form::list_request(&mut params)?;
    let customer = params.take_str("customer")?;
    let credit_grant = params.take_str("credit_grant")?;
    form::refuse_customer_account(&mut params)?;
    let expand = Expand::parse(form::expand(&mut params)?, &["data.credit_grant"])?;
    form::finish(params)?;
    let filter = CreditTransactionFilter::parse(customer, credit_grant)?;
    let page = services
        .list_credit_balance_transactions(&ctx, &filter, &request)
        .await?;
    Ok(Json(List {
        object: "list",
        has_more: page.has_more,
        data: render(&services, &ctx, page.data, expand.has("data.credit_grant")).await?,
        url: "/v1/billing/credit_balance_transactions".to_string(),
    }))
}
