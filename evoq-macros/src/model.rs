//! The IR the expanders generate from. It keeps the syn nodes of the user's code so that every
//! error, and every generated trait-bound check, can point at the user's tokens.
//!
//! [`HandlerSpec`] and [`parse_method`] describe and parse one helper-attributed method in a
//! container-neutral way: `#[aggregate]` uses them for `#[handles]` and `#[apply]`, and
//! `#[event_handler]`, `#[saga]` and `#[projection]` can reuse them with their own specs.

use quote::{ToTokens, format_ident};
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr,
    PathArguments, ReturnType, Type,
};

use crate::attr::{self, AggregateArgs, HelperArgs};
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
}

/// What a helper method returns.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(crate) enum Returns {
    /// `Result<Output, Error>`.
    Result,
    /// Nothing (`()`).
    Nothing,
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
    /// A correct signature, shown in messages.
    pub(crate) example: &'static str,
}

impl HandlerSpec {
    /// "a `#[handles]` method", "an `#[apply]` method".
    pub(crate) fn method(&self) -> String {
        let name = self.attr.0;
        let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} `#[{name}]` method")
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
    /// What it returns, for `Returns::Result`.
    pub(crate) output: Option<ResultType>,
}

/// `Result<Ok, Err>` as written in a handler's signature.
pub(crate) struct ResultType {
    pub(crate) ok: Output,
    pub(crate) err: Type,
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
    let args = HelperArgs::from_attr(cx, attr, spec.attr, spec.noun);
    let sig = &item.sig;
    let name = spec.attr;
    let example = spec.example;
    let method = spec.method();

    if spec.asyncness == Asyncness::Forbidden
        && let Some(token) = &sig.asyncness
    {
        cx.error_spanned_by(
            token,
            format!(
                "{method} cannot be `async`: {}; write `{example}`",
                spec.async_reason
            ),
        );
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
                        "{method} takes `{receiver}`, not {what}: {}; write `{example}`",
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
        [message, extra @ ..] => {
            if !extra.is_empty() {
                cx.error_spanned_by(
                    quote::quote!(#(#extra),*),
                    format!(
                        "{method} takes one {} after `{receiver}`: remove this parameter; write `{example}`",
                        spec.noun
                    ),
                );
            }
            message_type(cx, spec, &message.ty)
        }
    };

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
    })
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

/// `Result<Ok, Err>`.
fn result_type(cx: &Ctxt, spec: &HandlerSpec, ty: &Type) -> Option<ResultType> {
    if let Some(args) = generic_args(ty, "Result")
        && let [ok, err] = args.as_slice()
    {
        return Some(ResultType {
            ok: Output::classify(ok),
            err: (*err).clone(),
        });
    }
    cx.error_spanned_by(
        ty,
        format!(
            "{} returns `Result<Events, Error>` with both types written out (the events: `()`, `E`, `Option<E>`, `Vec<E>` or `(E1, E2)`; the error: your domain error), not `{}`; write `{}`",
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
    example: "fn name(&self, command: &SomeCommand) -> Result<SomeEvent, SomeError>",
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
    example: "fn name(&mut self, event: &SomeEvent)",
};

/// The helper attributes an `#[aggregate]` block knows.
const AGGREGATE_HELPERS: [&HandlerSpec; 2] = [&AGGREGATE_HANDLES, &AGGREGATE_APPLY];

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
        let mut handlers = Vec::new();
        let mut applies = Vec::new();
        for impl_item in &mut item.items {
            let helpers = take_helpers(impl_item);
            let ImplItem::Fn(method) = impl_item else {
                for (spec, attr) in &helpers {
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
            let mut helpers = helpers.into_iter();
            let Some((spec, attr)) = helpers.next() else {
                continue;
            };
            for (other, again) in helpers {
                let message = if other.attr == spec.attr {
                    format!(
                        "duplicate `#[{}]` on `{}`: write it once",
                        other.attr, method.sig.ident
                    )
                } else {
                    format!(
                        "`{}` is already marked `#[{}]`: a method either handles a command or applies an event, not both; move this to a method of its own",
                        method.sig.ident, spec.attr
                    )
                };
                cx.error_spanned_by(again, message);
            }
            let Some(parsed) = parse_method(cx, spec, method, &attr) else {
                continue;
            };
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

        let self_ty = header(cx, item)?;
        let state = variant_ident(&self_ty)?;
        let event_enum = args
            .event_enum
            .unwrap_or_else(|| format_ident!("{}Event", state.unraw(), span = state.span()));
        let name = args
            .name
            .unwrap_or_else(|| LitStr::new(&state.unraw().to_string(), state.span()));
        Some(AggregateDef {
            self_ty,
            name,
            snapshot_every: args.snapshot_every.map(|(_, every)| every),
            idle_timeout: args.idle_timeout,
            hibernate_after: args.hibernate_after,
            lifespan: args.lifespan,
            event_enum,
            handlers,
            applies,
        })
    }
}

/// Removes the helper attributes from an item of the block; returns them with their spec.
fn take_helpers(item: &mut ImplItem) -> Vec<(&'static HandlerSpec, Attribute)> {
    let attrs = match item {
        ImplItem::Fn(item) => &mut item.attrs,
        ImplItem::Const(item) => &mut item.attrs,
        ImplItem::Type(item) => &mut item.attrs,
        ImplItem::Macro(item) => &mut item.attrs,
        _ => return Vec::new(),
    };
    let mut helpers = Vec::new();
    attrs.retain(|attr| {
        match AGGREGATE_HELPERS
            .iter()
            .find(|spec| attr::is_helper(attr, spec.attr))
        {
            Some(spec) => {
                helpers.push((*spec, attr.clone()));
                false
            }
            None => true,
        }
    });
    helpers
}

/// The state type of an inherent, non-generic impl block.
fn header(cx: &Ctxt, item: &ItemImpl) -> Option<Type> {
    let example = "`#[aggregate] impl BankAccount { ... }`";
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            format!(
                "`#[aggregate]` goes on the inherent impl block of the state type, not on a trait impl: write {example}"
            ),
        );
        return None;
    }
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(
            &item.generics,
            format!("an aggregate cannot be generic: its name and events are fixed; remove the generic parameters and write {example}"),
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
                format!("an aggregate cannot be generic: its name and events are fixed; use a state type without generic arguments and write {example}"),
            );
            return None;
        }
        return Some(ty.clone());
    }
    cx.error_spanned_by(
        ty,
        format!(
            "`#[aggregate]` needs a named state type (a struct), not `{}`: write {example}",
            show(ty)
        ),
    );
    None
}
