//! Procedural macros of evoq, a CQRS / event-sourcing framework.
//!
//! Use them through the facade crate (`use evoq::prelude::*;`), which also holds the runtime
//! items the generated code names (through `::evoq::__private`, which is not public API).
//!
//! Every macro parses its input into a small model (`model.rs`), validates it (`check.rs`,
//! collecting every independent mistake in a `Ctxt`), and generates code from
//! the model. On an error it emits the `compile_error!`s, the user's item unchanged and stub
//! impls (`fallback.rs`), so there is one error per mistake and no cascade.

mod aggregate;
mod attr;
mod check;
mod command;
mod ctxt;
mod decision;
mod event;
mod event_handler;
mod fallback;
mod item;
mod model;
mod paths;
mod projection;
mod saga;
mod symbol;
mod upcaster;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `evoq::Event`: a stable wire name and a schema version for an event type.
///
/// ```ignore
/// #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// #[event(name = "MoneyDeposited", version = 2)] // both optional: the type name, 1
/// pub struct MoneyDeposited { pub account: String, pub amount: u64 }
/// ```
///
/// The type must not be generic (its wire name names one concrete type), and must implement
/// `Serialize`, `Deserialize`, `Clone`, `Debug`, `Send` and `Sync` (derive the first four): each
/// one missing is an error at the type's name.
#[proc_macro_derive(Event, attributes(event, tag))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event::expand(&input).into()
}

/// Derives `evoq::Command`: a command's name and the id of the aggregate it targets.
///
/// ```ignore
/// #[derive(Command, Debug, Clone)]
/// #[command(name = "Deposit")] // optional: the type name
/// pub struct Deposit { #[aggregate_id] pub account: String, pub amount: u64 }
/// ```
///
/// A command is a struct with exactly one field marked `#[aggregate_id]`, whose type
/// implements `Display` (`String`, integers, `Uuid`, ...).
#[proc_macro_derive(Command, attributes(command, aggregate_id))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    command::expand(&input).into()
}

/// Makes the state type of an `impl` block an aggregate.
///
/// ```ignore
/// #[aggregate(name = "BankAccount", snapshot_every = 100, event_enum = BankAccountEvent)]
/// impl BankAccount {
///     #[handles]
///     fn deposit(&self, cmd: &Deposit) -> Result<MoneyDeposited, BankError> { /* ... */ }
///     #[apply]
///     fn deposited(&mut self, e: &MoneyDeposited) { self.balance += e.amount; }
/// }
/// ```
///
/// Every argument is optional: `name` defaults to the state type's name, `snapshot_every` to
/// 100 and `event_enum` to `<State>Event`. The name begins every stream id of the aggregate
/// (`<name>-<id>`), so it may not be empty nor contain `-` (a compile error), and renaming the
/// type changes it unless `name` keeps the old one.
///
/// - `#[handles]` (or `#[handles(Command)]`) methods take `&self` and `&Command` and return
///   `Result<Events, Error>` (written out, or through an alias such as `type Result<T> =
///   std::result::Result<T, BankError>`), where `Events` is `()`, an event `E`, `Option<E>`,
///   `Vec<E>`, a tuple `(E1, E2, ...)`, or the generated event enum, and `Error` implements
///   `std::error::Error`. Each gives the command its compile-time route to this aggregate.
/// - `#[apply]` methods take `&mut self` and `&Event` and return nothing. Each gives the
///   generated event enum one variant, named after the event type.
///
/// Generated: `pub enum <State>Event` (`Clone`, `Debug`, `From` each event), its `EventSet`
/// impl, `Aggregate for State`, and `Route for Command` for every handled command. Every event
/// a handler can return must be applied; no two applied events may share a wire name.
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, input: TokenStream) -> TokenStream {
    aggregate::expand(args.into(), input.into()).into()
}

