//! A gateway node: the messaging services, this node's connections, its inbox on the bus, and
//! the HTTP routes (server API and WebSocket gateway).

use std::sync::Arc;

use axum::Router;
use sea_orm::DatabaseConnection;
use starling_core::config::GatewayConfig;

use crate::api::RateLimits;
use crate::bus::Bus;
use crate::directory::Directory;
use crate::hub::Hub;
use crate::registry::Registry;
use crate::service::Messaging;

/// A running node.
pub struct Node {
    /// This node's id in its cell.
    pub node_id: String,
    /// Gateway settings.
    pub gateway: GatewayConfig,
    /// The messaging services.
    pub messaging: Messaging,
    /// Connections open on this node.
    pub hub: Arc<Hub>,
    /// Per-key request rate limits of the server API.
    pub rate_limits: RateLimits,
}

impl Node {
    /// Migrates the database, takes this node's inbox on the bus and starts pushing its
    /// deliveries to local connections.
    pub async fn start(
        db: DatabaseConnection,
        directory: Arc<Directory>,
        bus: Arc<dyn Bus>,
        registry: Arc<dyn Registry>,
        gateway: GatewayConfig,
    ) -> anyhow::Result<Arc<Node>> {
        crate::store::migrate(&db).await?;
        let hub = Arc::new(Hub::new());
        let mut inbox = bus.subscribe(&gateway.node_id).await?;
        let h = hub.clone();
        tokio::spawn(async move {
            while let Some(d) = inbox.recv().await {
                let n = h.push(&d.app_id, &d.users, &d.frame);
                metrics::counter!("starling_ws_frames_pushed_total").increment(n as u64);
            }
        });
        Ok(Arc::new(Node {
            node_id: gateway.node_id.clone(),
            gateway,
            messaging: Messaging {
                db,
                registry,
                bus,
                directory,
            },
            hub,
            rate_limits: RateLimits::default(),
        }))
    }

    /// The node's HTTP routes: `/v1/connect` and the server API under `/v1`.
    pub fn router(self: &Arc<Self>) -> Router {
        crate::api::router(self.clone())
    }

    /// Closes every connection (code 1001) so clients reconnect elsewhere.
    pub fn shutdown(&self) {
        self.hub.close_all();
    }
}
