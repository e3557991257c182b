//! `WatchEvents`: the resumable event stream.

use std::pin::Pin;

use tonic::{Request, Response, Status};

use super::proto;
use crate::service::Services;

/// The stream `WatchEvents` answers with.
pub type WatchStream =
    Pin<Box<dyn futures::Stream<Item = Result<proto::WatchEventsResponse, Status>> + Send>>;

pub(super) async fn watch(
    services: &Services,
    request: Request<proto::WatchEventsRequest>,
) -> Result<Response<WatchStream>, Status> {
    let _ = (services, request);
    Err(Status::unimplemented("WatchEvents is being built"))
}