/// Makes the type of an `impl` block an event handler: it subscribes to the event types its
/// `#[handles]` methods take (never to streams) and runs in a task of its own.
///
/// ```ignore
/// #[event_handler(name = "notifier", strong, max_attempts = 3, retry = fixed("1s"), on_error = skip)]
/// impl Notifier {
///     #[handles]
///     async fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), NotifyError> {
///         /* ... */
///     }
/// }
/// ```
///
/// - `name = "..."` (required): keys the handler's checkpoint and dead letters in the store.
/// - `strong`: `Consistency::Strong` dispatches wait for this handler.
/// - `retry = immediate | fixed("1s") | exponential("100ms", "10s") | exponential_jitter("100ms", "10s")`,
///   `max_attempts = N` (attempts in all), `on_error = dead_letter | skip | stop`: the error
///   policy, over the runtime's defaults (6 attempts, exponential with jitter from 100 ms,
///   dead-letter); the builder's `HandlerOptions` take precedence.
///
/// Each `#[handles]` (or `#[handles(Event)]`) method is `async`, takes `&mut self`, one event by
/// reference and `&EventMeta`, returns `Result<(), Error>` (written out or through an alias)
/// with `Error: std::error::Error + Send + Sync + 'static`, and returns a `Send` future. One
/// method per event type. (A `#[handles]` method of an `#[aggregate]` block is the other
/// signature: sync, `&self` and a command.)
///
/// Generated: `impl EventHandler` with `NAME`, `EVENT_TYPES` (the subscription list, from the
/// signatures) and a `handle` that decodes each stored event by its type name and calls the
/// method; an event that does not decode is a failure that follows the error policy.
#[proc_macro_attribute]
pub fn event_handler(args: TokenStream, input: TokenStream) -> TokenStream {
    event_handler::expand(args.into(), input.into()).into()
}

/// Makes the type of an `impl` block a projection: an event handler whose `#[handles]` methods
/// update a read model, with a checkpoint saved after every event, and that can be rebuilt.
///
/// ```ignore
/// #[projection(name = "account_summary", read_model = summaries)]
/// impl AccountSummary {
///     #[handles]
///     async fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), ProjectionError> {
///         self.summaries.put(&e.account, &Summary { balance: e.initial_balance })?;
///         Ok(())
///     }
/// }
/// ```
///
/// - `name = "..."` (required): keys the projection's checkpoint and dead letters.
/// - `read_model = field` (required): the field holding the read model (any `ReadModel`, such
///   as an `InMemoryReadModel`); `Evoq::rebuild` clears it.
/// - `strong`, `retry`, `max_attempts`, `on_error`: as for `#[event_handler]`.
///
/// The methods are those of `#[event_handler]`. Generated: `EventHandler` (as
/// `#[event_handler]`) and `Projection`.
#[proc_macro_attribute]
pub fn projection(args: TokenStream, input: TokenStream) -> TokenStream {
    event_handler::expand_flavor(&model::PROJECTION_FLAVOR, args.into(), input.into()).into()
}

/// Marks a free function as the upcaster of an event type from one schema version to the next.
///
/// ```ignore
/// #[upcaster(MoneyDeposited, from = 1)]
/// fn deposited_v1_to_v2(mut data: serde_json::Value) -> Result<serde_json::Value, UpcastError> {
///     data["currency"] = "EUR".into();
///     Ok(data)
/// }
/// ```
///
/// `from = N` reads the data stored at version `N` and returns version `N + 1`;
/// `renamed_from = "OldName"` also reads the events stored under the event's old wire name.
/// The function is kept as written (call it in a unit test). Generated: the step as an impl of
/// a hidden trait for the event type, which `#[derive(Event)]` lists in `Event::UPCASTERS`: an
/// event at version 3 needs upcasters from 1 and 2, two upcasters from one version conflict,
/// and `from` must be below the event's version, all checked at compile time.
#[proc_macro_attribute]
pub fn upcaster(args: TokenStream, input: TokenStream) -> TokenStream {
    upcaster::expand(args.into(), input.into()).into()
}

