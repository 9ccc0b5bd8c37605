//! `#[upcaster(Event, from = N)]`: one step of an event type's upcaster chain.
//!
//! The step is an impl of the hidden `UpcastStep<N>` trait for the event type, which
//! `#[derive(Event)]` lists in `Event::UPCASTERS` for every `N` below the event's version. So
//! the compiler checks the chain: a missing step is an unsatisfied bound (at the event's
//! `version`), two steps from one version are conflicting impls, and a step from the current
//! version or above fails a const assertion. Nothing is registered at run time.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Item, ItemFn};

use crate::attr::UpcasterArgs;
use crate::ctxt::Ctxt;
use crate::item::parse_item;
use crate::paths;

const SIGNATURE: &str =
    "fn name(data: serde_json::Value) -> Result<serde_json::Value, UpcastError>";

/// Expands `#[upcaster(args)]` on `input`.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let wrong_place = format!(
        "`#[upcaster]` goes on a free function: `#[upcaster(MoneyDeposited, from = 1)] {SIGNATURE}`"
    );
    let item = match parse_item(&input, wrong_place, |item| match item {
        Item::Fn(item) => Ok(item),
        other => Err(Box::new(other)),
    }) {
        Ok(item) => item,
        Err(tokens) => return tokens,
    };
    let cx = Ctxt::new();
    let args = UpcasterArgs::parse(&cx, args);
    check_signature(&cx, &item);
    match cx.check() {
        Ok(()) => {
            let generated = generate(&args, &item);
            quote!(#item #generated)
        }
        Err(errors) => {
            let mut tokens = errors.to_compile_error();
            tokens.extend(quote!(#[allow(dead_code)] #item));
            tokens.extend(stub(&args));
            tokens
        }
    }
}

/// What the tokens can tell of the signature; the types are left to the compiler (an error
/// at the function's name).
fn check_signature(cx: &Ctxt, item: &ItemFn) {
    let sig = &item.sig;
    if let Some(asyncness) = &sig.asyncness {
        cx.error_spanned_by(
            asyncness,
            format!("an upcaster is not async: it only transforms data; write `{SIGNATURE}`"),
        );
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!("an upcaster cannot be generic: write `{SIGNATURE}`"),
        );
    }
    if let Some(receiver) = sig
        .inputs
        .iter()
        .find(|arg| matches!(arg, FnArg::Receiver(_)))
    {
        cx.error_spanned_by(
            receiver,
            format!("an upcaster is a free function, not a method: write `{SIGNATURE}`"),
        );
    } else if sig.inputs.len() != 1 {
        cx.error_spanned_by(
            &sig.inputs,
            format!(
                "an upcaster takes exactly one parameter, the stored data as JSON: write `{SIGNATURE}`"
            ),
        );
    }
}

/// The step with a stub function, so that the event's chain adds no error.
fn stub(args: &UpcasterArgs) -> TokenStream {
    let p = paths::private_call_site();
    let (Some(event), Some((_, from))) = (&args.event, &args.from) else {
        return TokenStream::new();
    };
    let from = proc_macro2::Literal::u32_unsuffixed(*from);
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::UpcastStep<#from> for #event {
                const STEP: #p::Upcaster = #p::Upcaster {
                    from: #from,
                    renamed_from: #p::core::option::Option::None,
                    upcast: #p::upcast_stub,
                };
            }
        };
    }
}

fn generate(args: &UpcasterArgs, item: &ItemFn) -> TokenStream {
    let p = paths::private_call_site();
    let (Some(event), Some((from_lit, from))) = (&args.event, &args.from) else {
        return TokenStream::new();
    };
    let ident = &item.sig.ident;
    let from = proc_macro2::Literal::u32_unsuffixed(*from);
    let renamed_from = match &args.renamed_from {
        Some(name) => quote!(#p::core::option::Option::Some(#name)),
        None => quote!(#p::core::option::Option::None),
    };
    // Spanned at the event type: the one place that requires `Event`.
    let p_event = paths::private(event.span());
    let version = quote_spanned!(event.span()=> <#event as #p_event::IsEvent>::VTABLE.version);
    // Spanned at `from = N`: a step from the current version or above.
    let assertion = quote_spanned! {from_lit.span()=>
        const _: () = #p::core::assert!(
            #from < #version,
            "`from` must be below the event's schema version: an upcaster reads data stored at version `from` and returns version `from + 1`; raise the event's `#[event(version = ...)]` or lower `from`"
        );
    };
    // Spanned at the function's name: a signature that does not fit is one error there.
    let p_fn = paths::private(ident.span());
    let function = quote_spanned!(ident.span()=> {
        let upcast: #p_fn::UpcastFn = #ident;
        upcast
    });
    quote! {
        const _: () = {
            #assertion

            #[automatically_derived]
            impl #p::UpcastStep<#from> for #event {
                const STEP: #p::Upcaster = #p::Upcaster {
                    from: #from,
                    renamed_from: #renamed_from,
                    upcast: #function,
                };
            }
        };
    }
}
