//! `creditd.v1.CustomerService`.

use tonic::{Request, Response, Status};

use super::context;
use super::convert::{created_fields, list_request, metadata_update};
use super::proto::{self, customer_service_server::CustomerService};
use crate::domain::customer::{CreateCustomer, CustomerFields, CustomerFilter, UpdateCustomer};
use crate::service::Services;

pub struct CustomerApi {
    services: Services,
}

impl CustomerApi {
    pub fn new(services: Services) -> Self {
        CustomerApi { services }
    }
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    #[tracing::instrument(skip_all, err)]
    async fn create_customer(
        &self,
        request: Request<proto::CreateCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let fields = CustomerFields {
            name: message.name,
            email: message.email,
            description: message.description,
            phone: message.phone,
            metadata: metadata_update(false, message.metadata)?,
            balance: message.balance,
        };
        let command = CreateCustomer::parse(fields, message.test_clock)?;
        let customer = self.services.create_customer(&ctx, command).await?;
        Ok(Response::new(customer.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_customer(
        &self,
        request: Request<proto::GetCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        let ctx = context(&self.services, &request).await?;
        let customer = self
            .services
            .get_customer(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(customer.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn list_customers(
        &self,
        request: Request<proto::ListCustomersRequest>,
    ) -> Result<Response<proto::ListCustomersResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let list = list_request(message.page)?;
        let filter = CustomerFilter::parse(
            created_fields(message.created),
            message.email,
            message.test_clock,
        )?;
        let page = self.services.list_customers(&ctx, &filter, &list).await?;
        Ok(Response::new(proto::ListCustomersResponse {
            object: "list".to_string(),
            data: page.data.into_iter().map(Into::into).collect(),
            has_more: page.has_more,
            url: "/v1/customers".to_string(),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn delete_customer(
        &self,
        request: Request<proto::DeleteCustomerRequest>,
    ) -> Result<Response<proto::DeletedCustomer>, Status> {
        let ctx = context(&self.services, &request).await?;
        let id = self
            .services
            .delete_customer(&ctx, &request.get_ref().id)
            .await?;
        Ok(Response::new(proto::DeletedCustomer {
            id,
            object: "customer".to_string(),
            deleted: true,
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn update_customer(
        &self,
        request: Request<proto::UpdateCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let fields = CustomerFields {
            name: message.name,
            email: message.email,
            description: message.description,
            phone: message.phone,
            metadata: metadata_update(message.clear_metadata, message.metadata)?,
            balance: message.balance,
        };
        let command = UpdateCustomer::parse(fields)?;
        let customer = self
            .services
            .update_customer(&ctx, &message.id, command)
            .await?;
        Ok(Response::new(customer.into()))
    }
}
