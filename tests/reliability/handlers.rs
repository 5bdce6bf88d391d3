//! Handlers of the fault-test service: every handled event leaves one row
//! in `effects`, written in the inbox transaction. Items listed in
//! `failing_items` fail (retryably) on every attempt below `fail_until`.

use rel_events as events;

#[derive(Default)]
pub struct App {}

impl events::Handlers for App {
    async fn item_created(
        &self,
        event: events::ItemCreated,
        ctx: &events::Context<'_>,
    ) -> Result<(), events::HandlerError> {
        let failing = ctx
            .tx
            .query_opt(
                "SELECT fail_until FROM failing_items WHERE item_id = $1",
                &[&event.item_id],
            )
            .await?;
        let attempt = ctx.attempt as i32;
        if failing.is_some_and(|row| attempt < row.get::<_, i32>(0)) {
            return Err(events::HandlerError::retryable(format!(
                "{} is failing (attempt {})",
                event.item_id, ctx.attempt
            )));
        }
        let instance = std::env::var("INSTANCE").unwrap_or_default();
        ctx.tx
            .execute(
                "INSERT INTO effects (event_id, item_id, n, attempt, instance) VALUES ($1, $2, $3, $4, $5)",
                &[&ctx.envelope.id, &event.item_id, &event.n, &attempt, &instance],
            )
            .await?;
        Ok(())
    }
}
