//! `creditd.v1.EventService`: the Events API (list, get) and the stream (`event_stream`).

use tonic::{Request, Response, Status};

use super::proto::{self, event_service_server::EventService};
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
        let _ = (&self.services, request);
        Err(Status::unimplemented("ListEvents is being built"))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_event(
        &self,
        request: Request<proto::GetEventRequest>,
    ) -> Result<Response<proto::Event>, Status> {
        let _ = (&self.services, request);
        Err(Status::unimplemented("GetEvent is being built"))
    }

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        super::event_stream::watch(&self.services, request).await
    }
}
