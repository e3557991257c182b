//! `creditd.v1.EventService`: the Events API (list, get) and the stream (`event_stream`).

use tonic::{Request, Response, Status};

use super::context;
use super::convert::{created_fields, list_request};
use super::proto::{self, event_service_server::EventService};
use crate::domain::event::{Event, EventFilter};
use crate::service::Services;

pub struct EventApi {
    services: Services,
}

impl EventApi {
    pub fn new(services: Services) -> Self {
        EventApi { services }
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchEventsStream = super::event_stream::WatchStream;

    #[tracing::instrument(skip_all, err)]
    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let list = list_request(message.page)?;
        let filter = EventFilter::parse(
            created_fields(message.created),
            message.r#type,
            Some(message.types),
            message.delivery_success,
        )?;
        let page = self.services.list_events(&ctx, &filter, &list).await?;
        Ok(Response::new(proto::ListEventsResponse {
            object: "list".to_string(),
            data: page.data.into_iter().map(event_message).collect(),
            has_more: page.has_more,
            url: "/v1/events".to_string(),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_event(
        &self,
        request: Request<proto::GetEventRequest>,
    ) -> Result<Response<proto::Event>, Status> {
        let ctx = context(&self.services, &request).await?;
        let event = self.services.get_event(&ctx, &request.get_ref().id).await?;
        Ok(Response::new(event_message(event)))
    }

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        super::event_stream::watch(&self.services, request).await
    }
}

/// An event as the `creditd.v1.Event` message: `data_json` is the stored `data` text as is.
pub fn event_message(event: Event) -> proto::Event {
    proto::Event {
        id: event.id,
        object: "event".to_string(),
        r#type: event.kind,
        created: event.created,
        livemode: event.livemode,
        api_version: event.api_version,
        pending_webhooks: event.pending_webhooks,
        request_id: event.request.id,
        request_idempotency_key: event.request.idempotency_key,
        customer: event.customer_id,
        data_json: event.data,
        sequence: event.sequence.unwrap_or(0),
    }
}
