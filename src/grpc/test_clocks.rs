//! `creditd.v1.TestClockService`.

use tonic::{Request, Response, Status};

use super::context;
use super::convert::list_request;
use super::proto::{self, test_clock_service_server::TestClockService};
use crate::domain::test_clock::{CreateTestClock, parse_advance_target};
use crate::service::Services;

pub struct TestClockApi {
    services: Services,
}

impl TestClockApi {
    pub fn new(services: Services) -> Self {
        TestClockApi { services }
    }
}

#[tonic::async_trait]
impl TestClockService for TestClockApi {
    #[tracing::instrument(skip_all, err)]
    async fn create_test_clock(
        &self,
        request: Request<proto::CreateTestClockRequest>,
    ) -> Result<Response<proto::TestClock>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        // proto3 has no absent integer: 0 (1970) is taken as "missing".
        let frozen_time = Some(message.frozen_time).filter(|at| *at != 0);
        let command = CreateTestClock::parse(frozen_time, message.name, message.customer)?;
        let clock = self.services.create_test_clock(&ctx, command).await?;
        Ok(Response::new(clock.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_test_clock(
        &self,
        request: Request<proto::GetTestClockRequest>,
    ) -> Result<Response<proto::TestClock>, Status> {
        let ctx = context(&self.services, &request).await?;
        let clock = self
            .services
            .get_test_clock(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(clock.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn list_test_clocks(
        &self,
        request: Request<proto::ListTestClocksRequest>,
    ) -> Result<Response<proto::ListTestClocksResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let list = list_request(request.into_inner().page)?;
        let page = self.services.list_test_clocks(&ctx, &list).await?;
        Ok(Response::new(proto::ListTestClocksResponse {
            object: "list".to_string(),
            data: page.data.into_iter().map(Into::into).collect(),
            has_more: page.has_more,
            url: "/v1/test_helpers/test_clocks".to_string(),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn delete_test_clock(
        &self,
        request: Request<proto::DeleteTestClockRequest>,
    ) -> Result<Response<proto::DeletedTestClock>, Status> {
        let ctx = context(&self.services, &request).await?;
        let id = self
            .services
            .delete_test_clock(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(proto::DeletedTestClock {
            id,
            object: "test_helpers.test_clock".to_string(),
            deleted: true,
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn advance_test_clock(
        &self,
        request: Request<proto::AdvanceTestClockRequest>,
    ) -> Result<Response<proto::TestClock>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let frozen_time = parse_advance_target(Some(message.frozen_time))?;
        let clock = self
            .services
            .advance_test_clock(&ctx, &message.id, frozen_time)
            .await?;
        Ok(Response::new(clock.into()))
    }
}