/// Makes a saga of the impl block of its state type:
/// `#[saga(name = "order_fulfillment")] impl OrderFulfillment { ... }` with
/// `#[starts(by = field)]`, `#[continues(by = field)]`, `#[stops(by = field)]` methods taking one
/// event and returning `Commands`, and at most one `#[compensates]` method taking a
/// `&FailedCommand`. See `evoq::guide::sagas`.
///
/// A new instance is the state's `Default`, or, when the block has one, what its `#[init]`
/// method returns for the instance id (the correlation value):
///
/// ```ignore
/// #[derive(Serialize, Deserialize)] // no `Default` needed
/// struct OrderFulfillment { order_id: String, paid: bool }
///
/// #[saga(name = "order_fulfillment")]
/// impl OrderFulfillment {
///     #[init]
///     fn init(instance: &str) -> Self {
///         OrderFulfillment { order_id: instance.to_owned(), paid: false }
///     }
///
///     #[starts(by = order_id)]
///     fn placed(&mut self, _: &OrderPlaced) -> Commands {
///         commands![ChargePayment { order_id: self.order_id.clone() }]
///     }
/// }
/// ```
///
/// The `#[init]` method (at most one) takes the id as `&str` or `String`, no `self`, and returns
/// `Self`; it is not `async`. A state with neither `Default` nor `#[init]` does not compile.
#[proc_macro_attribute]
pub fn saga(args: TokenStream, input: TokenStream) -> TokenStream {
    saga::expand(args.into(), input.into()).into()
}

/// Makes the type of an `impl` block a decision: a model whose commands are decided on events
/// selected across streams by tags and types, and appended only if none of those changed since
/// they were read (see `evoq::guide::decisions`).
///
/// ```ignore
/// #[derive(Default)]
/// struct Lending { loans: HashMap<String, u32>, lent: HashSet<String> }
///
/// #[decision(name = "Lending", attempts = 5)]
/// impl Lending {
///     #[handles]
///     #[query(all_of(
///         types(BookLent, BookReturned),
///         any_of(tag("member", &command.member), tag("book", &command.book)),
///     ))]
///     fn lend(&self, command: &LendBook) -> Result<BookLent, LendError> { /* ... */ }
///
///     #[apply]
///     fn lent(&mut self, event: &BookLent) { /* ... */ }
/// }
/// ```
///
/// - `name = "..."`: the decision's name (default: the type name), the prefix of the stream its
///   events are appended to (`<name>-<the command's #[aggregate_id]>`).
/// - `attempts = N`: how many times a command is decided before the dispatch fails with
///   `Error::DecisionConflict` (default: the dispatch's retry limit plus one).
/// - `cached`: keep the model of each boundary between commands (each command then reads only
///   what is new); `idle_timeout = "10m"`: how long an unused model is kept.
/// - `#[handles]` methods are an aggregate's (`&self`, `&Command`, `Result<Events, Error>`), each
///   with a `#[query(...)]`: `any_of(..)` / `or(..)`, `all_of(..)` / `and(..)`, `types(Event,
///   ..)`, `tag("prefix", value)` or `tag(whole)`, where `command` is the command.
/// - `#[apply]` methods fold the queried events into a fresh model for every command.
///
/// Generated: what `#[aggregate]` generates (the event enum, `Aggregate`, `Route` per command),
/// with each `Route` carrying its query. A query naming a type that is not an `Event`, a model
/// applying an event no query selects, and a command also handled by an aggregate do not
/// compile.
#[proc_macro_attribute]
pub fn decision(args: TokenStream, input: TokenStream) -> TokenStream {
    decision::expand(args.into(), input.into()).into()
}

