//! `creditd.v1.CreditGrantService` and `creditd.v1.CreditBalanceService`.

use tonic::{Request, Response, Status};

use super::context;
use super::convert::{list_request, metadata_update, scope_fields};
use super::proto::{
    self, credit_balance_service_server::CreditBalanceService,
    credit_grant_service_server::CreditGrantService,
};
use crate::domain::credit_application::{
    ApplyCredits, ApplyFields, CreditApplication, ExplainLine, Explanation, ReinstateCredits,
    check_batch_size,
};
use crate::domain::credit_balance_transaction::CreditTransactionFilter;
use crate::domain::credit_grant::{
    CreateCreditGrant, GrantFields, ScopeFields, SummaryFilterFields, SummaryQuery,
    UpdateCreditGrant, UpdateGrantFields,
};
use crate::domain::text::optional_id;
use crate::service::Services;

pub struct CreditGrantApi {
    services: Services,
}

impl CreditGrantApi {
    pub fn new(services: Services) -> Self {
        CreditGrantApi { services }
    }
}

#[tonic::async_trait]
impl CreditGrantService for CreditGrantApi {
    #[tracing::instrument(skip_all, err)]
    async fn create_credit_grant(
        &self,
        request: Request<proto::CreateCreditGrantRequest>,
    ) -> Result<Response<proto::CreditGrant>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        // An absent amount (or monetary part) is "missing", not zero.
        let amount_type = message
            .amount
            .as_ref()
            .map(|amount| amount.r#type.clone())
            .filter(|t| !t.is_empty());
        let monetary = message.amount.and_then(|amount| amount.monetary);
        let (scope_price_type, scope_prices) =
            scope_fields(message.applicability_config.and_then(|config| config.scope));
        let fields = GrantFields {
            customer: Some(message.customer),
            amount_type,
            currency: monetary
                .as_ref()
                .map(|m| m.currency.clone())
                .filter(|c| !c.is_empty()),
            value: monetary.map(|m| m.value),
            scope_price_type,
            scope_prices,
            category: message.category,
            priority: message.priority,
            effective_at: message.effective_at,
            expires_at: message.expires_at,
            name: message.name,
            metadata: metadata_update(false, message.metadata)?,
        };
        let grant = self
            .services
            .create_credit_grant(&ctx, CreateCreditGrant::parse(fields)?)
            .await?;
        Ok(Response::new(grant.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_credit_grant(
        &self,
        request: Request<proto::GetCreditGrantRequest>,
    ) -> Result<Response<proto::CreditGrant>, Status> {
        let ctx = context(&self.services, &request).await?;
        let grant = self
            .services
            .get_credit_grant(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(grant.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn list_credit_grants(
        &self,
        request: Request<proto::ListCreditGrantsRequest>,
    ) -> Result<Response<proto::ListCreditGrantsResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let list = list_request(message.page)?;
        let customer = optional_id(message.customer, "customer")?;
        let page = self
            .services
            .list_credit_grants(&ctx, customer.as_deref(), &list)
            .await?;
        Ok(Response::new(proto::ListCreditGrantsResponse {
            object: "list".to_string(),
            data: page.data.into_iter().map(Into::into).collect(),
            has_more: page.has_more,
            url: "/v1/billing/credit_grants".to_string(),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn update_credit_grant(
        &self,
        request: Request<proto::UpdateCreditGrantRequest>,
    ) -> Result<Response<proto::CreditGrant>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let command = UpdateCreditGrant::parse(UpdateGrantFields {
            expires_at: message.expires_at,
            clear_expires_at: message.clear_expires_at,
            metadata: metadata_update(false, message.metadata)?,
        })?;
        let grant = self
            .services
            .update_credit_grant(&ctx, &message.id, command)
            .await?;
        Ok(Response::new(grant.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn expire_credit_grant(
        &self,
        request: Request<proto::ExpireCreditGrantRequest>,
    ) -> Result<Response<proto::CreditGrant>, Status> {
        let ctx = context(&self.services, &request).await?;
        let grant = self
            .services
            .expire_credit_grant(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(grant.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn void_credit_grant(
        &self,
        request: Request<proto::VoidCreditGrantRequest>,
    ) -> Result<Response<proto::CreditGrant>, Status> {
        let ctx = context(&self.services, &request).await?;
        let grant = self
            .services
            .void_credit_grant(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(grant.into()))
    }
}

pub struct CreditBalanceApi {
    services: Services,
}

impl CreditBalanceApi {
    pub fn new(services: Services) -> Self {
        CreditBalanceApi { services }
    }
}

/// The summary filter's fields from its message form.
fn summary_filter_fields(filter: Option<proto::SummaryFilter>) -> Option<SummaryFilterFields> {
    filter.map(|filter| SummaryFilterFields {
        kind: Some(filter.r#type),
        credit_grant: filter.credit_grant,
        applicability_scope: filter.applicability_scope.map(|scope| {
            let (price_type, prices) = scope_fields(Some(scope));
            ScopeFields { price_type, prices }
        }),
    })
}

/// One invoice line of `ApplyCredits` (or of a batch), checked.
fn apply_command(message: proto::ApplyCreditsRequest) -> crate::error::Result<ApplyCredits> {
    ApplyCredits::parse(ApplyFields {
        customer: message.customer,
        currency: message.currency,
        invoice: message.invoice,
        invoice_line_item: message.invoice_line_item,
        price_type: message.price_type,
        price: message.price,
        amount_due: message.amount_due,
    })
}

fn application_response(application: CreditApplication) -> proto::ApplyCreditsResponse {
    proto::ApplyCreditsResponse {
        applied: application.applied,
        remaining_amount_due: application.remaining_due(),
        currency: application.currency.to_string(),
        entries: application.entries.into_iter().map(Into::into).collect(),
        explanation: application.explanation.map(explanation),
    }
}

#[tonic::async_trait]
impl CreditBalanceService for CreditBalanceApi {
    #[tracing::instrument(skip_all, err)]
    async fn get_credit_balance_summary(
        &self,
        request: Request<proto::GetCreditBalanceSummaryRequest>,
    ) -> Result<Response<proto::CreditBalanceSummary>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let query = SummaryQuery::parse(
            Some(message.customer),
            summary_filter_fields(message.filter),
        )?
        .at(message.as_of)?;
        let balances = self.services.credit_balance_summary(&ctx, &query).await?;
        Ok(Response::new(proto::CreditBalanceSummary {
            object: "billing.credit_balance_summary".to_string(),
            balances: balances.into_iter().map(Into::into).collect(),
            customer: query.customer_id().to_string(),
            customer_account: None,
            livemode: ctx.tenant.livemode,
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_credit_balance_transaction(
        &self,
        request: Request<proto::GetCreditBalanceTransactionRequest>,
    ) -> Result<Response<proto::CreditBalanceTransaction>, Status> {
        let ctx = context(&self.services, &request).await?;
        let entry = self
            .services
            .get_credit_balance_transaction(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(entry.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn list_credit_balance_transactions(
        &self,
        request: Request<proto::ListCreditBalanceTransactionsRequest>,
    ) -> Result<Response<proto::ListCreditBalanceTransactionsResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let filter = CreditTransactionFilter::parse(Some(message.customer), message.credit_grant)?;
        let list = list_request(message.page)?;
        let page = self
            .services
            .list_credit_balance_transactions(&ctx, &filter, &list)
            .await?;
        Ok(Response::new(
            proto::ListCreditBalanceTransactionsResponse {
                object: "list".to_string(),
                data: page.data.into_iter().map(Into::into).collect(),
                has_more: page.has_more,
                url: "/v1/billing/credit_balance_transactions".to_string(),
            },
        ))
    }

    #[tracing::instrument(skip_all, err)]
    async fn apply_credits(
        &self,
        request: Request<proto::ApplyCreditsRequest>,
    ) -> Result<Response<proto::ApplyCreditsResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let command = apply_command(request.into_inner())?;
        let application = self.services.apply_credits(&ctx, command).await?;
        Ok(Response::new(application_response(application)))
    }

    #[tracing::instrument(skip_all, err, fields(lines))]
    async fn apply_credits_batch(
        &self,
        request: Request<proto::ApplyCreditsBatchRequest>,
    ) -> Result<Response<proto::ApplyCreditsBatchResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let lines = request.into_inner().lines;
        tracing::Span::current().record("lines", lines.len());
        check_batch_size(lines.len())?;
        // A line that does not parse answers for itself; the rest are applied together.
        let parsed: Vec<crate::error::Result<ApplyCredits>> =
            lines.into_iter().map(apply_command).collect();
        let commands: Vec<ApplyCredits> = parsed
            .iter()
            .filter_map(|line| line.as_ref().ok().cloned())
            .collect();
        let mut applied = if commands.is_empty() {
            Vec::new()
        } else {
            self.services.apply_credits_batch(&ctx, &commands).await?
        }
        .into_iter();
        let mut results = Vec::with_capacity(parsed.len());
        for line in parsed {
            let outcome = match line {
                Err(error) => Err(error),
                Ok(_) => applied.next().ok_or_else(|| {
                    Status::internal("the batch answered fewer lines than it was given")
                })?,
            };
            results.push(proto::ApplyCreditsLineResult {
                result: Some(match outcome {
                    Ok(application) => proto::apply_credits_line_result::Result::Applied(
                        application_response(application),
                    ),
                    Err(error) => proto::apply_credits_line_result::Result::Error(error.into()),
                }),
            });
        }
        Ok(Response::new(proto::ApplyCreditsBatchResponse { results }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn explain_application(
        &self,
        request: Request<proto::ExplainApplicationRequest>,
    ) -> Result<Response<proto::ExplainApplicationResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let line =
            ExplainLine::parse(message.customer, message.invoice, message.invoice_line_item)?;
        let application = self.services.explain_application(&ctx, &line).await?;
        Ok(Response::new(proto::ExplainApplicationResponse {
            customer: application.customer_id,
            invoice: application.invoice,
            invoice_line_item: application.invoice_line_item,
            currency: application.currency.to_string(),
            amount_due: application.amount_due,
            applied: application.applied,
            entries: application.entries.into_iter().map(Into::into).collect(),
            explanation: application.explanation.map(explanation),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn reinstate_invoice_credits(
        &self,
        request: Request<proto::ReinstateInvoiceCreditsRequest>,
    ) -> Result<Response<proto::ReinstateInvoiceCreditsResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let command = ReinstateCredits::parse(Some(message.customer), Some(message.invoice))?;
        let reinstatement = self
            .services
            .reinstate_invoice_credits(&ctx, &command)
            .await?;
        Ok(Response::new(proto::ReinstateInvoiceCreditsResponse {
            reinstated: reinstatement.reinstated,
            entries: reinstatement.entries.into_iter().map(Into::into).collect(),
        }))
    }
}

/// The message form of an application's explanation.
pub(super) fn explanation(explanation: Explanation) -> proto::ApplicationExplanation {
    proto::ApplicationExplanation {
        draws: explanation
            .draws
            .into_iter()
            .map(|draw| proto::CreditDraw {
                credit_grant: draw.credit_grant,
                amount: draw.amount,
                rank: draw.rank,
                next_credit_grant: draw.next_credit_grant,
                decided_by: draw.decided_by.map(|key| key.as_str().to_string()),
            })
            .collect(),
        skipped: explanation
            .skipped
            .into_iter()
            .map(|skipped| proto::SkippedCreditGrant {
                credit_grant: skipped.credit_grant,
                reason: skipped.reason.as_str().to_string(),
            })
            .collect(),
    }
}
