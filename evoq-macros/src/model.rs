//! The IR the expanders generate from. It keeps the syn nodes of the user's code so that every
//! error, and every generated trait-bound check, can point at the user's tokens.
//!
//! [`HandlerSpec`] and [`parse_method`] describe and parse one helper-attributed method in a
//! container-neutral way: `#[aggregate]` uses them for `#[handles]` and `#[apply]`,
//! `#[event_handler]` for its async `#[handles]`, and `#[saga]` and `#[projection]` can reuse
//! them with their own specs.

use quote::{ToTokens, format_ident};
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr,
    PathArguments, ReturnType, Type,
};

use crate::attr::{self, AggregateArgs, EventHandlerArgs, HelperArgs};
use crate::ctxt::Ctxt;
use crate::symbol::{self, Symbol};

/// Which receiver a helper method takes.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// `&self`
    Shared,
    /// `&mut self`
    Mut,
}

impl Receiver {
    fn spelling(self) -> &'static str {
        match self {
            Receiver::Shared => "&self",
            Receiver::Mut => "&mut self",
        }
    }
}

/// Whether a helper method may, must or must not be `async`.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(crate) enum Asyncness {
    /// A synchronous `fn`.
    Forbidden,
    /// An `async fn`.
    Required,
}

/// What a helper method returns.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(crate) enum Returns {
    /// `Result<Output, Error>`.
    Result,
    /// `Result<(), Error>`.
    UnitResult,
    /// Nothing (`()`).
    Nothing,
    /// A value the generated code checks (saga methods: `Commands`).
    Value,
}

/// How a method with one helper attribute must look.
pub(crate) struct HandlerSpec {
    /// The helper attribute (`handles`).
    pub(crate) attr: Symbol,
    /// The container attribute (`aggregate`).
    pub(crate) container: Symbol,
    /// What the message is called in messages ("command", "event").
    pub(crate) noun: &'static str,
    pub(crate) receiver: Receiver,
    /// Why the receiver must be the one it is (the end of a sentence).
    pub(crate) receiver_reason: &'static str,
    pub(crate) asyncness: Asyncness,
    /// Why it must (not) be async.
    pub(crate) async_reason: &'static str,
    pub(crate) returns: Returns,
    /// A second parameter taken by reference after the message.
    pub(crate) context: Context,
    /// A correct signature, shown in messages.
    pub(crate) example: &'static str,
    /// Whether the attribute names the correlation field (`by = field`, the saga helpers).
    pub(crate) correlated: bool,
    /// For a helper whose signature depends on the block (`#[handles]`): the other blocks'
    /// form, appended in parentheses to the messages where the two are confused (async,
    /// receiver). Empty otherwise.
    pub(crate) elsewhere: &'static str,
}

/// The parameter a handler takes by reference after the message, if any.
#[derive(Clone, Copy)]
pub(crate) enum Context {
    /// None: the message alone.
    None,
    /// Always, of the type named (`EventMeta`).
    Required(&'static str),
    /// When the handler wants it, of the type named (a decision's events, `[ModelEvent]`).
    Optional(&'static str),
}

/// "a" or "an" before `word`.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

impl HandlerSpec {
    /// "a `#[handles]` method of an `#[aggregate]` block", "an `#[apply]` method": a helper
    /// that more than one block takes names its block, whose signature it follows.
    pub(crate) fn method(&self) -> String {
        let name = self.attr.0;
        let method = format!("{} `#[{name}]` method", article(name));
        if self.attr == symbol::HANDLES {
            let container = self.container.0;
            format!("{method} of {} `#[{container}]` block", article(container))
        } else {
            method
        }
    }

    /// ` (the other form)`, or nothing.
    fn elsewhere(&self) -> String {
        if self.elsewhere.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.elsewhere)
        }
    }
}

/// A helper-attributed method, parsed and checked against its [`HandlerSpec`].
pub(crate) struct HandlerFn {
    /// The method's name.
    pub(crate) ident: Ident,
    /// Its `#[cfg]` attributes, copied onto every item generated for it.
    pub(crate) cfgs: Vec<Attribute>,
    /// The message type it takes (behind the reference).
    pub(crate) message: Type,
    /// The type named in the attribute (`#[handles(Deposit)]`), when it is not token-equal to
    /// `message`: the generated code checks that the two are the same type.
    pub(crate) explicit: Option<Type>,
    /// What it returns, for `Returns::Result` and `Returns::UnitResult`.
    pub(crate) output: Option<ResultType>,
    /// What it returns, for `Returns::Value` (a saga method's `Commands`): the generated code
    /// checks it at this type.
    pub(crate) value: Option<Type>,
    /// The type of the context parameter, behind the reference (`EventMeta`), when the spec
    /// has one.
    pub(crate) context: Option<Type>,
    /// The correlation field (`by = field`), for a spec that takes one.
    pub(crate) by: Option<Ident>,
}

