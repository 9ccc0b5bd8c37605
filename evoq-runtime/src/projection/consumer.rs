//! A projection as a consumer of the subscription engine: telemetry, the read model's hooks.

use std::sync::Arc;
use std::time::Instant;

use super::definition::{Projection, ReadModelError};
use crate::delivery::consumer::{BindFuture, Consumer, EventMeta, HandlerFuture, HookFuture};
use crate::delivery::policy::HandlerOptions;
use crate::delivery::subscribers::Registration;
use crate::error::Error;
use crate::handler;
use crate::util::panic::{CatchPanic, panic_message};

/// A projection as the subscription engine sees it (the telemetry, the read model's hooks),
/// with the name it runs under.
struct Projected<P> {
    projection: P,
    name: Arc<str>,
}

impl<P: Projection> Consumer for Projected<P> {
    /// The read model and the checkpoint advance together, after every event.
    const CHECKPOINT_EVERY_EVENT: bool = true;

    fn consume<'a>(&'a mut self, event: &'a EventMeta) -> HandlerFuture<'a> {
        let delivery = self.projection.handle(event);
        if !tracing::enabled!(tracing::Level::WARN) {
            return delivery;
        }
        let name = &*self.name;
        Box::pin(async move {
            let started = Instant::now();
            tracing::debug!(
                name: "evoq.projection.event",
                stage = "start",
                projection = name,
                event_type = event.event_type(),
                position = event.global_position(),
                "evoq.projection.event",
            );
            let result = delivery.await;
            let duration_us = started.elapsed().as_micros() as u64;
            match &result {
                Ok(()) => tracing::debug!(
                    name: "evoq.projection.event",
                    stage = "stop",
                    projection = name,
                    event_type = event.event_type(),
                    position = event.global_position(),
                    duration_us,
                    "evoq.projection.event",
                ),
                Err(failure) => tracing::warn!(
                    name: "evoq.projection.exception",
                    stage = "exception",
                    projection = name,
                    event_type = event.event_type(),
                    position = event.global_position(),
                    error = %failure,
                    duration_us,
                    "evoq.projection.exception",
                ),
            }
            result
        })
    }

    /// Binds the read model to the projection's name: a refusal (the model belongs to another
    /// projection) fails the start; any other failure, or a panic, is logged, and the read model
    /// binds at its first use.
    fn bind<'a>(&'a mut self, name: &'a str) -> BindFuture<'a> {
        Box::pin(async move {
            let bound = CatchPanic::new(self.projection.read_model().bind(name))
                .await
                .unwrap_or_else(|panic| {
                    Err(ReadModelError::Backend(format!(
                        "it panicked: {}",
                        panic_message(&*panic)
                    )))
                });
            match bound {
                Ok(()) => Ok(()),
                Err(refused @ ReadModelError::Refused { .. }) => Err(Error::Config {
                    key: "projection".to_owned(),
                    reason: format!("projection `{name}` cannot start: {refused}"),
                }),
                Err(error) => {
                    tracing::warn!(
                        name: "evoq.projection.read_model",
                        stage = "exception",
                        projection = name,
                        error = %error,
                        "the read model could not be bound to its projection at start; it is bound at its first use",
                    );
                    Ok(())
                }
            }
        })
    }

    fn commit<'a>(&'a mut self, name: &'a str, position: u64) -> HookFuture<'a, bool> {
        Box::pin(async move {
            let kept = self
                .projection
                .read_model()
                .commit(name, position)
                .await
                .map_err(|error| error.to_string())?;
            tracing::debug!(
                name: "evoq.projection.checkpoint",
                projection = name,
                position,
                kept_by_read_model = kept,
                "evoq.projection.checkpoint",
            );
            Ok(kept)
        })
    }

    fn checkpoint<'a>(&'a mut self, name: &'a str) -> HookFuture<'a, Option<u64>> {
        Box::pin(async move {
            self.projection
                .read_model()
                .checkpoint(name)
                .await
                .map_err(|error| error.to_string())
        })
    }

    fn rewind<'a>(&'a mut self, name: &'a str, position: u64) -> HookFuture<'a, ()> {
        Box::pin(async move {
            self.projection
                .read_model()
                .rewind(name, position)
                .await
                .map_err(|error| error.to_string())
        })
    }

    fn has_finished_changes(&self) -> bool {
        self.projection.read_model().has_finished_changes()
    }

    fn roll_back(&mut self) -> HookFuture<'_, ()> {
        Box::pin(async move {
            self.projection
                .read_model()
                .roll_back()
                .await
                .map_err(|error| error.to_string())
        })
    }

    fn reset(&mut self) -> HookFuture<'_, ()> {
        Box::pin(async move {
            self.projection
                .read_model()
                .clear()
                .await
                .map_err(|error| error.to_string())
        })
    }
}

/// The engine's registration of the projection `projection`, with the builder's `options`.
pub(crate) fn registration<P: Projection>(projection: P, options: HandlerOptions) -> Registration {
    let name = Arc::from(options.name_over(&P::OPTIONS, P::NAME));
    let keeps_checkpoint = projection.read_model().keeps_checkpoint();
    handler::registration::<P, _>(Projected { projection, name }, options)
        .keeping_checkpoint(keeps_checkpoint)
}
