//! `#[event_handler]`: `EventHandler` for the block's type, its subscription list taken from
//! the `#[handles]` signatures, and a proof that every handler future is `Send`.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Item, LitStr};

use crate::aggregate::{explicit_check, set_span, vtable, wire_name_checks};
use crate::attr::{EventHandlerArgs, OnError, Retry};
use crate::ctxt::Ctxt;
use crate::item::parse_item;
use crate::model::{
    EVENT_HANDLER_FLAVOR, ErrorSpelling, EventHandlerDef, Flavor, HandlerFn, ResultType, show,
};
use crate::{check, fallback, paths, symbol};

/// Expands `#[event_handler(args)]` on `input`.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    expand_flavor(&EVENT_HANDLER_FLAVOR, args, input)
}

/// Expands `#[event_handler(args)]` or `#[projection(args)]` (the `flavor`) on `input`: a
/// projection is an event handler with a read model.
pub(crate) fn expand_flavor(flavor: &Flavor, args: TokenStream, input: TokenStream) -> TokenStream {
    let wrong_place = if flavor.attr == symbol::PROJECTION {
        "`#[projection]` goes on the impl block of the projection type: `#[projection(name = \"account_summary\", read_model = summaries)] impl AccountSummary { ... }`, with `#[handles]` async methods"
    } else {
        "`#[event_handler]` goes on the impl block of the handler type: `#[event_handler(name = \"notifier\")] impl Notifier { ... }`, with `#[handles]` async methods"
    };
    let mut item = match parse_item(&input, wrong_place, |item| match item {
        Item::Impl(item) => Ok(item),
        other => Err(Box::new(other)),
    }) {
        Ok(item) => item,
        Err(tokens) => return tokens,
    };
    let cx = Ctxt::new();
    let def = EventHandlerDef::from_ast(&cx, flavor, args, &mut item);
    if let Some(def) = &def {
        check::event_handler(&cx, def, flavor.attr);
    }
    match (cx.check(), def) {
        (Ok(()), Some(def)) => {
            let mut generated = generate(&def, flavor.attr == symbol::PROJECTION);
            if flavor.attr == symbol::PROJECTION {
                generated.extend(crate::projection::generate(&def));
            }
            quote!(#item #generated)
        }
        (checked, def) => {
            let mut tokens = checked
                .err()
                .map(|errors| errors.to_compile_error())
                .unwrap_or_default();
            tokens.extend(fallback::event_handler(&item, def.as_ref()));
            if flavor.attr == symbol::PROJECTION {
                tokens.extend(fallback::projection(def.as_ref()));
            }
            tokens
        }
    }
}

/// Everything but the impl block itself; `projection` for a `#[projection]`.
fn generate(def: &EventHandlerDef, projection: bool) -> TokenStream {
    let p = paths::private_call_site();
    let handler = &def.self_ty;
    let name = def
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new("", proc_macro2::Span::call_site()));
    let options = options(&def.args);

    let vtables = def.handlers.iter().enumerate().map(|(index, method)| {
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
    let unique_names = unique_name_checks(def);
    let explicit = def.handlers.iter().map(explicit_check);
    let names = def.handlers.iter().enumerate().map(|(index, method)| {
        let cfgs = &method.cfgs;
        let vt = vtable(index);
        quote!(#(#cfgs)* #vt.name,)
    });
    let upcasters = def.handlers.iter().enumerate().map(|(index, method)| {
        let cfgs = &method.cfgs;
        let vt = vtable(index);
        quote!(#(#cfgs)* #vt.upcasters,)
    });
    let arms = def
        .handlers
        .iter()
        .enumerate()
        .map(|(index, method)| arm(def, index, method));

    quote! {
        const _: () = {
            #(#vtables)*

            #(#unique_names)*

            #(#explicit)*

            #[automatically_derived]
            impl #p::EventHandler for #handler {
                const NAME: &'static #p::core::primitive::str = #name;
                const EVENT_TYPES: &'static [&'static #p::core::primitive::str] = &[#(#names)*];
                const OPTIONS: #p::HandlerOptions = #options;
                const UPCASTERS: &'static [&'static [#p::Upcaster]] = &[#(#upcasters)*];
                const IS_PROJECTION: #p::core::primitive::bool = #projection;

                fn handle<'__evoq>(
                    &'__evoq mut self,
                    meta: &'__evoq #p::EventMeta,
                ) -> #p::HandlerFuture<'__evoq> {
                    let event_type = #p::EventMeta::event_type(meta);
                    #(#arms)*
                    let _ = event_type;
                    #p::unhandled_event(meta)
                }
            }
        };
    }
}

/// The branch of `handle` for one method: decode, call, box. The boxing is spanned at the
/// method's name, so a future that is not `Send` is one error on the user's fn.
fn arm(def: &EventHandlerDef, index: usize, method: &HandlerFn) -> TokenStream {
    let p = paths::private_call_site();
    let handler = &def.self_ty;
    let cfgs = &method.cfgs;
    let vt = vtable(index);
    let ident = &method.ident;

    let meta = match &method.context {
        Some(context) => {
            let span = context.span();
            let p_at = paths::private(span);
            // Spanned at the parameter's type: "the last parameter ... is `&EventMeta`".
            let from_meta = quote_spanned!(span=> <#context as #p_at::IsEventMeta>::from_meta);
            quote!(#from_meta(meta))
        }
        // Not reachable: a method without the parameter is an error and goes to the fallback.
        None => quote!(meta),
    };
    // The location of the method's name with the hygiene of the call site, so the locals
    // below resolve as the rest of the expansion does.
    let span = proc_macro2::Span::call_site().located_at(ident.span());
    let p_at = paths::private(span);

    // The method's result as a `Result<(), HandlerFailure>`: with the error converted at the
    // error type ("cannot be the error of an event handler"), or, for an alias, the whole
    // match at the return type, so each of its checks is one error there.
    let outcome = match &method.output {
        Some(ResultType::Written { err, .. }) => {
            let err_span = err.span();
            let p_err = paths::private(err_span);
            let into_failure = match ErrorSpelling::of(err) {
                ErrorSpelling::Own => {
                    quote_spanned!(err_span=> <#err as #p_err::EventHandlerError>::into_failure)
                }
                ErrorSpelling::NotAnErrorType => {
                    quote_spanned!(err_span=> <#err as #p_err::ErrorType>::into_failure)
                }
            };
            quote_spanned! {span=>
                match result {
                    #p_at::core::result::Result::Ok(()) => #p_at::core::result::Result::Ok(()),
                    #p_at::core::result::Result::Err(error) => #p_at::core::result::Result::Err(#into_failure(error)),
                }
            }
        }
        Some(ResultType::Alias(returned)) => {
            // Every token, the type's included, at one span, the user's (the local `result`
            // keeps the call site's): each check fails once, on the user's token.
            let result_local = quote_spanned!(span=> result);
            let span = returned.span();
            let returned = set_span(returned.to_token_stream(), span);
            let p_ret = paths::private(span);
            let result = quote_spanned!(span=> <#returned as #p_ret::EventHandlerResult>);
            quote_spanned! {span=>
                match #result::into_result(#result_local) {
                    #p_ret::core::result::Result::Ok(()) => #p_ret::core::result::Result::Ok(()),
                    #p_ret::core::result::Result::Err(error) => #p_ret::core::result::Result::Err(
                        <#result::Err as #p_ret::EventHandlerError>::into_failure(error),
                    ),
                }
            }
        }
        // Not reachable: a method without a `Result` is an error and goes to the fallback.
        None => quote_spanned!(span=> {
            let _ = result;
            #p_at::core::result::Result::Ok(())
        }),
    };

    let boxed = quote_spanned! {span=>
        let future = async move {
            let meta = #p_at::core::option::Option::unwrap_or(
                #p_at::core::option::Option::as_ref(&renamed),
                meta,
            );
            let result = <#handler>::#ident(self, &event, #meta).await;
            #outcome
        };
        return #p_at::std::boxed::Box::pin(future);
    };
    quote! {
        #(#cfgs)*
        if (#vt.stored_as)(event_type) {
            let event = match #p::decode_event(meta, #vt.decode_stored) {
                #p::core::result::Result::Ok(event) => event,
                #p::core::result::Result::Err(failure) => return #p::failed_event(failure),
            };
            // Stored under a name the type was renamed from: the method's `EventMeta` says
            // which type it was read as (`current_type`).
            let renamed = #p::renamed_meta(meta, #vt.name);
            #boxed
        }
    }
}

/// `HandlerOptions::new()` with the attribute's options.
pub(crate) fn options(args: &EventHandlerArgs) -> TokenStream {
    let p = paths::private_call_site();
    let mut options = quote!(#p::HandlerOptions::new());
    let millis = |ms: u64| quote!(#p::core::time::Duration::from_millis(#ms));
    if let Some(retry) = args.retry {
        let strategy = match retry {
            Retry::Immediate => quote!(#p::RetryStrategy::immediate()),
            Retry::Fixed(delay) => {
                let delay = millis(delay);
                quote!(#p::RetryStrategy::fixed(#delay))
            }
            Retry::Exponential { base, max } => {
                let (base, max) = (millis(base), millis(max));
                quote!(#p::RetryStrategy::exponential(#base, #max))
            }
            Retry::ExponentialJitter { base, max } => {
                let (base, max) = (millis(base), millis(max));
                quote!(#p::RetryStrategy::exponential_jitter(#base, #max))
            }
        };
        options.extend(quote!(.retry(#strategy)));
    }
    if let Some(attempts) = args.max_attempts {
        options.extend(quote!(.max_attempts(#attempts)));
    }
    if let Some(on_error) = args.on_error {
        let variant = match on_error {
            OnError::DeadLetter => quote!(DeadLetter),
            OnError::Skip => quote!(Skip),
            OnError::Stop => quote!(Stop),
        };
        options.extend(quote!(.on_error(#p::OnError::#variant)));
    }
    if args.strong {
        options.extend(quote!(.strong(true)));
    }
    options
}

/// One const assertion per pair of handled events: their wire names differ (a handler could
/// not tell their stored events apart).
fn unique_name_checks(def: &EventHandlerDef) -> Vec<TokenStream> {
    let methods: Vec<&HandlerFn> = def.handlers.iter().collect();
    wire_name_checks(&methods, &|first, second| {
        format!(
            "the events `{}` and `{}` handled by `{}` have the same wire name, so the handler could not tell their stored events apart: handle them in one method, or give one of them another name with `#[event(name = \"...\")]`",
            show(first),
            show(second),
            show(&def.self_ty)
        )
    })
}
