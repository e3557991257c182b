//! `creditd.v1.CreditHoldService`.

use tonic::{Request, Response, Status};

use super::context;
use super::convert::list_request;
use super::credits::explanation;
use super::proto::{self, credit_hold_service_server::CreditHoldService};
use crate::domain::credit_hold::{
    CaptureCreditHold, CreateCreditHold, CreditHold, HoldFields, HoldFilter,
};
use crate::service::Services;

pub struct CreditHoldApi {
    services: Services,
}

impl CreditHoldApi {
    pub fn new(services: Services) -> Self {
        CreditHoldApi { services }
    }
}

impl From<CreditHold> for proto::CreditHold {
    fn from(hold: CreditHold) -> Self {
        proto::CreditHold {
            object: "creditd.credit_hold".to_string(),
            customer: hold.customer_id.clone(),
            currency: hold.currency.to_string(),
            amount: hold.amount,
            price_type: hold.price.metered.then(|| "metered".to_string()),
            price: hold.price.id.clone(),
            status: hold.status.as_str().to_string(),
            reserved: hold.reserved(),
            reservations: hold
                .reservations
                .iter()
                .map(|r| proto::CreditHoldReservation {
                    credit_grant: r.credit_grant.clone(),
                    amount: r.amount,
                })
                .collect(),
            captured_amount: hold.captured_amount,
            lapsed_amount: hold.lapsed_amount,
            invoice: hold.invoice,
            invoice_line_item: hold.invoice_line_item,
            created: hold.created,
            expires_at: hold.expires_at,
            ended_at: hold.ended_at,
            livemode: hold.livemode,
            test_clock: hold.test_clock,
            id: hold.id,
        }
    }
}

#[tonic::async_trait]
impl CreditHoldService for CreditHoldApi {
    #[tracing::instrument(skip_all, err)]
    async fn create_credit_hold(
        &self,
        request: Request<proto::CreateCreditHoldRequest>,
    ) -> Result<Response<proto::CreditHold>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let command = CreateCreditHold::parse(HoldFields {
            customer: message.customer,
            currency: message.currency,
            amount: message.amount,
            price_type: message.price_type,
            price: message.price,
            ttl_seconds: message.ttl_seconds,
            expires_at: message.expires_at,
        })?;
        let hold = self.services.create_credit_hold(&ctx, command).await?;
        Ok(Response::new(hold.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn capture_credit_hold(
        &self,
        request: Request<proto::CaptureCreditHoldRequest>,
    ) -> Result<Response<proto::CaptureCreditHoldResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let capture = CaptureCreditHold::parse(
            message.id,
            message.invoice,
            message.invoice_line_item,
            message.amount,
        )?;
        let captured = self.services.capture_credit_hold(&ctx, capture).await?;
        Ok(Response::new(proto::CaptureCreditHoldResponse {
            credit_hold: Some(captured.hold.into()),
            applied: captured.application.applied,
            entries: captured
                .application
                .entries
                .into_iter()
                .map(Into::into)
                .collect(),
            explanation: captured.application.explanation.map(explanation),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn release_credit_hold(
        &self,
        request: Request<proto::ReleaseCreditHoldRequest>,
    ) -> Result<Response<proto::CreditHold>, Status> {
        let ctx = context(&self.services, &request).await?;
        let hold = self
            .services
            .release_credit_hold(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(hold.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_credit_hold(
        &self,
        request: Request<proto::GetCreditHoldRequest>,
    ) -> Result<Response<proto::CreditHold>, Status> {
        let ctx = context(&self.services, &request).await?;
        let hold = self
            .services
            .get_credit_hold(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(hold.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn list_credit_holds(
        &self,
        request: Request<proto::ListCreditHoldsRequest>,
    ) -> Result<Response<proto::ListCreditHoldsResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let list = list_request(message.page)?;
        let filter = HoldFilter::parse(message.customer, message.status)?;
        let page = self
            .services
            .list_credit_holds(&ctx, &filter, &list)
            .await?;
        Ok(Response::new(proto::ListCreditHoldsResponse {
            object: "list".to_string(),
            data: page.data.into_iter().map(Into::into).collect(),
            has_more: page.has_more,
            url: "/v1/credit_holds".to_string(),
        }))
    }
}
