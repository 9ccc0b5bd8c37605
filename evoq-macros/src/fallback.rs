//! What to emit when a macro input has errors: the user's item as it was (helper attributes
//! stripped) and stub impls, so that the `compile_error!`s are the only errors and no
//! "not an Event" / "no route" cascade follows at the places that use the item.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{DeriveInput, Ident, ItemImpl, LitStr};

use crate::model::{AggregateDef, EventHandlerDef, show, variant_ident};
use crate::paths;

/// A stub `Event` impl (none for a generic type: there is no sensible one).
pub(crate) fn event(input: &DeriveInput) -> TokenStream {
    if !input.generics.params.is_empty() {
        return TokenStream::new();
    }
    crate::event::event_impl(&input.ident, &type_name(&input.ident), 1, None, None)
}

/// A stub `Command` impl.
pub(crate) fn command(input: &DeriveInput) -> TokenStream {
    if !input.generics.params.is_empty() {
        return TokenStream::new();
    }
    let p = paths::private_call_site();
    crate::command::command_impl(
        &input.ident,
        &type_name(&input.ident),
        quote!(#p::core::unreachable!()),
        TokenStream::new(),
    )
}

/// The default wire name of a type: its name without `r#`.
pub(crate) fn type_name(ident: &Ident) -> LitStr {
    LitStr::new(&ident.unraw().to_string(), ident.span())
}

/// The impl block (helper attributes already stripped) and, when the block's own header was
/// usable, the event enum and stub `Aggregate`, `EventSet` and `Route` impls.
pub(crate) fn aggregate(item: &ItemImpl, def: Option<&AggregateDef>) -> TokenStream {
    let p = paths::private_call_site();
    let mut tokens = quote! {
        #[allow(dead_code)]
        #item
    };
    let Some(def) = def else {
        return tokens;
    };
    let state = &def.self_ty;
    let event_enum = &def.event_enum;
    let name = &def.name;
    let mut seen = Vec::new();
    // An `#[apply]` of the enum itself is already an error: a variant for it would make the
    // enum contain itself.
    let variants = def.applies.iter().filter(|apply| {
        if apply.variant == *event_enum {
            return false;
        }
        let variant = apply.variant.to_string();
        let fresh = !seen.contains(&variant);
        seen.push(variant);
        fresh
    });
    let variants = variants.map(|apply| {
        let cfgs = &apply.method.cfgs;
        let variant = &apply.variant;
        let ty = apply.event();
        quote!(#(#cfgs)* #variant(#ty),)
    });
    let mut seen = Vec::new();
    let routes = def.handlers.iter().filter(|handler| {
        let command = show(&handler.message);
        let fresh = !seen.contains(&command);
        seen.push(command);
        fresh
    });
    let routes = routes.map(|handler| {
        let cfgs = &handler.cfgs;
        let command = &handler.message;
        quote! {
            #(#cfgs)*
            #[automatically_derived]
            impl #p::Route for #command {
                type Aggregate = #state;

                fn handle(
                    _: &#state,
                    _: &#command,
                ) -> #p::core::result::Result<#p::std::vec::Vec<#event_enum>, #p::Rejection> {
                    #p::core::unreachable!()
                }
            }
        }
    });
    tokens.extend(quote! {
        #[allow(dead_code, private_interfaces, unreachable_pub, missing_docs)]
        pub enum #event_enum {
            #(#variants)*
        }

        const _: () = {
            #[automatically_derived]
            impl #p::core::clone::Clone for #event_enum {
                fn clone(&self) -> Self {
                    #p::core::unreachable!()
                }
            }

            #[automatically_derived]
            impl #p::core::fmt::Debug for #event_enum {
                fn fmt(&self, _: &mut #p::core::fmt::Formatter<'_>) -> #p::core::fmt::Result {
                    #p::core::unreachable!()
                }
            }

            #[automatically_derived]
            impl #p::EventSet for #event_enum {
                const EVENT_TYPES: &'static [&'static #p::core::primitive::str] = &[];

                fn event_type(&self) -> &'static #p::core::primitive::str {
                    #p::core::unreachable!()
                }

                fn schema_version(&self) -> #p::core::primitive::u32 {
                    #p::core::unreachable!()
                }

                fn encode(&self) -> #p::core::result::Result<#p::std::vec::Vec<#p::core::primitive::u8>, #p::serde_json::Error> {
                    #p::core::unreachable!()
                }

                fn decode(
                    _: &#p::core::primitive::str,
                    _: &[#p::core::primitive::u8],
                ) -> #p::core::result::Result<#p::core::option::Option<Self>, #p::serde_json::Error> {
                    #p::core::unreachable!()
                }
            }

            #[automatically_derived]
            impl #p::Aggregate for #state {
                const NAME: &'static #p::core::primitive::str = #name;
                type Event = #event_enum;

                fn apply(&mut self, _: &#event_enum) {}
            }

            #(#routes)*
        };
    });
    tokens
}

/// The impl block (helper attributes already stripped) and, when the block's own header was
/// usable, a stub `EventHandler` impl (so that registering the handler adds no error).
pub(crate) fn event_handler(item: &ItemImpl, def: Option<&EventHandlerDef>) -> TokenStream {
    let p = paths::private_call_site();
    let mut tokens = quote! {
        #[allow(dead_code)]
        #item
    };
    let Some(def) = def else {
        return tokens;
    };
    let handler = &def.self_ty;
    let name = def.name.clone().unwrap_or_else(|| {
        variant_ident(handler).map_or_else(
            || LitStr::new("", proc_macro2::Span::call_site()),
            |ident| type_name(&ident),
        )
    });
    tokens.extend(quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::EventHandler for #handler {
                const NAME: &'static #p::core::primitive::str = #name;
                const EVENT_TYPES: &'static [&'static #p::core::primitive::str] = &[];

                fn handle<'__evoq>(
                    &'__evoq mut self,
                    _: &'__evoq #p::EventMeta,
                ) -> #p::HandlerFuture<'__evoq> {
                    #p::core::unreachable!()
                }
            }
        };
    });
    tokens
}

/// A stub `Projection` impl, so that registering the projection adds no error.
pub(crate) fn projection(def: Option<&EventHandlerDef>) -> TokenStream {
    let p = paths::private_call_site();
    let Some(def) = def else {
        return TokenStream::new();
    };
    let projection = &def.self_ty;
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::Projection for #projection {
                fn read_model(&self) -> &dyn #p::ReadModel {
                    #p::core::unreachable!()
                }
            }
        };
    }
}

/// `impl Saga` that is never called, so that registering the saga adds no error of its own.
pub(crate) fn saga(self_ty: &syn::Type, name: Option<&LitStr>) -> TokenStream {
    let p = paths::private_call_site();
    let name = name
        .cloned()
        .unwrap_or_else(|| LitStr::new("", proc_macro2::Span::call_site()));
    let (json_bounds, json_check) = crate::saga::state_json(self_ty);
    quote! {
        const _: () = {
            #json_check

            #[automatically_derived]
            impl #p::Saga for #self_ty #json_bounds {
                const NAME: &'static #p::core::primitive::str = #name;
                const EVENT_TYPES: &'static [&'static #p::core::primitive::str] = &[];

                fn init(_: &#p::core::primitive::str) -> Self {
                    #p::core::unreachable!()
                }

                fn route(
                    _: &#p::EventMeta,
                ) -> #p::core::result::Result<
                    #p::core::option::Option<#p::SagaStep<Self>>,
                    #p::HandlerFailure,
                > {
                    #p::core::unreachable!()
                }
            }
        };
    }
}
