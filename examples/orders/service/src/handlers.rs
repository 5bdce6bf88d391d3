//! Your event handlers: one method per consumed event.
//!
//! This file is yours: evgen wrote it once and never touches it again.
//! When the catalog gains a consumed event, the compiler names the method
//! to add here.

use orders_events as events;

/// State shared by every handler: database pools, clients, caches.
#[derive(Default)]
pub struct App {}

impl events::Handlers for App {
    async fn payment_processed(
        &self,
        event: events::PaymentProcessed,
        ctx: &events::Context<'_>,
    ) -> Result<(), events::HandlerError> {
        tracing::info!(id = %ctx.envelope.id, kind = %ctx.envelope.kind, ?event, "handled");
        Ok(())
    }
}