/// What a `Result`-returning method (a `#[handles]` method) returns.
pub(crate) enum ResultType {
    /// `Result<Ok, Err>` written out: the generated checks are spanned at each type.
    Written { ok: Output, err: Box<Type> },
    /// Any other path type, such as a `Result` alias (`type Result<T> =
    /// std::result::Result<T, BookError>`): its `Ok` and `Err` types are reached through a check
    /// trait (`CommandResult`, `EventHandlerResult`), spanned at the type, which also rejects a
    /// type that is not a `Result`.
    Alias(Type),
}

/// How the check of a handler's error type is worded.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(crate) enum ErrorSpelling {
    /// A type of the user's (or one the macro cannot tell): "derive `thiserror::Error` for it".
    Own,
    /// A type that is never an error type, as written (`String`, `&str`, `Box<dyn Error>`, a
    /// number): "define an error type".
    NotAnErrorType,
}

impl ErrorSpelling {
    /// How `ty`, the written error type of a handler, is checked.
    pub(crate) fn of(ty: &Type) -> ErrorSpelling {
        const NOT_ERRORS: &[&str] = &[
            "String", "str", "Box", "Arc", "Rc", "Cow", "Value", "bool", "char", "u8", "u16",
            "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32",
            "f64",
        ];
        match ty {
            Type::Group(group) => ErrorSpelling::of(&group.elem),
            Type::Paren(paren) => ErrorSpelling::of(&paren.elem),
            Type::Reference(_) | Type::Tuple(_) | Type::Slice(_) | Type::Array(_) => {
                ErrorSpelling::NotAnErrorType
            }
            Type::Path(path) if path.qself.is_none() => {
                let segments = &path.path.segments;
                let first = segments.first().map(|segment| segment.ident.to_string());
                let last = segments.last().map(|segment| segment.ident.to_string());
                let foreign = matches!(first.as_deref(), Some("anyhow" | "eyre"));
                if foreign || last.is_some_and(|last| NOT_ERRORS.contains(&last.as_str())) {
                    ErrorSpelling::NotAnErrorType
                } else {
                    ErrorSpelling::Own
                }
            }
            _ => ErrorSpelling::Own,
        }
    }
}

/// The `Ok` type of a command handler: which events it returns.
pub(crate) enum Output {
    /// `()`: no event.
    Unit,
    /// One event.
    Single(Type),
    /// `Option<E>`: zero or one event.
    Option(Type),
    /// `Vec<E>`: any number of events of one type.
    Vec(Type),
    /// `(E1, E2, ...)`: one event of each type, in order.
    Tuple(Vec<Type>),
}

impl Output {
    pub(crate) fn classify(ty: &Type) -> Output {
        match ty {
            Type::Paren(paren) => Output::classify(&paren.elem),
            Type::Group(group) => Output::classify(&group.elem),
            Type::Tuple(tuple) if tuple.elems.is_empty() => Output::Unit,
            Type::Tuple(tuple) => Output::Tuple(tuple.elems.iter().cloned().collect()),
            _ => {
                if let Some(inner) = generic_of(ty, "Option") {
                    Output::Option(inner.clone())
                } else if let Some(inner) = generic_of(ty, "Vec") {
                    Output::Vec(inner.clone())
                } else {
                    Output::Single(ty.clone())
                }
            }
        }
    }
}

/// `T` when `ty` is the path `...::Name<T>` with exactly one type argument.
fn generic_of<'t>(ty: &'t Type, name: &str) -> Option<&'t Type> {
    generic_args(ty, name).and_then(|args| match args.as_slice() {
        [only] => Some(*only),
        _ => None,
    })
}

/// The type arguments of the path type `...::Name<...>`.
fn generic_args<'t>(ty: &'t Type, name: &str) -> Option<Vec<&'t Type>> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args
        .iter()
        .map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect()
}

/// Token equality, the best the macros can do without name resolution (the generated code
/// makes the type system check the rest).
pub(crate) fn same_tokens<A: ToTokens, B: ToTokens>(a: A, b: B) -> bool {
    a.into_token_stream().to_string() == b.into_token_stream().to_string()
}

/// The type as the user wrote it, for messages.
pub(crate) fn show<A: ToTokens>(tokens: A) -> String {
    let text = tokens.into_token_stream().to_string();
    // `proc_macro2` prints `& Foo < Bar >`; tighten the common cases.
    text.replace(" :: ", "::")
        .replace(":: ", "::")
        .replace("& ", "&")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
}

