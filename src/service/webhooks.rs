//! Webhook endpoints: create, read, update, list, delete. Deliveries are queued by
//! [`super::events::EventBatch::write`] and sent by [`super::webhook_delivery`].

use super::{RequestContext, Services, idempotent_write, page_after_cursor};
use crate::domain::ids::{IdKind, new_id};
use crate::domain::pagination::{ListRequest, Page};
use crate::domain::webhook::{
    CreateWebhookEndpoint, EndpointStatus, UpdateWebhookEndpoint, WebhookEndpoint, new_secret,
};
use crate::error::{Error, Result};
use crate::store;

impl Services {
    pub async fn create_webhook_endpoint(
        &self,
        ctx: &RequestContext,
        command: CreateWebhookEndpoint,
    ) -> Result<WebhookEndpoint> {
        let claim = self
            .idempotency
            .claim(ctx, "webhook_endpoint.create", &command)?;
        self.check_webhook_destination(&command.url).await?;
        idempotent_write!(self, ctx, &claim, |tx, now, events| {
            let endpoint = WebhookEndpoint {
                id: new_id(IdKind::WebhookEndpoint, ctx.tenant.livemode),
                livemode: ctx.tenant.livemode,
                created: now,
                url: command.url.clone(),
                enabled_events: command.enabled_events.clone(),
                status: EndpointStatus::Enabled,
                description: command.description.clone(),
                metadata: command.metadata.clone(),
                api_version: command.api_version.clone(),
                secret: new_secret(),
            };
            if let Some(hooks) = &self.tenant_hooks {
                hooks.forget_endpoints(&ctx.tenant);
            }
            store::webhooks::insert_endpoint(&tx, &ctx.tenant, &endpoint).await?;
            Ok(endpoint)
        })
    }

    pub async fn get_webhook_endpoint(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<WebhookEndpoint> {
        store::webhooks::find_endpoint(self.db.reader(), &ctx.tenant, id)
            .await?
            .ok_or_else(|| Error::resource_missing("webhook_endpoint", id, "id"))
    }

    pub async fn update_webhook_endpoint(
        &self,
        ctx: &RequestContext,
        id: &str,
        command: UpdateWebhookEndpoint,
    ) -> Result<WebhookEndpoint> {
        let claim = self
            .idempotency
            .claim(ctx, "webhook_endpoint.update", &(id, &command))?;
        if let Some(url) = &command.url {
            self.check_webhook_destination(url).await?;
        }
        idempotent_write!(self, ctx, &claim, |tx, _now, events| {
            let current = store::webhooks::lock_endpoint(&tx, &ctx.tenant, id)
                .await?
                .ok_or_else(|| Error::resource_missing("webhook_endpoint", id, "id"))?;
            let updated = command.apply_to(&current)?;
            if let Some(hooks) = &self.tenant_hooks {
                hooks.forget_endpoints(&ctx.tenant);
            }
            store::webhooks::update_endpoint(&tx, &ctx.tenant, &updated).await?;
            Ok(updated)
        })
    }

    pub async fn list_webhook_endpoints(
        &self,
        ctx: &RequestContext,
        request: &ListRequest,
    ) -> Result<Page<WebhookEndpoint>> {
        let (conn, tenant) = (self.db.reader(), &ctx.tenant);
        let listed = store::webhooks::list_endpoints(conn, tenant, request).await?;
        page_after_cursor(listed, request, "webhook_endpoint", |id| async move {
            store::webhooks::endpoint_exists(conn, tenant, &id).await
        })
        .await
    }

    /// Deletes an endpoint for good; its pending deliveries stop (they are marked `failed`).
    /// Like other deletes, no idempotency key: a second delete answers `resource_missing`.
    pub async fn delete_webhook_endpoint(&self, ctx: &RequestContext, id: &str) -> Result<String> {
        self.db
            .retrying(|| async {
                let tx = self.db.begin().await?;
                let outcome = store::webhooks::delete_endpoint(
                    &tx,
                    &ctx.tenant,
                    id,
                    super::webhook_delivery::now_ms(),
                )
                .await
                .and_then(|deleted| {
                    if deleted {
                        Ok(id.to_string())
                    } else {
                        Err(Error::resource_missing("webhook_endpoint", id, "id"))
                    }
                });
                store::settle(tx, outcome).await
            })
            .await
    }

    /// With the multi-tenant setting on, refuses a URL whose host is, or resolves to, an
    /// internal address (every address it resolves to is checked).
    async fn check_webhook_destination(&self, url: &str) -> Result<()> {
        if !self.refuse_private_webhook_addresses {
            return Ok(());
        }
        super::webhook_delivery::check_destination(url)
            .await
            .map_err(|why| Error::invalid_param("url", format!("Invalid URL: {why}")))
    }
}
