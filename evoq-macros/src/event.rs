//! `#[derive(Event)]`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
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
    // The tags' mistakes, once the type itself is right.
    let cx = Ctxt::new();

    let ident = &input.ident;
    let name = args.name.unwrap_or_else(|| fallback::type_name(ident));
    let (span, version) = args
        .version
        .map_or((Span::call_site(), 1), |(lit, version)| {
            (lit.span(), version)
        });
    // The chain: one upcaster per older version, each an impl that `#[upcaster]` generates;
    // a missing one is an unsatisfied bound spanned at the version.
    let p = paths::private(span);
    let mut event = ident.clone();
    event.set_span(span);
    let steps = (1..version).map(|from| {
        let from = proc_macro2::Literal::u32_unsuffixed(from);
        quote_spanned!(span=> <#event as #p::UpcastStep<#from>>::STEP,)
    });
    let upcasters = quote!(&[#(#steps)*]);
    let checks = checks(ident);
    let tags = tags(&cx, input);
    if let Err(errors) = cx.check() {
        let mut tokens = errors.to_compile_error();
        tokens.extend(fallback::event(input));
        return tokens;
    }
    let event = event_impl(ident, &name, version, Some(upcasters), tags);
    quote! {
        const _: () = {
            #checks
        };
        #event
    }
}

/// `Event::tags` of a struct whose fields marked `#[tag]` (prefix: the field's name) or
/// `#[tag("prefix")]` each give one `"<prefix>:<value>"` tag, the value by `Display` (an error
/// at the field when its type has none); `None` when no field is marked.
fn tags(cx: &Ctxt, input: &DeriveInput) -> Option<TokenStream> {
    let fields: Vec<&syn::Field> = match &input.data {
        syn::Data::Struct(data) => data.fields.iter().collect(),
        syn::Data::Enum(data) => {
            for variant in &data.variants {
                for field in &variant.fields {
                    for attr in field
                        .attrs
                        .iter()
                        .filter(|a| a.path() == crate::symbol::TAG)
                    {
                        cx.error_spanned_by(
                            attr,
                            "`#[tag]` goes on a field of a struct event; an enum event has no tags",
                        );
                    }
                }
            }
            return None;
        }
        syn::Data::Union(_) => return None,
    };
    let mut pushes = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        for attr in field
            .attrs
            .iter()
            .filter(|a| a.path() == crate::symbol::TAG)
        {
            let prefix = match &attr.meta {
                syn::Meta::Path(_) => match &field.ident {
                    Some(ident) => LitStr::new(&ident.unraw().to_string(), ident.span()),
                    None => {
                        cx.error_spanned_by(attr, "a tuple field has no name to prefix its tag with: write `#[tag(\"prefix\")]`");
                        continue;
                    }
                },
                syn::Meta::List(list) => match list.parse_args::<LitStr>() {
                    Ok(prefix) if valid_prefix(&prefix.value()) => prefix,
                    Ok(prefix) => {
                        cx.error_spanned_by(&prefix, "a tag prefix is a non-empty name without `:` (the tag is written `prefix:value`)");
                        continue;
                    }
                    Err(_) => {
                        cx.error_spanned_by(attr, "write `#[tag]` (the field's name is the prefix) or `#[tag(\"prefix\")]`");
                        continue;
                    }
                },
                syn::Meta::NameValue(value) => {
                    cx.error_spanned_by(value, "write `#[tag(\"prefix\")]`, not `#[tag = ...]`");
                    continue;
                }
            };
            let member = match &field.ident {
                Some(ident) => quote!(#ident),
                None => {
                    let index = syn::Index::from(index);
                    quote!(#index)
                }
            };
            let ty = &field.ty;
            let span = ty.span();
            let p = paths::private(span);
            // At the field's type: the one place that requires `Display` of it.
            pushes.push(quote_spanned! {span=>
                tags.push(<#ty as #p::TagValue>::tag(&self.#member, #prefix));
            });
        }
    }
    if pushes.is_empty() {
        return None;
    }
    let p = paths::private_call_site();
    Some(quote! {
        fn tags(&self) -> #p::Tags {
            let mut tags = #p::Tags::default();
            #(#pushes)*
            tags
        }
    })
}

/// Whether `prefix` can start a tag: not empty, no `:`.
fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && !prefix.contains(':')
}

/// What `Event` requires of the type, one check each, spanned at the type's name: JSON (the
/// `StoredAsJson` sentence), `Clone` and `Debug` (the standard library's own sentences, which
/// suggest the derive), `Send + Sync` (the `SharedEvent` sentence). The `Event` impl itself is
/// conditional on them, so a missing one is this one error, not the trait's supertrait bounds
/// (with serde's list of implementors and a note in the runtime's source).
fn checks(ident: &Ident) -> TokenStream {
    let span = ident.span();
    let p = paths::private(span);
    quote_spanned! {span=>
        const _: () = <#ident as #p::StoredAsJson>::OK;
        const _: fn(&#ident) -> #ident = <#ident as #p::core::clone::Clone>::clone;
        const _: fn(&#ident, &mut #p::core::fmt::Formatter<'_>) -> #p::core::fmt::Result =
            <#ident as #p::core::fmt::Debug>::fmt;
        const _: () = <#ident as #p::SharedEvent>::OK;
    }
}

/// The `Event` impl of `ident`, used by the derive and by its fallback (no upcasters).
///
/// The impl holds only when the type meets `Event`'s supertraits: the higher-ranked where
/// clause makes a missing one an impl that does not apply instead of an error here (the
/// derive's checks report it, at the type).
pub(crate) fn event_impl(
    ident: &Ident,
    name: &LitStr,
    version: u32,
    upcasters: Option<TokenStream>,
    tags: Option<TokenStream>,
) -> TokenStream {
    let p = paths::private_call_site();
    let upcasters =
        upcasters.map(|upcasters| quote!(const UPCASTERS: &'static [#p::Upcaster] = #upcasters;));
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::Event for #ident
            where
                for<'__evoq> #ident: #p::serde::Serialize
                    + #p::serde::de::DeserializeOwned
                    + #p::core::clone::Clone
                    + #p::core::fmt::Debug
                    + #p::core::marker::Send
                    + #p::core::marker::Sync
                    + 'static,
            {
                const NAME: &'static #p::core::primitive::str = #name;
                const VERSION: #p::core::primitive::u32 = #version;
                #upcasters
                #tags
            }
        };
    }
}
