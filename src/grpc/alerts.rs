//! `creditd.v1.AlertService`.

use tonic::{Request, Response, Status};

use super::context;
use super::convert::{credit_scope, list_request, scope_fields};
use super::proto::{self, alert_service_server::AlertService};
use crate::domain::alert::{
    AlertAction, AlertFields, AlertFilter, AlertFilterFields, CREDIT_BALANCE_THRESHOLD,
    CreateAlert, CreditBalanceAlert,
};
use crate::service::Services;

pub struct AlertApi {
    services: Services,
}

impl AlertApi {
    pub fn new(services: Services) -> Self {
        AlertApi { services }
    }

    async fn change<T: prost::Message>(
        &self,
        request: Request<T>,
        id: &str,
        action: AlertAction,
    ) -> Result<Response<proto::Alert>, Status> {
        let ctx = context(&self.services, &request).await?;
        let alert = self.services.change_alert(&ctx, id, action).await?;
        Ok(Response::new(to_message(alert)))
    }
}

fn to_message(alert: CreditBalanceAlert) -> proto::Alert {
    proto::Alert {
        object: "billing.alert".to_string(),
        alert_type: CREDIT_BALANCE_THRESHOLD.to_string(),
        credit_balance_threshold: Some(proto::CreditBalanceThreshold {
            filters: vec![proto::AlertFilter {
                r#type: "customer".to_string(),
                customer: alert.customer_id,
                credit_grants: alert.scope.map(|scope| proto::AlertCreditGrants {
                    applicability_config: Some(proto::ApplicabilityConfig {
                        scope: Some(credit_scope(scope)),
                    }),
                }),
            }],
            lte: Some(proto::AlertThreshold {
                balance_type: "monetary".to_string(),
                monetary: Some(proto::MonetaryAmount {
                    currency: alert.currency.to_string(),
                    value: alert.threshold,
                }),
            }),
        }),
        livemode: alert.livemode,
        status: alert.status.as_str().to_string(),
        title: alert.title,
        created: alert.created,
        below: alert.below,
        id: alert.id,
    }
}

/// The request's fields, for the same [`CreateAlert::parse`] as REST.
fn alert_fields(message: proto::CreateAlertRequest) -> AlertFields {
    let mut fields = AlertFields {
        alert_type: Some(message.alert_type),
        title: Some(message.title),
        ..AlertFields::default()
    };
    if let Some(config) = message.credit_balance_threshold {
        fields.credit_balance_threshold = true;
        fields.filters = config
            .filters
            .into_iter()
            .map(|filter| {
                let scope = filter
                    .credit_grants
                    .and_then(|grants| grants.applicability_config)
                    .and_then(|config| config.scope);
                let has_scope = scope.is_some();
                let (scope_price_type, scope_prices) = scope_fields(scope);
                AlertFilterFields {
                    kind: Some(filter.r#type),
                    customer: Some(filter.customer),
                    scope_price_type,
                    scope_prices,
                    has_scope,
                }
            })
            .collect();
        if let Some(lte) = config.lte {
            fields.balance_type = Some(lte.balance_type);
            if let Some(monetary) = lte.monetary {
                fields.currency = Some(monetary.currency);
                fields.value = Some(monetary.value);
            }
        }
    }
    fields
}

#[tonic::async_trait]
impl AlertService for AlertApi {
    #[tracing::instrument(skip_all, err)]
    async fn create_alert(
        &self,
        request: Request<proto::CreateAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let ctx = context(&self.services, &request).await?;
        let command = CreateAlert::parse(alert_fields(request.into_inner()))?;
        let alert = self.services.create_alert(&ctx, command).await?;
        Ok(Response::new(to_message(alert)))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_alert(
        &self,
        request: Request<proto::GetAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let ctx = context(&self.services, &request).await?;
        let alert = self.services.get_alert(&ctx, &request.get_ref().id).await?;
        Ok(Response::new(to_message(alert)))
    }

    #[tracing::instrument(skip_all, err)]
    async fn list_alerts(
        &self,
        request: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let list = list_request(message.page)?;
        let filter = AlertFilter::parse(message.alert_type, message.customer)?;
        let page = self.services.list_alerts(&ctx, &filter, &list).await?;
        Ok(Response::new(proto::ListAlertsResponse {
            object: "list".to_string(),
            data: page.data.into_iter().map(to_message).collect(),
            has_more: page.has_more,
            url: "/v1/billing/alerts".to_string(),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn activate_alert(
        &self,
        request: Request<proto::ActivateAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let id = request.get_ref().id.clone();
        self.change(request, &id, AlertAction::Activate).await
    }

    #[tracing::instrument(skip_all, err)]
    async fn deactivate_alert(
        &self,
        request: Request<proto::DeactivateAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let id = request.get_ref().id.clone();
        self.change(request, &id, AlertAction::Deactivate).await
    }

    #[tracing::instrument(skip_all, err)]
    async fn archive_alert(
        &self,
        request: Request<proto::ArchiveAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let id = request.get_ref().id.clone();
        self.change(request, &id, AlertAction::Archive).await
    }
}