/// Parses `method`, which carries the helper attribute `attr`, against `spec`. Every mistake is
/// recorded in `cx`; `None` when the method is too broken to generate anything for it.
pub(crate) fn parse_method(
    cx: &Ctxt,
    spec: &HandlerSpec,
    item: &ImplItemFn,
    attr: &Attribute,
) -> Option<HandlerFn> {
    let args = HelperArgs::parse_helper(cx, attr, spec.attr, spec.noun, spec.correlated);
    let sig = &item.sig;
    let name = spec.attr;
    let example = spec.example;
    let method = spec.method();

    let elsewhere = spec.elsewhere();
    match (spec.asyncness, &sig.asyncness) {
        (Asyncness::Forbidden, Some(token)) => cx.error_spanned_by(
            token,
            format!(
                "{method} cannot be `async`: {}; write `{example}`{elsewhere}",
                spec.async_reason
            ),
        ),
        (Asyncness::Required, None) => cx.error_spanned_by(
            sig.fn_token,
            format!(
                "{method} must be `async`: {}; write `{example}`{elsewhere}",
                spec.async_reason
            ),
        ),
        _ => {}
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!(
                "{method} cannot be generic: it takes one concrete {} type; write `{example}`",
                spec.noun
            ),
        );
    } else if let Some(where_clause) = &sig.generics.where_clause {
        cx.error_spanned_by(
            where_clause,
            format!("{method} cannot have a `where` clause; write `{example}`"),
        );
    }

    let parens = sig.paren_token.span.join();
    let receiver = spec.receiver.spelling();
    let typed: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(arg) => Some(arg),
            FnArg::Receiver(_) => None,
        })
        .collect();
    match sig.inputs.first() {
        Some(FnArg::Receiver(found)) => {
            let kind = match (&found.reference, &found.mutability) {
                _ if found.colon_token.is_some() => None,
                (Some(_), Some(_)) => Some(Receiver::Mut),
                (Some(_), None) => Some(Receiver::Shared),
                (None, _) => None,
            };
            if kind != Some(spec.receiver) {
                let what = match kind {
                    Some(kind) => format!("`{}`", kind.spelling()),
                    None if found.colon_token.is_some() => format!("`{}`", show(found)),
                    None => "`self` by value".to_owned(),
                };
                cx.error_spanned_by(
                    found,
                    format!(
                        "{method} takes `{receiver}`, not {what}: {}; write `{example}`{elsewhere}",
                        spec.receiver_reason
                    ),
                );
            }
        }
        Some(FnArg::Typed(_)) => cx.error_at(
            parens,
            format!(
                "{method} takes `{receiver}` first: {}; write `{example}`",
                spec.receiver_reason
            ),
        ),
        None => {
            cx.error_at(
                parens,
                format!(
                    "{method} takes `{receiver}` and the {} it {name}, by reference; write `{example}`",
                    spec.noun
                ),
            );
            return None;
        }
    }

    let takes = match spec.context {
        Context::None => format!("one {}", spec.noun),
        Context::Required(context) => format!("one {} and its `&{context}`", spec.noun),
        Context::Optional(context) => {
            format!("one {} (and, if it wants them, `&{context}`)", spec.noun)
        }
    };
    let mut context = None;
    let message = match typed.as_slice() {
        [] => {
            cx.error_at(
                parens,
                format!(
                    "{method} takes the {} it {name} after `{receiver}`, by reference; write `{example}`",
                    spec.noun
                ),
            );
            None
        }
        [message, rest @ ..] => {
            let extra = match (spec.context, rest) {
                (Context::None, extra) => extra,
                (Context::Optional(_), []) => &[],
                (Context::Required(expected), []) => {
                    cx.error_at(
                        parens,
                        format!(
                            "{method} takes {takes} after `{receiver}`: add the `&{expected}` parameter; write `{example}`"
                        ),
                    );
                    &[]
                }
                (Context::Required(_) | Context::Optional(_), [second, extra @ ..]) => {
                    context = context_type(cx, spec, &second.ty);
                    extra
                }
            };
            if !extra.is_empty() {
                // A list of events on an aggregate's command handler: the form of a decision's.
                let decision_form = spec.attr == symbol::HANDLES
                    && spec.container == symbol::AGGREGATE
                    && matches!(&*extra[0].ty, Type::Reference(r) if matches!(&*r.elem, Type::Slice(_)));
                let hint = if decision_form {
                    " (a handler that receives the events its query selected as a list belongs to a `#[decision]` block; an aggregate decides on its own state)"
                } else {
                    ""
                };
                cx.error_spanned_by(
                    quote::quote!(#(#extra),*),
                    format!(
                        "{method} takes {takes} after `{receiver}`: remove this parameter{hint}; write `{example}`"
                    ),
                );
            }
            message_type(cx, spec, &message.ty)
        }
    };

    let mut value = None;
    let output = match (spec.returns, &sig.output) {
        (Returns::Result, ReturnType::Default) => {
            cx.error_at(
                parens,
                format!(
                    "{method} returns `Result<Events, Error>`: add the return type; write `{example}`"
                ),
            );
            None
        }
        (Returns::Result, ReturnType::Type(_, ty)) => result_type(cx, spec, ty),
        (Returns::UnitResult, ReturnType::Default) => {
            cx.error_at(
                parens,
                format!(
                    "{method} returns `Result<(), Error>`: add the return type; write `{example}`"
                ),
            );
            None
        }
        (Returns::UnitResult, ReturnType::Type(_, ty)) => unit_result_type(cx, spec, ty),
        (Returns::Value, ReturnType::Default) => {
            cx.error_at(
                parens,
                format!("{method} returns the commands to dispatch: add `-> Commands`; write `{example}`"),
            );
            None
        }
        (Returns::Value, ReturnType::Type(_, ty)) => {
            value = Some((**ty).clone());
            None
        }
        (Returns::Nothing, ReturnType::Default) => None,
        (Returns::Nothing, ReturnType::Type(_, ty)) => {
            if !matches!(&**ty, Type::Tuple(tuple) if tuple.elems.is_empty()) {
                cx.error_spanned_by(
                    ty,
                    format!(
                        "{method} returns nothing: it cannot fail, the {} already happened; remove `-> {}` and write `{example}`",
                        spec.noun,
                        show(ty)
                    ),
                );
            }
            None
        }
    };

    let message = message?;
    let explicit = args.message.filter(|named| !same_tokens(named, &message));
    Some(HandlerFn {
        ident: sig.ident.clone(),
        cfgs: attr::cfgs(&item.attrs),
        message,
        explicit,
        output,
        value,
        context,
        by: args.by,
    })
}

