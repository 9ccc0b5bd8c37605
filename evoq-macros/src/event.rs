//! `#[derive(Event)]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, Ident, LitStr};

use crate::attr::EventArgs;
use crate::ctxt::Ctxt;
use crate::{fallback, paths};

/// Expands `#[derive(Event)]` on `input`.
pub(crate) fn expand(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let args = EventArgs::from_attrs(&cx, &input.attrs);
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            "an event cannot be generic: its wire name is stored with every event and must name one concrete type; remove the type and lifetime parameters and define one event type per case",
        );
    }
    if let Err(errors) = cx.check() {
        let mut tokens = errors.to_compile_error();
        tokens.extend(fallback::event(input));
        return tokens;
    }

    let ident = &input.ident;
    let name = args.name.unwrap_or_else(|| fallback::type_name(ident));
    let version = args.version.map_or(1, |(_, version)| version);
    event_impl(ident, &name, version)
}

/// The `Event` impl of `ident`, used by the derive and by its fallback.
pub(crate) fn event_impl(ident: &Ident, name: &LitStr, version: u32) -> TokenStream {
    let p = paths::private_call_site();
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::Event for #ident {
                const NAME: &'static #p::core::primitive::str = #name;
                const VERSION: #p::core::primitive::u32 = #version;
            }
        };
    }
}
