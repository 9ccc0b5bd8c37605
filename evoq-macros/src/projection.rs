//! `#[projection]`: an event handler (the same parsing and generation as `#[event_handler]`,
//! see `event_handler.rs`) whose type also implements `Projection`, naming the field that holds
//! its read model.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use crate::model::EventHandlerDef;
use crate::paths;

/// `impl Projection`: the read model is the field named in `read_model = field`.
pub(crate) fn generate(def: &EventHandlerDef) -> TokenStream {
    let p = paths::private_call_site();
    let projection = &def.self_ty;
    let Some(field) = &def.args.read_model else {
        return TokenStream::new();
    };
    let p_at = paths::private(field.span());
    // Spanned at the field's name: a field that is not a read model is one error there.
    let read_model = quote_spanned!(field.span()=> &self.#field as &dyn #p_at::ReadModel);
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::Projection for #projection {
                fn read_model(&self) -> &dyn #p::ReadModel {
                    #read_model
                }
            }
        };
    }
}