/// The `T` of the `&T` context parameter (checked against the spec's type by the generated
/// code, which alone can resolve the name).
fn context_type(cx: &Ctxt, spec: &HandlerSpec, ty: &Type) -> Option<Type> {
    let expected = match spec.context {
        Context::Required(expected) | Context::Optional(expected) => expected,
        Context::None => "",
    };
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => {
            Some((*reference.elem).clone())
        }
        Type::Paren(paren) => context_type(cx, spec, &paren.elem),
        _ => {
            cx.error_spanned_by(
                ty,
                format!(
                    "{} takes the `{expected}` by shared reference: write `&{expected}`; write `{}`",
                    spec.method(),
                    spec.example
                ),
            );
            None
        }
    }
}

/// `Result<(), Err>`, or an alias.
fn unit_result_type(cx: &Ctxt, spec: &HandlerSpec, ty: &Type) -> Option<ResultType> {
    let ty = ungroup_type(ty);
    if let Some(args) = generic_args(ty, "Result")
        && let [ok, err] = args.as_slice()
    {
        let ok = Output::classify(ok);
        if let Output::Unit = ok {
            return Some(ResultType::Written {
                ok,
                err: Box::new((*err).clone()),
            });
        }
        cx.error_spanned_by(
            args[0],
            format!(
                "{} returns `Result<(), Error>`: it reacts to the {} and returns nothing on success, not `{}`; write `{}`",
                spec.method(),
                spec.noun,
                show(args[0]),
                spec.example
            ),
        );
        return None;
    }
    if let Some(alias) = alias_type(ty) {
        return Some(ResultType::Alias(alias));
    }
    cx.error_spanned_by(
        ty,
        format!(
            "{} returns `Result<(), Error>` (written out or through an alias; the error: any `std::error::Error + Send + Sync + 'static`), not `{}`; write `{}`",
            spec.method(),
            show(ty),
            spec.example
        ),
    );
    None
}

/// The type inside invisible groups and parentheses: a `$ty:ty` fragment of a `macro_rules!`
/// macro reaches the attribute wrapped in an invisible group, and is still the type written.
pub(crate) fn ungroup_type(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => ungroup_type(&group.elem),
        Type::Paren(paren) => ungroup_type(&paren.elem),
        ty => ty,
    }
}

