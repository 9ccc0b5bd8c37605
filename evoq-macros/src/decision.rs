//! `#[decision]`: an `#[aggregate]` whose commands each carry a `#[query(...)]` of the events
//! they are decided on, read across streams by the runtime instead of from a live instance.
//!
//! The query is a small language of calls, parsed here so that its event types are known at
//! compile time: `any_of(..)` / `or(..)`, `all_of(..)` / `and(..)`, `types(Event, ..)` and
//! `tag(expr)` / `tag("prefix", expr)`, where `command` is the command. Each type is checked to
//! be an `Event` at its token, and every `#[apply]` event type must be one some query selects
//! (by the compiler, which knows which spellings are one type).

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ImplItem, Item, ItemImpl, Type};

use crate::attr::DecisionArgs;
use crate::ctxt::Ctxt;
use crate::item::parse_item;
use crate::model::{AggregateDef, DECISION_HELPERS, HandlerFn, same_tokens, show, variant_ident};
use crate::{aggregate, check, fallback, paths, symbol};

/// What a `#[decision]` block adds to an aggregate's model.
pub(crate) struct DecisionSpec {
    /// `#[decision(attempts = N)]`.
    attempts: Option<u32>,
    /// `#[decision(cached)]`.
    cached: bool,
    /// Each `#[handles]` method's query, by method name.
    queries: Vec<(syn::Ident, Query)>,
    /// The const assertions that the model's events are ones a query selects (see
    /// [`selected_checks`]).
    selected: Vec<TokenStream>,
}

/// A parsed `#[query(...)]`.
enum Query {
    Any(Vec<Query>),
    All(Vec<Query>),
    Types(Vec<Type>),
    Tag {
        prefix: Option<Box<Expr>>,
        value: Box<Expr>,
    },
}

const GRAMMAR: &str = "a query is built from `any_of(..)` (or `or(..)`), `all_of(..)` (or `and(..)`), `types(SomeEvent, ..)` and `tag(\"prefix\", command.field)` (or `tag(expr)` for a whole tag), where `command` is the command";

impl Query {
    fn parse(cx: &Ctxt, expr: &Expr) -> Option<Query> {
        let Expr::Call(call) = expr else {
            cx.error_spanned_by(expr, GRAMMAR);
            return None;
        };
        let Expr::Path(func) = &*call.func else {
            cx.error_spanned_by(&call.func, GRAMMAR);
            return None;
        };
        let Some(name) = func.path.get_ident().map(ToString::to_string) else {
            cx.error_spanned_by(&call.func, GRAMMAR);
            return None;
        };
        let args: Vec<&Expr> = call.args.iter().collect();
        let nested = |cx: &Ctxt| -> Option<Vec<Query>> {
            let parsed: Vec<Option<Query>> = args.iter().map(|a| Query::parse(cx, a)).collect();
            parsed.into_iter().collect()
        };
        match name.as_str() {
            "any_of" | "or" => nested(cx).map(Query::Any),
            "all_of" | "and" => nested(cx).map(Query::All),
            "types" => {
                if args.is_empty() {
                    cx.error_spanned_by(call, "`types(..)` names at least one event type");
                    return None;
                }
                let mut types = Vec::new();
                for arg in args {
                    match syn::parse2::<Type>(arg.to_token_stream()) {
                        Ok(ty) => types.push(ty),
                        Err(_) => {
                            cx.error_spanned_by(
                                arg,
                                "`types(..)` takes event types, like `types(BookLent, BookReturned)`",
                            );
                            return None;
                        }
                    }
                }
                Some(Query::Types(types))
            }
            "tag" => match args.as_slice() {
                [value] => Some(Query::Tag {
                    prefix: None,
                    value: Box::new((*value).clone()),
                }),
                [prefix, value] => Some(Query::Tag {
                    prefix: Some(Box::new((*prefix).clone())),
                    value: Box::new((*value).clone()),
                }),
                _ => {
                    cx.error_spanned_by(
                        call,
                        "`tag` takes a prefix and a value, `tag(\"member\", &command.member)`, or a whole tag, `tag(expr)`",
                    );
                    None
                }
            },
            _ => {
                cx.error_spanned_by(&call.func, GRAMMAR);
                None
            }
        }
    }