/// Marks the query of a command in a `#[decision]` block. Used anywhere else, it is an error.
#[proc_macro_attribute]
pub fn query(_args: TokenStream, input: TokenStream) -> TokenStream {
    let message = format!(
        "`#[{}(...)]` names the events a command of a `#[decision]` block is decided on and means nothing on its own: put `#[decision]` on the `impl` block that holds this method",
        symbol::QUERY
    );
    misplaced_helper(&message, input.into()).into()
}

/// Marks the method of a `#[saga]` block that an event *starts* an instance with.
#[proc_macro_attribute]
pub fn starts(_args: TokenStream, input: TokenStream) -> TokenStream {
    saga_helper(symbol::STARTS, input)
}

/// Marks the method of a `#[saga]` block that an event *continues* an instance with.
#[proc_macro_attribute]
pub fn continues(_args: TokenStream, input: TokenStream) -> TokenStream {
    saga_helper(symbol::CONTINUES, input)
}

/// Marks the method of a `#[saga]` block that an event *stops* an instance with.
#[proc_macro_attribute]
pub fn stops(_args: TokenStream, input: TokenStream) -> TokenStream {
    saga_helper(symbol::STOPS, input)
}

/// Marks the method of a `#[saga]` block that compensates a failed command.
#[proc_macro_attribute]
pub fn compensates(_args: TokenStream, input: TokenStream) -> TokenStream {
    saga_helper(symbol::COMPENSATES, input)
}

/// Marks the method of a `#[saga]` block that makes a new instance from its id:
/// `#[init] fn init(instance: &str) -> Self`.
#[proc_macro_attribute]
pub fn init(_args: TokenStream, input: TokenStream) -> TokenStream {
    saga_helper(symbol::INIT, input)
}

fn saga_helper(name: symbol::Symbol, input: TokenStream) -> TokenStream {
    let message = format!(
        "`#[{name}]` marks a method of a `#[saga]` block and means nothing on its own: put `#[saga(name = \"...\")]` on the `impl` block that holds this method"
    );
    misplaced_helper(&message, input.into()).into()
}

/// Marks a command handler in an `#[aggregate]` block, or an event handler method in an
/// `#[event_handler]` or `#[projection]` block. Used anywhere else, it is an error.
#[proc_macro_attribute]
pub fn handles(_args: TokenStream, input: TokenStream) -> TokenStream {
    let message = format!(
        "`#[{}]` marks a command handler of an `#[{}]` block or an event handler method of an `#[{}]` or `#[{}]` block and means nothing on its own: put `#[{}]`, `#[{}(name = \"...\")]` or `#[{}(name = \"...\", read_model = field)]` on the `impl` block that holds this method",
        symbol::HANDLES,
        symbol::AGGREGATE,
        symbol::EVENT_HANDLER,
        symbol::PROJECTION,
        symbol::AGGREGATE,
        symbol::EVENT_HANDLER,
        symbol::PROJECTION,
    );
    misplaced_helper(&message, input.into()).into()
}

/// Marks an event applier in an `#[aggregate]` block. Used anywhere else, it is an error.
#[proc_macro_attribute]
pub fn apply(_args: TokenStream, input: TokenStream) -> TokenStream {
    let message = format!(
        "`#[{}]` marks an event applier of an `#[aggregate]` block and means nothing on its own: put `#[aggregate]` on the `impl` block that holds this method",
        symbol::APPLY
    );
    misplaced_helper(&message, input.into()).into()
}

/// A helper attribute that is not inside the block that gives it meaning: one sentence on the
/// attribute, and the item unchanged.
fn misplaced_helper(message: &str, input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    // The attribute's location with the hygiene of the user's item: the error reads as the
    // user's, without a "this error originates in the attribute macro" note.
    let span = input
        .clone()
        .into_iter()
        .next()
        .map_or_else(proc_macro2::Span::call_site, |first| {
            proc_macro2::Span::call_site().resolved_at(first.span())
        });
    let mut tokens = syn::Error::new(span, message).to_compile_error();
    tokens.extend(quote::quote!(#[allow(dead_code)]));
    tokens.extend(input);
    tokens
}