/// `ty` when it may name a `Result` through an alias (a path type; the generated code checks
/// the rest): what the macro cannot read is left to the type system.
fn alias_type(ty: &Type) -> Option<Type> {
    match ty {
        Type::Group(group) => alias_type(&group.elem),
        Type::Paren(paren) => alias_type(&paren.elem),
        Type::Path(_) => Some(ty.clone()),
        _ => None,
    }
}

/// The `T` of a `&T` parameter.
fn message_type(cx: &Ctxt, spec: &HandlerSpec, ty: &Type) -> Option<Type> {
    let example = spec.example;
    let method = spec.method();
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => {
            if let Type::ImplTrait(_) = &*reference.elem {
                cx.error_spanned_by(
                    &reference.elem,
                    format!(
                        "{method} takes one concrete {} type, not `impl Trait`; write `{example}`",
                        spec.noun
                    ),
                );
                return None;
            }
            Some((*reference.elem).clone())
        }
        Type::Reference(reference) => {
            cx.error_spanned_by(
                ty,
                format!(
                    "{method} takes the {} by shared reference: write `&{}`, not `&mut`",
                    spec.noun,
                    show(&reference.elem)
                ),
            );
            Some((*reference.elem).clone())
        }
        Type::Paren(paren) => message_type(cx, spec, &paren.elem),
        _ => {
            cx.error_spanned_by(
                ty,
                format!(
                    "{method} takes the {} by reference: write `&{}`",
                    spec.noun,
                    show(ty)
                ),
            );
            Some(ty.clone())
        }
    }
}

/// `Result<Ok, Err>`, or an alias.
fn result_type(cx: &Ctxt, spec: &HandlerSpec, ty: &Type) -> Option<ResultType> {
    let ty = ungroup_type(ty);
    if let Some(args) = generic_args(ty, "Result")
        && let [ok, err] = args.as_slice()
    {
        return Some(ResultType::Written {
            ok: Output::classify(ok),
            err: Box::new((*err).clone()),
        });
    }
    if let Some(alias) = alias_type(ty) {
        return Some(ResultType::Alias(alias));
    }
    cx.error_spanned_by(
        ty,
        format!(
            "{} returns `Result<Events, Error>`, written out or through an alias (the events: `()`, `E`, `Option<E>`, `Vec<E>` or `(E1, E2)`; the error: your domain error), not `{}`; write `{}`",
            spec.method(),
            show(ty),
            spec.example
        ),
    );
    None
}

/// An `#[aggregate]` block.
pub(crate) struct AggregateDef {
    /// The state type (`impl State { ... }`).
    pub(crate) self_ty: Type,
    /// The block's `impl` keyword (the checks that name the aggregate point at `impl State`).
    pub(crate) impl_token: syn::Token![impl],
    /// `Aggregate::NAME`.
    pub(crate) name: LitStr,
    /// `Aggregate::SNAPSHOT_EVERY` (`None`: the app default).
    pub(crate) snapshot_every: Option<u64>,
    /// `Aggregate::IDLE_TIMEOUT` in milliseconds.
    pub(crate) idle_timeout: Option<u64>,
    /// `Aggregate::HIBERNATE_AFTER` in milliseconds (`Some(None)`: never).
    pub(crate) hibernate_after: Option<Option<u64>>,
    /// `Aggregate::lifespan()`.
    pub(crate) lifespan: Option<Type>,
    /// The generated event enum.
    pub(crate) event_enum: Ident,
    /// The `#[handles]` methods.
    pub(crate) handlers: Vec<HandlerFn>,
    /// The `#[apply]` methods, with their enum variant.
    pub(crate) applies: Vec<ApplyFn>,
    /// For a `#[decision]` block: its budget and each command's query.
    pub(crate) decision: Option<crate::decision::DecisionSpec>,
}

/// An `#[apply]` method and the variant of the event enum it gives.
pub(crate) struct ApplyFn {
    pub(crate) method: HandlerFn,
    pub(crate) variant: Ident,
}

impl ApplyFn {
    /// The event type.
    pub(crate) fn event(&self) -> &Type {
        &self.method.message
    }
}

/// The ident an applied event type gives its variant: the last segment of its path.
pub(crate) fn variant_ident(ty: &Type) -> Option<Ident> {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|last| last.ident.clone())
        }
        Type::Paren(paren) => variant_ident(&paren.elem),
        Type::Group(group) => variant_ident(&group.elem),
        _ => None,
    }
}

