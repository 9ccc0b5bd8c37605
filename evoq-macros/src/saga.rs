//! `#[saga]`: `Saga` for the block's type. The methods are parsed with the same machinery as
//! `#[event_handler]` (`parse_helpers` with a `HandlerSpec` per helper); the subscription list
//! comes from the signatures, the correlation field is read from the event at the user's `by`
//! token (a missing field is one error there), and `Commands::push` requires `Route` of every
//! emitted command (compile-time guarantee 4). The `#[init]` constructor is not an event method:
//! it has a parse of its own ([`parse_init`]); without one, `Saga::init` is `Default`, required
//! at the user's type through the `SagaDefault` check. The state is stored as JSON: the
//! `SagaState` check, at the same type ([`state_json`]).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ImplItem, ImplItemFn, Item, ItemImpl, LitStr, Meta, ReturnType, Type};

use crate::aggregate::{explicit_check, vtable, wire_name_checks};
use crate::attr::{self, EventHandlerArgs};
use crate::check::{same_cfgs, suggested_name};
use crate::ctxt::Ctxt;
use crate::item::parse_item;
use crate::model::{
    Asyncness, Container, Context, HandlerFn, HandlerSpec, Receiver, Returns, header,
    parse_helpers, same_tokens, show,
};
use crate::{paths, symbol};

const fn step(attr: symbol::Symbol) -> HandlerSpec {
    HandlerSpec {
        attr,
        container: symbol::SAGA,
        noun: "event",
        receiver: Receiver::Mut,
        receiver_reason: "the saga updates its instance's state",
        asyncness: Asyncness::Forbidden,
        async_reason: "a saga method decides which commands to send and the runtime dispatches them",
        returns: Returns::Value,
        context: Context::None,
        example: "fn name(&mut self, event: &SomeEvent) -> Commands",
        correlated: true,
        elsewhere: "",
    }
}

const STARTS: HandlerSpec = step(symbol::STARTS);
const CONTINUES: HandlerSpec = step(symbol::CONTINUES);
const STOPS: HandlerSpec = step(symbol::STOPS);
const COMPENSATES: HandlerSpec = HandlerSpec {
    attr: symbol::COMPENSATES,
    container: symbol::SAGA,
    noun: "failed command",
    receiver: Receiver::Mut,
    receiver_reason: "the saga updates its instance's state",
    asyncness: Asyncness::Forbidden,
    async_reason: "a saga method decides which commands to send and the runtime dispatches them",
    returns: Returns::Value,
    context: Context::None,
    example: "fn name(&mut self, failed: &FailedCommand) -> Commands",
    correlated: false,
    elsewhere: "",
};

const HELPERS: [&HandlerSpec; 4] = [&STARTS, &CONTINUES, &STOPS, &COMPENSATES];

const SAGA_CONTAINER: Container = Container {
    attr: symbol::SAGA,
    noun: "a saga",
    subject: "saga state type",
    fixed: "its name and event types are fixed",
    example: "`#[saga(name = \"order_fulfillment\")] impl OrderFulfillment { ... }`",
};

/// The `SagaStepKind` variant of a `#[starts]` method.
const STARTS_KIND: &str = "Starts";

