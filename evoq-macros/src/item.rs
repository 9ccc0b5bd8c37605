//! The item an attribute macro is put on.

use std::fmt::Display;

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::Item;

/// Parses the item an attribute macro is on and picks the kind it takes (`pick` gives any
/// other kind back). Anything else is an error spanned on the item's keyword and name that says
/// where the attribute goes (`wrong_place`), followed by the item unchanged, so there is one
/// error and no cascade.
pub(crate) fn parse_item<T>(
    input: &TokenStream,
    wrong_place: impl Display,
    pick: impl FnOnce(Item) -> Result<T, Box<Item>>,
) -> Result<T, TokenStream> {
    let error = match syn::parse2::<Item>(input.clone()) {
        Ok(item) => match pick(item) {
            Ok(picked) => return Ok(picked),
            Err(other) => syn::Error::new_spanned(item_name(&other), wrong_place),
        },
        Err(error) => error,
    };
    let mut tokens = error.to_compile_error();
    tokens.extend(input.clone());
    Err(tokens)
}

/// The tokens that name an item (`struct BankAccount`), for an error on it.
pub(crate) fn item_name(item: &Item) -> TokenStream {
    match item {
        Item::Struct(item) => {
            let (keyword, ident) = (&item.struct_token, &item.ident);
            quote!(#keyword #ident)
        }
        Item::Enum(item) => {
            let (keyword, ident) = (&item.enum_token, &item.ident);
            quote!(#keyword #ident)
        }
        Item::Fn(item) => {
            let (keyword, ident) = (&item.sig.fn_token, &item.sig.ident);
            quote!(#keyword #ident)
        }
        Item::Trait(item) => {
            let (keyword, ident) = (&item.trait_token, &item.ident);
            quote!(#keyword #ident)
        }
        Item::Mod(item) => {
            let (keyword, ident) = (&item.mod_token, &item.ident);
            quote!(#keyword #ident)
        }
        other => other.to_token_stream().into_iter().take(1).collect(),
    }
}