/// `#[handles]` in an `#[aggregate]` block.
pub(crate) const AGGREGATE_HANDLES: HandlerSpec = HandlerSpec {
    attr: symbol::HANDLES,
    container: symbol::AGGREGATE,
    noun: "command",
    receiver: Receiver::Shared,
    receiver_reason: "a command handler reads the state and decides which events happen; the state changes only in `#[apply]` methods",
    asyncness: Asyncness::Forbidden,
    async_reason: "an aggregate decides from its own state alone; do I/O before dispatching the command, or in an event handler",
    returns: Returns::Result,
    context: Context::None,
    example: "fn name(&self, command: &SomeCommand) -> Result<SomeEvent, SomeError>",
    correlated: false,
    elsewhere: "`async` `#[handles]` methods that take `&mut self`, an event and `&EventMeta` belong to `#[event_handler]` and `#[projection]` blocks",
};

/// `#[apply]` in an `#[aggregate]` block.
pub(crate) const AGGREGATE_APPLY: HandlerSpec = HandlerSpec {
    attr: symbol::APPLY,
    container: symbol::AGGREGATE,
    noun: "event",
    receiver: Receiver::Mut,
    receiver_reason: "an `#[apply]` method evolves the state by one event",
    asyncness: Asyncness::Forbidden,
    async_reason: "applying an event only changes the state in memory",
    returns: Returns::Nothing,
    context: Context::None,
    example: "fn name(&mut self, event: &SomeEvent)",
    correlated: false,
    elsewhere: "",
};

/// `#[handles]` in a `#[decision]` block: an aggregate's, which may also take the context's
/// events.
pub(crate) const DECISION_HANDLES: HandlerSpec = HandlerSpec {
    container: symbol::DECISION,
    receiver_reason: "a decision's handler reads the model folded from the context's events and decides which events happen",
    async_reason: "a decision decides from the events its query selected alone; do I/O before dispatching the command, or in an event handler",
    context: Context::Optional("[ModelEvent]"),
    example: "fn name(&self, command: &SomeCommand) -> Result<SomeEvent, SomeError>` (or, to receive the events the query selected, `fn name(&self, command: &SomeCommand, context: &[ModelEvent]) -> Result<SomeEvent, SomeError>",
    ..AGGREGATE_HANDLES
};

/// The helper attributes an `#[aggregate]` block knows.
pub(crate) const AGGREGATE_HELPERS: [&HandlerSpec; 2] = [&AGGREGATE_HANDLES, &AGGREGATE_APPLY];

/// The helper attributes a `#[decision]` block knows.
pub(crate) const DECISION_HELPERS: [&HandlerSpec; 2] = [&DECISION_HANDLES, &AGGREGATE_APPLY];

impl AggregateDef {
    /// Parses the `#[aggregate(...)]` arguments and the block, and strips the helper attributes
    /// from `item`. `None` when the block's header is unusable (a trait impl, generics, a state
    /// type that is not a named type).
    pub(crate) fn from_ast(
        cx: &Ctxt,
        args: proc_macro2::TokenStream,
        item: &mut ItemImpl,
    ) -> Option<AggregateDef> {
        let args = AggregateArgs::parse(cx, args);
        AggregateDef::from_parts(cx, args, &AGGREGATE_HELPERS, item)
    }

