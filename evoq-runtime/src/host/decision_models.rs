//! The cached models of decisions that ask for it (`#[decision(cached)]`): per decision type
//! and boundary (the query, and whether its handler takes the events as a list), the model
//! folded so far and the highest position it
//! includes, like a live aggregate. A command catches the model up with the events after that
//! position instead of reading its whole context; commands of one boundary take its model one
//! at a time. A model idle for longer than its decision's idle timeout (scaled by the memory
//! monitor's factor) is dropped by the sweep.

use std::any::{Any, TypeId};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::aggregate::Aggregate;
use crate::store::EventQuery;

/// A decision's model and how far it has read.
pub(crate) struct Model<A: Aggregate> {
    /// The state folded from every selected event up to `highest`.
    pub(crate) state: A,
    /// The same events as a list, oldest first, for a handler that takes the context's
    /// events (empty for one that takes the model alone).
    pub(crate) context: Vec<A::Event>,
    /// The highest position the model includes (0: none).
    pub(crate) highest: u64,
}

impl<A: Aggregate> Default for Model<A> {
    fn default() -> Self {
        Model {
            state: A::default(),
            context: Vec::new(),
            highest: 0,
        }
    }
}

/// One boundary's slot: its model while one is kept, and when it was last used.
struct Slot {
    model: Option<Box<dyn Any + Send>>,
    used: Instant,
    idle: Duration,
}

/// The slot of one boundary, taken by one command at a time.
pub(crate) struct HeldModel(OwnedMutexGuard<Slot>);

impl HeldModel {
    /// The kept model, or a new one.
    pub(crate) fn take<A: Aggregate>(&mut self) -> Model<A> {
        self.0
            .model
            .take()
            .and_then(|model| model.downcast::<Model<A>>().ok())
            .map_or_else(Model::default, |model| *model)
    }

    /// Keeps `model` for the boundary's next command.
    pub(crate) fn keep<A: Aggregate>(&mut self, model: Model<A>) {
        self.0.model = Some(Box::new(model));
        self.0.used = Instant::now();
    }
}

/// Every cached model of a runtime.
#[derive(Default)]
pub(crate) struct DecisionModels {
    slots: DashMap<Boundary, Arc<Mutex<Slot>>>,
}

/// What a model is kept for: the decision type, its query (compared as a query, never as its
/// text: two queries that print alike, a tag holding `, tag` say, are two boundaries), and
/// whether the handler takes the events as a list (a model kept without the list has none).
type Boundary = (TypeId, EventQuery, bool);

impl DecisionModels {
    /// The slot of decision `A`'s boundary of `query` (`listed`: for a handler that takes the
    /// events as a list), once the commands before have left it.
    pub(crate) async fn take<A: Aggregate>(
        &self,
        query: &EventQuery,
        listed: bool,
        idle: Duration,
    ) -> HeldModel {
        let slot = Arc::clone(
            self.slots
                .entry((TypeId::of::<A>(), query.clone(), listed))
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Slot {
                        model: None,
                        used: Instant::now(),
                        idle,
                    }))
                })
                .value(),
        );
        HeldModel(slot.lock_owned().await)
    }

    /// Drops the models idle longer than their idle timeout times `factor` (the memory
    /// monitor's); a slot a command holds is left alone.
    pub(crate) fn sweep(&self, now: Instant, factor: f64) {
        self.slots.retain(|_, slot| match slot.try_lock() {
            Ok(slot) => now.saturating_duration_since(slot.used) < slot.idle.mul_f64(factor),
            Err(_) => true,
        });
    }

    /// How many boundaries keep a model: a slot whose model was dropped (it failed to read
    /// or apply an event) keeps none; one a command holds counts (its model is in use).
    pub(crate) fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.try_lock().map_or(true, |slot| slot.model.is_some()))
            .count()
    }

    /// Drops every model.
    pub(crate) fn clear(&self) {
        self.slots.clear();
    }
}