    /// The expression building the runtime's `EventQuery`.
    fn build(&self) -> TokenStream {
        let p = paths::private_call_site();
        match self {
            Query::Any(queries) => {
                let queries = queries.iter().map(Query::build);
                quote!(#p::EventQuery::any_of([#(#queries),*]))
            }
            Query::All(queries) => {
                let queries = queries.iter().map(Query::build);
                quote!(#p::EventQuery::all_of([#(#queries),*]))
            }
            Query::Types(types) => {
                let names = types.iter().map(|ty| {
                    let span = ty.span();
                    let p_at = paths::private(span);
                    // At the user's type: the one place that requires it to be an `Event`.
                    quote_spanned!(span=> (<#ty as #p_at::IsEvent>::VTABLE.name, <#ty as #p_at::IsEvent>::VTABLE.upcasters))
                });
                quote!(#p::query_types(&[#(#names),*]))
            }
            Query::Tag { prefix, value } => match prefix {
                Some(prefix) => quote!(#p::EventQuery::tag(#p::tag(#prefix, &(#value)))),
                None => {
                    quote!(#p::EventQuery::tag(#p::std::string::ToString::to_string(&(#value))))
                }
            },
        }
    }

    /// The event types the query can select, as written, per union item; `None` for an item
    /// that selects any type (a tag alone). An `all_of` keeps the types its parts share by
    /// name (the last segment of the path).
    fn items(&self) -> Vec<Option<Vec<Type>>> {
        match self {
            Query::Any(queries) => queries.iter().flat_map(Query::items).collect(),
            Query::All(queries) => queries.iter().fold(vec![None], |items, query| {
                let mut out = Vec::new();
                for left in &items {
                    for right in query.items() {
                        match (left, right) {
                            (None, right) => out.push(right),
                            (Some(left), None) => out.push(Some(left.clone())),
                            (Some(left), Some(right)) => {
                                let common: Vec<Type> = left
                                    .iter()
                                    .filter(|t| right.iter().any(|r| type_name(r) == type_name(t)))
                                    .cloned()
                                    .collect();
                                if !common.is_empty() {
                                    out.push(Some(common));
                                }
                            }
                        }
                    }
                }
                out
            }),
            Query::Types(types) => vec![Some(types.clone())],
            Query::Tag { .. } => vec![None],
        }
    }
}

/// A type's name as the `all_of` intersection compares it: the last segment of its path.
fn type_name(ty: &Type) -> String {
    variant_ident(ty).map_or_else(|| show(ty), |ident| ident.to_string())
}

impl DecisionSpec {
    /// The items a decision adds to the `Route` impl of `handler`'s command.
    pub(crate) fn route_items(&self, handler: &HandlerFn) -> TokenStream {
        let p = paths::private_call_site();
        let attempts = self.attempts.map(|attempts| {
            quote!(const DECISION_ATTEMPTS: #p::core::option::Option<#p::core::primitive::u32> = #p::core::option::Option::Some(#attempts);)
        });
        let query = self
            .queries
            .iter()
            .find(|(method, _)| *method == handler.ident)
            .map(|(_, query)| query.build());
        let cached = self
            .cached
            .then(|| quote!(const DECISION_CACHED: #p::core::primitive::bool = true;));
        let command = syn::Ident::new("command", Span::call_site());
        quote! {
            #attempts
            #cached

            fn decision_query(&self) -> #p::core::option::Option<#p::EventQuery> {
                let #command: &Self = self;
                let _ = #command;
                #p::core::option::Option::Some(#query)
            }
        }
    }
}

/// Removes every `#[query(...)]` from the block's methods, parsed, by method name; a query on
/// something else than a method is an error.
fn take_queries(cx: &Ctxt, item: &mut ItemImpl) -> Vec<(syn::Ident, Attribute, Option<Query>)> {
    let mut queries = Vec::new();
    for impl_item in &mut item.items {
        let attrs = match impl_item {
            ImplItem::Fn(method) => &mut method.attrs,
            ImplItem::Const(item) => &mut item.attrs,
            ImplItem::Type(item) => &mut item.attrs,
            _ => continue,
        };
        let mut found = Vec::new();
        attrs.retain(|attr| {
            if crate::attr::is_helper(attr, symbol::QUERY) {
                found.push(attr.clone());
                false
            } else {
                true
            }
        });
        let ImplItem::Fn(method) = impl_item else {
            for attr in &found {
                cx.error_spanned_by(
                    attr,
                    "`#[query(...)]` goes on a `#[handles]` method of the `#[decision]` block",
                );
            }
            continue;
        };
        let mut found = found.into_iter();
        if let Some(attr) = found.next() {
            let query = match attr.parse_args::<Expr>() {
                Ok(expr) => Query::parse(cx, &expr),
                Err(_) => {
                    cx.error_spanned_by(&attr, GRAMMAR);
                    None
                }
            };
            queries.push((method.sig.ident.clone(), attr, query));
        }
        for again in found {
            cx.error_spanned_by(
                again,
                format!(
                    "duplicate `#[query]` on `{}`: one query per command; combine them with `any_of(..)`",
                    method.sig.ident
                ),
            );
        }
    }
    queries
}

/// Expands `#[decision(args)]` on `input`.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let wrong_place = "`#[decision]` goes on the impl block of the decision's model: `#[decision] impl Lending { ... }`, with `#[handles]` + `#[query(...)]` and `#[apply]` methods";
    let mut item = match parse_item(&input, wrong_place, |item| match item {
        Item::Impl(item) => Ok(item),
        other => Err(Box::new(other)),
    }) {
        Ok(item) => item,
        Err(tokens) => return tokens,
    };
    let cx = Ctxt::new();
    let args = DecisionArgs::parse(&cx, args);
    let queries = take_queries(&cx, &mut item);
    let mut def = AggregateDef::from_parts(&cx, args.shared, &DECISION_HELPERS, &mut item);
    if let Some(def) = &mut def {
        check::aggregate(&cx, def);
        let spec = check_queries(&cx, def, queries, args.attempts, args.cached);
        def.decision = Some(spec);
    }
    match (cx.check(), def) {
        (Ok(()), Some(def)) => {
            let generated = aggregate::generate(&def);
            let selected = def.decision.iter().flat_map(|spec| &spec.selected);
            quote!(#item #generated #(#selected)*)
        }
        (checked, def) => {
            let mut tokens = checked
                .err()
                .map(|errors| errors.to_compile_error())
                .unwrap_or_default();
            tokens.extend(fallback::aggregate(&item, def.as_ref()));
            tokens
        }
    }
}

/// Every `#[handles]` method has a query, every query is on a `#[handles]` method, and every
/// `#[apply]` event type is one some query selects.
fn check_queries(
    cx: &Ctxt,
    def: &AggregateDef,
    queries: Vec<(syn::Ident, Attribute, Option<Query>)>,
    attempts: Option<u32>,
    cached: bool,
) -> DecisionSpec {
    for handler in &def.handlers {
        if !queries
            .iter()
            .any(|(method, _, _)| *method == handler.ident)
        {
            cx.error_spanned_by(
                &handler.ident,
                format!(
                    "the command `{}` of a decision needs the events it is decided on: add `#[query(all_of(types(SomeEvent), tag(\"prefix\", &command.field)))]` to `{}`",
                    show(&handler.message),
                    handler.ident
                ),
            );
        }
    }
    for handler in &def.handlers {
        if let Some(context) = &handler.context
            && aggregate::slice_element(context).is_none()
        {
            cx.error_spanned_by(
                context,
                format!(
                    "`{}` takes the context's events as a slice of the decision's events: write `context: &[{}]`",
                    handler.ident, def.event_enum
                ),
            );
        }
    }
    let mut any_type = false;
    let mut selected: Vec<Type> = Vec::new();
    let mut parsed = Vec::new();
    for (method, attr, query) in queries {
        if !def.handlers.iter().any(|handler| handler.ident == method) {
            cx.error_spanned_by(
                &attr,
                format!("`#[query]` goes on a `#[handles]` method of the `#[decision]` block, and `{method}` is not one"),
            );
            continue;
        }
        let Some(query) = query else { continue };
        for item in query.items() {
            match item {
                None => any_type = true,
                Some(types) => selected.extend(types),
            }
        }
        parsed.push((method, query));
    }
    let selected = if any_type {
        Vec::new()
    } else {
        selected_checks(def, &selected)
    };
    DecisionSpec {
        attempts,
        cached,
        queries: parsed,
        selected,
    }
}

/// One const assertion per `#[apply]` event type that no query names with the same tokens:
/// its wire name is the wire name of a type some query selects (the runtime reads a query's
/// events by wire name). The macro cannot tell whether two spellings are one type (`use
/// BookLent as Lent`, `type Lent = ev::BookLent`), nor tell apart two types with one name in
/// two modules; the compiler can. Spanned at the `#[apply]` parameter's type: an event no
/// query selects is one error there.
fn selected_checks(def: &AggregateDef, selected: &[Type]) -> Vec<TokenStream> {
    def.applies
        .iter()
        .filter(|apply| {
            !selected
                .iter()
                .any(|queried| same_tokens(queried, apply.event()))
        })
        .map(|apply| {
            let event = apply.event();
            let span = event.span();
            let p_at = paths::private(span);
            let message = format!(
                "the model applies `{}`, but no `#[query]` of this decision selects it, so it would never see one: add `{}` to a `types(..)` of a query, or remove `{}`",
                show(event),
                show(event),
                apply.method.ident
            )
            .replace('{', "{{")
            .replace('}', "}}");
            let names = selected.iter().map(|queried| {
                let span = queried.span();
                let p_at = paths::private(span);
                quote_spanned!(span=> <#queried as #p_at::IsEvent>::VTABLE.name)
            });
            let cfgs = &apply.method.cfgs;
            let args = aggregate::whole_type_args(
                event,
                quote_spanned! {span=>
                    #p_at::str_among(<#event as #p_at::IsEvent>::VTABLE.name, &[#(#names),*]),
                    #message
                },
            );
            quote_spanned! {span=>
                #(#cfgs)*
                const _: () = #p_at::core::assert! #args;
            }
        })
        .collect()
}