    /// The block's model from arguments already parsed (`#[decision]` parses its own), its
    /// methods read with `helpers` (an aggregate's, or a decision's).
    pub(crate) fn from_parts(
        cx: &Ctxt,
        args: AggregateArgs,
        helpers: &[&'static HandlerSpec],
        item: &mut ItemImpl,
    ) -> Option<AggregateDef> {
        let mut handlers = Vec::new();
        let mut applies = Vec::new();
        let methods = parse_helpers(
            cx,
            item,
            helpers,
            "a method either handles a command or applies an event, not both",
        );
        for (spec, parsed) in methods {
            if spec.attr == symbol::HANDLES {
                handlers.push(parsed);
            } else if let Some(variant) = variant_ident(&parsed.message) {
                applies.push(ApplyFn {
                    method: parsed,
                    variant,
                });
            } else {
                cx.error_spanned_by(
                    &parsed.message,
                    format!(
                        "an `#[apply]` method takes a named event type (a struct or enum with `#[derive(Event)]`), not `{}`",
                        show(&parsed.message)
                    ),
                );
            }
        }

        let self_ty = header(cx, item, &AGGREGATE_CONTAINER)?;
        let state = variant_ident(&self_ty)?;
        let event_enum = args
            .event_enum
            .unwrap_or_else(|| format_ident!("{}Event", state.unraw(), span = state.span()));
        let name = args
            .name
            .unwrap_or_else(|| LitStr::new(&state.unraw().to_string(), state.span()));
        Some(AggregateDef {
            self_ty,
            impl_token: item.impl_token,
            name,
            snapshot_every: args.snapshot_every.map(|(_, every)| every),
            idle_timeout: args.idle_timeout,
            hibernate_after: args.hibernate_after,
            lifespan: args.lifespan,
            event_enum,
            handlers,
            applies,
            decision: None,
        })
    }
}

/// Every method of `item` marked with one of `helpers`, parsed against its spec, with the
/// helper attributes stripped from the block. A helper on something else than a method, a
/// method with two helpers (`both` says why not) and every mistake `parse_method` finds are
/// recorded in `cx`.
pub(crate) fn parse_helpers(
    cx: &Ctxt,
    item: &mut ItemImpl,
    helpers: &[&'static HandlerSpec],
    both: &str,
) -> Vec<(&'static HandlerSpec, HandlerFn)> {
    let mut methods = Vec::new();
    for impl_item in &mut item.items {
        let found = take_helpers(impl_item, helpers);
        let ImplItem::Fn(method) = impl_item else {
            for (spec, attr) in &found {
                cx.error_spanned_by(
                    attr,
                    format!(
                        "`#[{}]` goes on a method of the `#[{}]` block, like `{}`",
                        spec.attr, spec.container, spec.example
                    ),
                );
            }
            continue;
        };
        let mut found = found.into_iter();
        let Some((spec, attr)) = found.next() else {
            continue;
        };
        for (other, again) in found {
            let message = if other.attr == spec.attr {
                format!(
                    "duplicate `#[{}]` on `{}`: write it once",
                    other.attr, method.sig.ident
                )
            } else {
                format!(
                    "`{}` is already marked `#[{}]`: {both}; move this to a method of its own",
                    method.sig.ident, spec.attr
                )
            };
            cx.error_spanned_by(again, message);
        }
        if let Some(parsed) = parse_method(cx, spec, method, &attr) {
            methods.push((spec, parsed));
        }
    }
    methods
}

/// Removes the helper attributes from an item of the block; returns them with their spec.
fn take_helpers(
    item: &mut ImplItem,
    specs: &[&'static HandlerSpec],
) -> Vec<(&'static HandlerSpec, Attribute)> {
    let attrs = match item {
        ImplItem::Fn(item) => &mut item.attrs,
        ImplItem::Const(item) => &mut item.attrs,
        ImplItem::Type(item) => &mut item.attrs,
        ImplItem::Macro(item) => &mut item.attrs,
        _ => return Vec::new(),
    };
    let mut helpers = Vec::new();
    attrs.retain(
        |attr| match specs.iter().find(|spec| attr::is_helper(attr, spec.attr)) {
            Some(spec) => {
                helpers.push((*spec, attr.clone()));
                false
            }
            None => true,
        },
    );
    helpers
}

/// How a container attribute's block is described in messages.
pub(crate) struct Container {
    pub(crate) attr: Symbol,
    /// "an aggregate"
    pub(crate) noun: &'static str,
    /// "state type"
    pub(crate) subject: &'static str,
    /// "its name and events are fixed"
    pub(crate) fixed: &'static str,
    pub(crate) example: &'static str,
}

const AGGREGATE_CONTAINER: Container = Container {
    attr: symbol::AGGREGATE,
    noun: "an aggregate",
    subject: "state type",
    fixed: "its name and events are fixed",
    example: "`#[aggregate] impl BankAccount { ... }`",
};

const EVENT_HANDLER_CONTAINER: Container = Container {
    attr: symbol::EVENT_HANDLER,
    noun: "an event handler",
    subject: "handler type",
    fixed: "its name and event types are fixed",
    example: "`#[event_handler(name = \"notifier\")] impl Notifier { ... }`",
};

/// The self type of an inherent, non-generic impl block.
pub(crate) fn header(cx: &Ctxt, item: &ItemImpl, container: &Container) -> Option<Type> {
    let Container {
        attr,
        noun,
        subject,
        fixed,
        example,
    } = container;
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            format!(
                "`#[{attr}]` goes on the inherent impl block of the {subject}, not on a trait impl: write {example}"
            ),
        );
        return None;
    }
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(
            &item.generics,
            format!("{noun} cannot be generic: {fixed}; remove the generic parameters and write {example}"),
        );
        return None;
    }
    let ty = &*item.self_ty;
    if let Type::Path(path) = ty
        && path.qself.is_none()
        && let Some(last) = path.path.segments.last()
    {
        if !last.arguments.is_none() {
            cx.error_spanned_by(
                &last.arguments,
                format!("{noun} cannot be generic: {fixed}; use a {subject} without generic arguments and write {example}"),
            );
            return None;
        }
        return Some(ty.clone());
    }
    cx.error_spanned_by(
        ty,
        format!(
            "`#[{attr}]` needs a named {subject} (a struct), not `{}`: write {example}",
            show(ty)
        ),
    );
    None
}

