//! Webhook endpoints and the pre-send hook, over [`crate::webhook`].

use async_graphql::{Context, ID, Object, Result};

use crate::webhook::{
    CreateWebhookEndpointInput, PreSendHookInput, PreSendHookSet, UpdateWebhookEndpointInput,
    WebhookEndpoint, WebhookEndpointCreated, WebhookSecretRotated,
};

/// Webhook endpoints and the pre-send hook.
#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Adds a webhook endpoint to an app (developers and up); its signing secret is in the
    /// answer and nowhere else. At most 20 endpoints per app.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        input: CreateWebhookEndpointInput,
    ) -> Result<WebhookEndpointCreated> {
        Ok(crate::webhook::create(ctx, &tenant_id, &app_id, input).await?)
    }

    /// Changes a webhook endpoint (developers and up).
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        endpoint_id: ID,
        input: UpdateWebhookEndpointInput,
    ) -> Result<WebhookEndpoint> {
        Ok(crate::webhook::update(ctx, &tenant_id, &app_id, &endpoint_id, input).await?)
    }

    /// Removes a webhook endpoint; deliveries still due to it are dropped (developers and up).
    async fn delete_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        endpoint_id: ID,
    ) -> Result<bool> {
        Ok(crate::webhook::delete(ctx, &tenant_id, &app_id, &endpoint_id).await?)
    }

    /// Gives an endpoint a new signing secret, shown once; the current one keeps signing beside
    /// it for `overlapSeconds` (default 86400, at most 2592000) (developers and up).
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        endpoint_id: ID,
        overlap_seconds: Option<u32>,
    ) -> Result<WebhookSecretRotated> {
        Ok(
            crate::webhook::rotate_secret(ctx, &tenant_id, &app_id, &endpoint_id, overlap_seconds)
                .await?,
        )
    }

    /// Sets or changes the app's pre-send hook (developers and up). Its signing secret is in the
    /// answer when this call creates the hook, and only then.
    async fn set_pre_send_hook(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        input: PreSendHookInput,
    ) -> Result<PreSendHookSet> {
        Ok(crate::webhook::set_pre_send_hook(ctx, &tenant_id, &app_id, input).await?)
    }

    /// Removes the app's pre-send hook: messages are stored without asking anyone (developers
    /// and up).
    async fn delete_pre_send_hook(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
    ) -> Result<bool> {
        Ok(crate::webhook::delete_pre_send_hook(ctx, &tenant_id, &app_id).await?)
    }
}
