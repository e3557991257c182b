//! `creditd.v1.CustomerBalanceTransactionService`.

use tonic::{Request, Response, Status};

use super::context;
use super::convert::{created_fields, list_request, metadata_update};
use super::proto::{
    self, customer_balance_transaction_service_server::CustomerBalanceTransactionService,
};
use crate::domain::customer_balance_transaction::{
    CreateBalanceTransaction, CustomerBalanceTransactionFilter, TransactionFields,
    UpdateBalanceTransaction,
};
use crate::service::Services;

pub struct CustomerBalanceTransactionApi {
    services: Services,
}

impl CustomerBalanceTransactionApi {
    pub fn new(services: Services) -> Self {
        CustomerBalanceTransactionApi { services }
    }
}

#[tonic::async_trait]
impl CustomerBalanceTransactionService for CustomerBalanceTransactionApi {
    #[tracing::instrument(skip_all, err)]
    async fn create_customer_balance_transaction(
        &self,
        request: Request<proto::CreateCustomerBalanceTransactionRequest>,
    ) -> Result<Response<proto::CustomerBalanceTransaction>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let fields = TransactionFields {
            // proto3 has no absent integer: 0 is "missing" here, as it is invalid anyway.
            amount: Some(message.amount).filter(|amount| *amount != 0),
            currency: Some(message.currency).filter(|currency| !currency.is_empty()),
            description: message.description,
            metadata: metadata_update(false, message.metadata)?,
        };
        let command = CreateBalanceTransaction::parse(message.customer, fields)?;
        let transaction = self
            .services
            .create_customer_balance_transaction(&ctx, command)
            .await?;
        Ok(Response::new(transaction.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn get_customer_balance_transaction(
        &self,
        request: Request<proto::GetCustomerBalanceTransactionRequest>,
    ) -> Result<Response<proto::CustomerBalanceTransaction>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.get_ref();
        let transaction = self
            .services
            .get_customer_balance_transaction(&ctx, &message.customer, &message.id)
            .await?;
        Ok(Response::new(transaction.into()))
    }

    #[tracing::instrument(skip_all, err)]
    async fn list_customer_balance_transactions(
        &self,
        request: Request<proto::ListCustomerBalanceTransactionsRequest>,
    ) -> Result<Response<proto::ListCustomerBalanceTransactionsResponse>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let list = list_request(message.page)?;
        let filter = CustomerBalanceTransactionFilter::parse(
            created_fields(message.created),
            message.invoice,
        )?;
        let page = self
            .services
            .list_customer_balance_transactions(&ctx, &message.customer, &filter, &list)
            .await?;
        Ok(Response::new(
            proto::ListCustomerBalanceTransactionsResponse {
                object: "list".to_string(),
                data: page.data.into_iter().map(Into::into).collect(),
                has_more: page.has_more,
                url: format!("/v1/customers/{}/balance_transactions", message.customer),
            },
        ))
    }

    #[tracing::instrument(skip_all, err)]
    async fn update_customer_balance_transaction(
        &self,
        request: Request<proto::UpdateCustomerBalanceTransactionRequest>,
    ) -> Result<Response<proto::CustomerBalanceTransaction>, Status> {
        let ctx = context(&self.services, &request).await?;
        let message = request.into_inner();
        let command = UpdateBalanceTransaction::parse(
            message.description,
            metadata_update(message.clear_metadata, message.metadata)?,
        )?;
        let transaction = self
            .services
            .update_customer_balance_transaction(&ctx, &message.customer, &message.id, command)
            .await?;
        Ok(Response::new(transaction.into()))
    }
}