/// `#[handles]` in an `#[event_handler]` block.
pub(crate) const EVENT_HANDLER_HANDLES: HandlerSpec = HandlerSpec {
    attr: symbol::HANDLES,
    container: symbol::EVENT_HANDLER,
    noun: "event",
    receiver: Receiver::Mut,
    receiver_reason: "the handler gets one event at a time and may keep state between them",
    asyncness: Asyncness::Required,
    async_reason: "an event handler reacts to events with I/O (send an email, call a service, update another store)",
    returns: Returns::UnitResult,
    context: Context::Required("EventMeta"),
    example: "async fn name(&mut self, event: &SomeEvent, meta: &EventMeta) -> Result<(), SomeError>",
    correlated: false,
    elsewhere: "a sync `#[handles]` method that takes `&self` and a command belongs to an `#[aggregate]` block",
};

/// `#[handles]` in a `#[projection]` block.
pub(crate) const PROJECTION_HANDLES: HandlerSpec = HandlerSpec {
    attr: symbol::HANDLES,
    container: symbol::PROJECTION,
    noun: "event",
    receiver: Receiver::Mut,
    receiver_reason: "the projection gets one event at a time and updates its read model",
    asyncness: Asyncness::Required,
    async_reason: "a projection writes to its read model, which may be a database",
    returns: Returns::UnitResult,
    context: Context::Required("EventMeta"),
    example: "async fn name(&mut self, event: &SomeEvent, meta: &EventMeta) -> Result<(), ProjectionError>",
    correlated: false,
    elsewhere: "a sync `#[handles]` method that takes `&self` and a command belongs to an `#[aggregate]` block",
};

const PROJECTION_CONTAINER: Container = Container {
    attr: symbol::PROJECTION,
    noun: "a projection",
    subject: "projection type",
    fixed: "its name and event types are fixed",
    example: "`#[projection(name = \"account_summary\", read_model = summaries)] impl AccountSummary { ... }`",
};

/// What differs between an `#[event_handler]` and a `#[projection]` block: both are parsed
/// into an [`EventHandlerDef`] and generate an `EventHandler` impl.
pub(crate) struct Flavor {
    /// The container attribute.
    pub(crate) attr: Symbol,
    /// Its valid arguments.
    pub(crate) keys: &'static [attr::Key],
    handles: &'static HandlerSpec,
    container: &'static Container,
}

/// `#[event_handler]`.
pub(crate) const EVENT_HANDLER_FLAVOR: Flavor = Flavor {
    attr: symbol::EVENT_HANDLER,
    keys: attr::EVENT_HANDLER_KEYS,
    handles: &EVENT_HANDLER_HANDLES,
    container: &EVENT_HANDLER_CONTAINER,
};

/// `#[projection]`.
pub(crate) const PROJECTION_FLAVOR: Flavor = Flavor {
    attr: symbol::PROJECTION,
    keys: attr::PROJECTION_KEYS,
    handles: &PROJECTION_HANDLES,
    container: &PROJECTION_CONTAINER,
};

/// An `#[event_handler]` block (or a `#[projection]` block).
pub(crate) struct EventHandlerDef {
    /// The handler type (`impl Notifier { ... }`).
    pub(crate) self_ty: Type,
    /// `EventHandler::NAME`; `None` when the attribute lacks it (an error).
    pub(crate) name: Option<LitStr>,
    /// The other attribute arguments.
    pub(crate) args: EventHandlerArgs,
    /// The `#[handles]` methods.
    pub(crate) handlers: Vec<HandlerFn>,
}

impl EventHandlerDef {
    /// Parses the `#[event_handler(...)]` arguments and the block, and strips the helper
    /// attributes from `item`. `None` when the block's header is unusable.
    pub(crate) fn from_ast(
        cx: &Ctxt,
        flavor: &Flavor,
        args: proc_macro2::TokenStream,
        item: &mut ItemImpl,
    ) -> Option<EventHandlerDef> {
        let mut args = EventHandlerArgs::parse(cx, args, flavor.attr, flavor.keys);
        let name = args.name.take();
        let handlers = parse_helpers(
            cx,
            item,
            &[flavor.handles],
            "a method handles one event type",
        )
        .into_iter()
        .map(|(_, handler)| handler)
        .collect();
        let self_ty = header(cx, item, flavor.container)?;
        Some(EventHandlerDef {
            self_ty,
            name,
            args,
            handlers,
        })
    }
}