/// A `#[saga]` block.
struct SagaDef {
    self_ty: syn::Type,
    name: Option<LitStr>,
    args: EventHandlerArgs,
    /// The event methods, with `StepKind` variant names.
    steps: Vec<(&'static str, HandlerFn)>,
    compensates: Option<HandlerFn>,
    /// The `#[init]` method.
    init: Option<InitFn>,
}

/// The `#[init]` method: `fn name(instance: &str) -> Self` (or `instance: String`).
struct InitFn {
    ident: Ident,
    /// Whether it takes the id as a `String`.
    owned: bool,
}

/// A correct `#[init]` signature, shown in messages.
const INIT_EXAMPLE: &str = "#[init] fn init(instance: &str) -> Self";

/// Expands `#[saga(args)]` on `input`.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let wrong_place = "`#[saga]` goes on the impl block of the saga's state type: `#[saga(name = \"order_fulfillment\")] impl OrderFulfillment { ... }`, with `#[starts(by = field)]`, `#[continues(by = field)]` and `#[stops(by = field)]` methods";
    let mut item = match parse_item(&input, wrong_place, |item| match item {
        Item::Impl(item) => Ok(item),
        other => Err(Box::new(other)),
    }) {
        Ok(item) => item,
        Err(tokens) => return tokens,
    };
    let cx = Ctxt::new();
    let def = from_ast(&cx, args, &mut item);
    if let Some(def) = &def {
        check(&cx, def);
    }
    match (cx.check(), def) {
        (Ok(()), Some(def)) => {
            let generated = generate(&def);
            quote!(#item #generated)
        }
        (checked, def) => {
            let mut tokens = checked
                .err()
                .map(|errors| errors.to_compile_error())
                .unwrap_or_default();
            tokens.extend(quote!(#[allow(dead_code)] #item));
            if let Some(def) = def {
                tokens.extend(crate::fallback::saga(&def.self_ty, def.name.as_ref()));
            }
            tokens
        }
    }
}

fn from_ast(cx: &Ctxt, args: TokenStream, item: &mut ItemImpl) -> Option<SagaDef> {
    let mut args = EventHandlerArgs::parse(cx, args, symbol::SAGA, attr::EVENT_HANDLER_KEYS);
    let name = args.name.take();
    // Before `parse_helpers`, which strips the event helpers this pass looks for.
    let init = parse_init(cx, item);
    let mut steps = Vec::new();
    let mut compensates: Option<HandlerFn> = None;
    for (spec, method) in parse_helpers(
        cx,
        item,
        &HELPERS,
        "a method takes one event (or the failed command)",
    ) {
        let kind = if spec.attr == symbol::STARTS {
            STARTS_KIND
        } else if spec.attr == symbol::CONTINUES {
            "Continues"
        } else if spec.attr == symbol::STOPS {
            "Stops"
        } else {
            if let Some(first) = &compensates {
                cx.error_spanned_by(
                    &method.ident,
                    format!(
                        "a saga has one `#[compensates]` method, and `{}` is one already: merge them (the `FailedCommand` says which command failed)",
                        first.ident
                    ),
                );
            } else {
                compensates = Some(method);
            }
            continue;
        };
        steps.push((kind, method));
    }
    let self_ty = header(cx, item, &SAGA_CONTAINER)?;
    Some(SagaDef {
        self_ty,
        name,
        args,
        steps,
        compensates,
        init,
    })
}

/// Strips `#[init]` from every item of the block and parses the method it marks; every mistake
/// is recorded in `cx`. `None` when there is none, or when it has a mistake.
fn parse_init(cx: &Ctxt, item: &mut ItemImpl) -> Option<InitFn> {
    let self_ty = (*item.self_ty).clone();
    let mut found: Option<InitFn> = None;
    for impl_item in &mut item.items {
        let attrs = match impl_item {
            ImplItem::Fn(item) => &mut item.attrs,
            ImplItem::Const(item) => &mut item.attrs,
            ImplItem::Type(item) => &mut item.attrs,
            ImplItem::Macro(item) => &mut item.attrs,
            _ => continue,
        };
        let mut marks = Vec::new();
        attrs.retain(|attr| {
            let init = attr::is_helper(attr, symbol::INIT);
            if init {
                marks.push(attr.clone());
            }
            !init
        });
        let mut marks = marks.into_iter();
        let Some(mark) = marks.next() else {
            continue;
        };
        let ImplItem::Fn(method) = impl_item else {
            cx.error_spanned_by(
                &mark,
                format!("`#[init]` goes on a method of the `#[saga]` block, like `{INIT_EXAMPLE}`"),
            );
            continue;
        };
        let ident = &method.sig.ident;
        for again in marks {
            cx.error_spanned_by(
                again,
                format!("duplicate `#[init]` on `{ident}`: write it once"),
            );
        }
        if !matches!(mark.meta, Meta::Path(_)) {
            cx.error_spanned_by(
                &mark.meta,
                format!("`#[init]` takes no arguments: write `{INIT_EXAMPLE}`"),
            );
        }
        if let Some(step) = HELPERS.iter().find(|spec| {
            method
                .attrs
                .iter()
                .any(|attr| attr::is_helper(attr, spec.attr))
        }) {
            cx.error_spanned_by(
                &mark,
                format!(
                    "`{ident}` is already marked `#[{}]`: the `#[init]` method makes a new instance, an event method updates one; move `#[init]` to a method of its own, `{INIT_EXAMPLE}`",
                    step.attr
                ),
            );
            continue;
        }
        let Some(init) = init_signature(cx, method, &self_ty) else {
            continue;
        };
        match &found {
            Some(first) => cx.error_spanned_by(
                ident,
                format!(
                    "a saga has one `#[init]` method, and `{}` is one already: keep one (it receives the instance id; the state it returns is the new instance)",
                    first.ident
                ),
            ),
            None => found = Some(init),
        }
    }
    found
}

/// Checks the signature of the `#[init]` method: `fn name(instance: &str) -> Self`, the id also
/// accepted as a `String`; `None` after a mistake.
fn init_signature(cx: &Ctxt, method: &ImplItemFn, self_ty: &Type) -> Option<InitFn> {
    let sig = &method.sig;
    let ok = std::cell::Cell::new(true);
    let error = |tokens: &dyn quote::ToTokens, message: String| {
        cx.error_spanned_by(tokens.to_token_stream(), message);
        ok.set(false);
    };
    if let Some(token) = &sig.asyncness {
        error(
            token,
            format!(
                "an `#[init]` method cannot be `async`: it makes the state of a new instance before the event's method runs; write `{INIT_EXAMPLE}`"
            ),
        );
    }
    if let Some(token) = &sig.unsafety {
        error(
            token,
            format!("an `#[init]` method cannot be `unsafe`; write `{INIT_EXAMPLE}`"),
        );
    }
    if !sig.generics.params.is_empty() {
        error(
            &sig.generics,
            format!(
                "an `#[init]` method cannot be generic: it takes the instance id and returns the state; write `{INIT_EXAMPLE}`"
            ),
        );
    } else if let Some(where_clause) = &sig.generics.where_clause {
        error(
            where_clause,
            format!("an `#[init]` method cannot have a `where` clause; write `{INIT_EXAMPLE}`"),
        );
    }
    let parens = sig.paren_token.span.join();
    let receiver = sig.inputs.iter().find_map(|input| match input {
        FnArg::Receiver(receiver) => Some(receiver),
        FnArg::Typed(_) => None,
    });
    if let Some(receiver) = receiver {
        error(
            receiver,
            format!(
                "an `#[init]` method takes no `self`: it makes the instance, so there is none yet; write `{INIT_EXAMPLE}`"
            ),
        );
    }
    let typed: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(arg) => Some(arg),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let mut owned = false;
    match typed.as_slice() {
        [] if receiver.is_some() => {}
        [] => {
            ok.set(false);
            cx.error_at(
                parens,
                format!(
                    "an `#[init]` method takes the id of the new instance: write `{INIT_EXAMPLE}`"
                ),
            );
        }
        [id, extra @ ..] => {
            match id_type(&id.ty) {
                Some(is_owned) => owned = is_owned,
                None => error(
                    &id.ty,
                    format!(
                        "an `#[init]` method takes the instance id as `&str` (or `String`), not `{}`; write `{INIT_EXAMPLE}`",
                        show(&id.ty)
                    ),
                ),
            }
            if !extra.is_empty() {
                error(
                    &quote!(#(#extra),*),
                    format!(
                        "an `#[init]` method takes one parameter, the instance id: remove this parameter; write `{INIT_EXAMPLE}`"
                    ),
                );
            }
        }
    }
    match &sig.output {
        ReturnType::Default => {
            ok.set(false);
            cx.error_at(
                parens,
                format!(
                    "an `#[init]` method returns the new instance: add `-> Self`; write `{INIT_EXAMPLE}`"
                ),
            );
        }
        ReturnType::Type(_, ty) => {
            let is_self = matches!(&**ty, Type::Path(path) if path.qself.is_none() && path.path.is_ident("Self"));
            if !is_self && !same_tokens(ty, self_ty) {
                error(
                    ty,
                    format!(
                        "an `#[init]` method returns the new instance, `Self`, not `{}`; write `{INIT_EXAMPLE}`",
                        show(ty)
                    ),
                );
            }
        }
    }
    ok.get().then(|| InitFn {
        ident: sig.ident.clone(),
        owned,
    })
}

/// Whether `ty` is `&str` (`Some(false)`) or `String` (`Some(true)`).
fn id_type(ty: &Type) -> Option<bool> {
    let last_is = |ty: &Type, name: &str| {
        matches!(ty, Type::Path(path) if path.qself.is_none()
            && path.path.segments.last().is_some_and(|last| last.ident == name && last.arguments.is_none()))
    };
    match ty {
        Type::Paren(paren) => id_type(&paren.elem),
        Type::Group(group) => id_type(&group.elem),
        Type::Reference(reference) if reference.mutability.is_none() => {
            last_is(&reference.elem, "str").then_some(false)
        }
        ty => last_is(ty, "String").then_some(true),
    }
}

fn check(cx: &Ctxt, def: &SagaDef) {
    if def.name.is_none() && !def.args.name_given {
        cx.error_at(
            proc_macro2::Span::call_site(),
            format!(
                "`#[saga]` needs a name: write `#[saga(name = \"{}\")]`; the name keys the saga's checkpoint and instance states in the store, so keep it stable",
                suggested_name(&def.self_ty),
            ),
        );
    }
    if !def.steps.iter().any(|(kind, _)| *kind == STARTS_KIND) {
        cx.error_spanned_by(
            &def.self_ty,
            "a `#[saga]` block needs at least one `#[starts(by = field)]` method, like `#[starts(by = order_id)] fn placed(&mut self, event: &OrderPlaced) -> Commands`",
        );
    }
    for (index, (_, method)) in def.steps.iter().enumerate() {
        if let Some((_, first)) = def.steps[..index].iter().find(|(_, first)| {
            same_cfgs(first, method) && same_tokens(&first.message, &method.message)
        }) {
            cx.error_spanned_by(
                &method.message,
                format!(
                    "the event `{}` is taken twice in this saga, by `{}` and by `{}`: a saga has one method per event type; merge them into one",
                    show(&method.message),
                    first.ident,
                    method.ident
                ),
            );
        }
    }
}

fn generate(def: &SagaDef) -> TokenStream {
    let p = paths::private_call_site();
    let saga = &def.self_ty;
    let name = def
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new("", proc_macro2::Span::call_site()));
    let options = crate::event_handler::options(&def.args);

    let vtables = def.steps.iter().enumerate().map(|(index, (_, method))| {
        let cfgs = &method.cfgs;
        let ty = &method.message;
        let vt = vtable(index);
        let span = ty.span();
        let p_at = paths::private(span);
        // Spanned at the user's type: the one place that requires `ty: Event`.
        let value = quote_spanned!(span=> <#ty as #p_at::IsEvent>::VTABLE);
        quote! {
            #(#cfgs)*
            const #vt: #p::EventVTable<#ty> = #value;
        }
    });
    let methods: Vec<&HandlerFn> = def.steps.iter().map(|(_, method)| method).collect();
    let unique_names = wire_name_checks(&methods, &|first, second| {
        format!(
            "the events `{}` and `{}` taken by the saga `{}` have the same wire name, so it could not tell their stored events apart: if they are one type written twice, take it in one method; if they are two types, give one of them another name with `#[event(name = \"...\")]`",
            show(first),
            show(second),
            show(&def.self_ty)
        )
    });
    let explicit = def
        .steps
        .iter()
        .map(|(_, method)| method)
        .chain(&def.compensates)
        .map(explicit_check);
    let names = def.steps.iter().enumerate().map(|(index, (_, method))| {
        let cfgs = &method.cfgs;
        let vt = vtable(index);
        quote!(#(#cfgs)* #vt.name,)
    });
    let upcasters = def.steps.iter().enumerate().map(|(index, (_, method))| {
        let cfgs = &method.cfgs;
        let vt = vtable(index);
        quote!(#(#cfgs)* #vt.upcasters,)
    });
    let arms = def.steps.iter().enumerate().map(|(index, (kind, method))| {
        let cfgs = &method.cfgs;
        let vt = vtable(index);
        let ident = &method.ident;
        let kind = syn::Ident::new(kind, proc_macro2::Span::call_site());
        let key = match &method.by {
            Some(field) => {
                // The field access at the user's `by` token (with the call site's hygiene):
                // a field the event lacks is one error there.
                let span = proc_macro2::Span::call_site().located_at(field.span());
                let p_at = paths::private(span);
                // An `Option` field correlates through its value (`None`: no instance).
                quote_spanned!(span=> {
                    use #p_at::{KeyCorrelation as _, OptionCorrelation as _};
                    let value = &event.#field;
                    (&#p_at::Correlate(value)).correlation().key(value)
                })
            }
            None => quote!(#p::core::option::Option::None),
        };
        let span = proc_macro2::Span::call_site().located_at(ident.span());
        let call = commands(method, quote_spanned!(span=> <#saga>::#ident(saga, &event)));
        quote! {
            #(#cfgs)*
            if (#vt.stored_as)(event_type) {
                let event = #p::decode_event(meta, #vt.decode_stored)?;
                let key = #key;
                return #p::core::result::Result::Ok(#p::SagaStep::new(
                    #p::SagaStepKind::#kind,
                    key,
                    #p::std::boxed::Box::new(move |saga: &mut #saga| -> #p::Commands { #call }),
                ));
            }
        }
    });
    let init = match &def.init {
        Some(init) => {
            let ident = &init.ident;
            let span = proc_macro2::Span::call_site().located_at(ident.span());
            let id = if init.owned {
                quote!(#p::std::borrow::ToOwned::to_owned(instance))
            } else {
                quote!(instance)
            };
            quote_spanned!(span=> <#saga>::#ident(#id))
        }
        None => {
            // Spanned at the user's type: with neither `Default` nor `#[init]`, one error there.
            let span = saga.span();
            let p_at = paths::private(span);
            quote_spanned!(span=> {
                let _ = instance;
                <#saga as #p_at::SagaDefault>::saga_default()
            })
        }
    };
    let compensate = def.compensates.as_ref().map(|method| {
        let ident = &method.ident;
        let span = proc_macro2::Span::call_site().located_at(ident.span());
        // The failed command through `IsFailedCommand`, at the parameter's type: an event
        // there is one error, in the check's words.
        let ty = &method.message;
        let ty_span = ty.span();
        let p_at = paths::private(ty_span);
        let failed = quote_spanned!(ty_span=> <#ty as #p_at::IsFailedCommand>::from_failed);
        let call = commands(
            method,
            quote_spanned!(span=> <#saga>::#ident(self, #failed(failed))),
        );
        quote! {
            fn compensate(&mut self, failed: &#p::FailedCommand) -> #p::Commands {
                #call
            }
        }
    });

    let (json_bounds, json_check) = state_json(saga);

    quote! {
        const _: () = {
            #(#vtables)*

            #(#unique_names)*

            #(#explicit)*

            #json_check

            #[automatically_derived]
            impl #p::Saga for #saga #json_bounds {
                const NAME: &'static #p::core::primitive::str = #name;
                const EVENT_TYPES: &'static [&'static #p::core::primitive::str] = &[#(#names)*];
                const OPTIONS: #p::HandlerOptions = #options;
                const UPCASTERS: &'static [&'static [#p::Upcaster]] = &[#(#upcasters)*];

                fn init(instance: &#p::core::primitive::str) -> Self {
                    #init
                }

                fn route(
                    meta: &#p::EventMeta,
                ) -> #p::core::result::Result<
                    #p::core::option::Option<#p::SagaStep<Self>>,
                    #p::HandlerFailure,
                > {
                    let event_type = #p::EventMeta::event_type(meta);
                    #(#arms)*
                    let _ = event_type;
                    #p::core::result::Result::Ok(#p::core::option::Option::None)
                }

                #compensate
            }
        };
    }
}

/// What `Saga` requires of the state besides `Send`: its instance states are stored as JSON.
/// Returns the where clause of the `Saga` impl and the check, spanned at the state type of the
/// block's `impl`. The where clause is higher-ranked, so a state without serde's traits makes
/// an impl that does not apply rather than serde's two errors at the impl (with notes in the
/// runtime's source); the `SagaState` check is the one error, naming the derive.
pub(crate) fn state_json(saga: &Type) -> (TokenStream, TokenStream) {
    let p = paths::private_call_site();
    let span = saga.span();
    let p_at = paths::private(span);
    let bounds = quote! {
        where
            for<'__evoq> #saga: #p::serde::Serialize + #p::serde::de::DeserializeOwned,
    };
    let check = quote_spanned!(span=> const _: () = <#saga as #p_at::SagaState>::OK;);
    (bounds, check)
}

/// `call`, a saga method's call, as `Commands`: through the `SagaOutput` check, spanned at
/// the method's return type, so another type there is one error, in the check's words.
fn commands(method: &HandlerFn, call: TokenStream) -> TokenStream {
    match &method.value {
        Some(returned) => {
            let span = returned.span();
            let p_at = paths::private(span);
            let into = quote_spanned!(span=> <#returned as #p_at::SagaOutput>::into_commands);
            quote!(#into(#call))
        }
        // Not reachable: a method without a return type is an error and goes to the fallback.
        None => call,
    }
}
