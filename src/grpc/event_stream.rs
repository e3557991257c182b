//! `WatchEvents`: the resumable event stream (see [`crate::service::event_stream`] for its
//! guarantees, back-pressure and limits).

use std::pin::Pin;

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::context;
use super::proto::{self, watch_events_request::Resume};
use crate::domain::event::Event;
use crate::domain::text::optional_id;
use crate::error::Error;
use crate::service::Services;
use crate::service::event_stream::{WatchFilter, WatchFrom};

/// The stream `WatchEvents` answers with.
pub type WatchStream =
    Pin<Box<dyn futures::Stream<Item = Result<proto::WatchEventsResponse, Status>> + Send>>;

pub(super) async fn watch(
    services: &Services,
    request: Request<proto::WatchEventsRequest>,
) -> Result<Response<WatchStream>, Status> {
    let ctx = context(services, &request).await?;
    let message = request.into_inner();
    let from = match message.resume {
        Some(Resume::AfterEvent(id)) => match optional_id(Some(id), "after_event")? {
            Some(id) => WatchFrom::AfterEvent(id),
            None => {
                return Err(Error::invalid_param(
                    "after_event",
                    "after_event must name an event (evt_…); set from_now to start at the head.",
                )
                .into());
            }
        },
        Some(Resume::FromNow(_)) | None => WatchFrom::Now,
    };
    let filter = WatchFilter::parse(message.types, optional_id(message.customer, "customer")?)?;
    let events = services.watch_events(&ctx, from, filter).await?;
    let stream = events.map(|item| {
        item.map(|event| proto::WatchEventsResponse {
            event: Some(to_proto(event)),
        })
        .map_err(Status::from)
    });
    Ok(Response::new(Box::pin(stream)))
}

/// An event as `creditd.v1.Event`.
fn to_proto(event: Event) -> proto::Event {
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
