//! `creditd.v1.WebhookEndpointService`.

use tonic::{Request, Response, Status};

use super::context;
use super::convert::{list_request, metadata_map, metadata_update};
use super::proto::{self, webhook_endpoint_service_server::WebhookEndpointService};
use crate::domain::webhook::{
    CreateWebhookEndpoint, UpdateWebhookEndpoint, WebhookEndpoint, WebhookEndpointFields,
};
use crate::service::Services;

pub struct WebhookEndpointApi {
    services: Services,
}

impl WebhookEndpointApi {
    pub fn new(services: Services) -> Self {
        WebhookEndpointApi { services }
    }
}

/// The endpoint as a message, with its secret only when `with_secret` (the create response).
fn to_message(endpoint: WebhookEndpoint, with_secret: bool) -> proto::WebhookEndpoint {
    proto::WebhookEndpoint {
        object: "webhook_endpoint".to_string(),
        api_version: endpoint.api_version,
        application: None,
        created: endpoint.created,
        description: endpoint.description,
        enabled_events: endpoint.enabled_events,
        livemode: endpoint.livemode,
        metadata: metadata_map(endpoint.metadata),
        secret: with_secret.then_some(endpoint.secret),
        status: endpoint.status.as_str().to_string(),
        url: endpoint.url,
        id: endpoint.id,
    }
}

#[tonic::async_trait]
impl WebhookEndpointService for WebhookEndpointApi {
    #[tracing::instrument(skip_all, err)]
    async fn create_webhook_endpoint(
        &self,
        request: Request<proto::CreateWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let fields = WebhookEndpointFields {
            url: Some(message.url),
            enabled_events: Some(message.enabled_events),
            description: message.description,
            metadata: metadata_update(false, message.metadata)?,
            api_version: message.api_version,
            connect: message.connect,
            disabled: None,
        };
        let command = CreateWebhookEndpoint::parse(fields)?;
        let endpoint = self.services.create_webhook_endpoint(&ctx, command).await?;
        Ok(Response::new(to_message(endpoint, true)))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_webhook_endpoint(
        &self,
        request: Request<proto::GetWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        let ctx = context(&self.services, &request).await?;
        let endpoint = self
            .services
            .get_webhook_endpoint(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(to_message(endpoint, false)))
    }

    #[tracing::instrument(skip_all, err)]
    async fn update_webhook_endpoint(
        &self,
        request: Request<proto::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let fields = WebhookEndpointFields {
            url: message.url,
            enabled_events: (!message.enabled_events.is_empty()).then_some(message.enabled_events),
            description: message.description,
            metadata: metadata_update(message.clear_metadata, message.metadata)?,
            api_version: None,
            connect: None,
            disabled: message.disabled,
        };
        let command = UpdateWebhookEndpoint::parse(fields)?;
        let endpoint = self
            .services
            .update_webhook_endpoint(&ctx, &message.id, command)
            .await?;
        Ok(Response::new(to_message(endpoint, false)))
    }

    #[tracing::instrument(skip_all, err)]
    async fn list_webhook_endpoints(
        &self,
        request: Request<proto::ListWebhookEndpointsRequest>,
    ) -> Result<Response<proto::ListWebhookEndpointsResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let list = list_request(message.page)?;
        let page = self.services.list_webhook_endpoints(&ctx, &list).await?;
        Ok(Response::new(proto::ListWebhookEndpointsResponse {
            object: "list".to_string(),
            data: page
                .data
                .into_iter()
                .map(|endpoint| to_message(endpoint, false))
                .collect(),
            has_more: page.has_more,
            url: "/v1/webhook_endpoints".to_string(),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn delete_webhook_endpoint(
        &self,
        request: Request<proto::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<proto::DeletedWebhookEndpoint>, Status> {
        let ctx = context(&self.services, &request).await?;
        let id = self
            .services
            .delete_webhook_endpoint(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(proto::DeletedWebhookEndpoint {
            id,
            object: "webhook_endpoint".to_string(),
            deleted: true,
        }))
    }
}
