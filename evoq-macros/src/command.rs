//! `#[derive(Command)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Field, Fields, Ident, Index, LitStr, Member, Meta};

use crate::attr::CommandArgs;
use crate::ctxt::Ctxt;
use crate::model::show;
use crate::symbol;
use crate::{fallback, paths};

/// Expands `#[derive(Command)]` on `input`.
pub(crate) fn expand(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let args = CommandArgs::from_attrs(&cx, &input.attrs);
    let ident = &input.ident;
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            "a command cannot be generic: `#[aggregate]` routes each concrete command type to one aggregate; remove the type and lifetime parameters and define one command type per case",
        );
    }
    let target = match &input.data {
        Data::Struct(data) => aggregate_id_field(&cx, ident, &data.fields),
        Data::Enum(data) => {
            cx.error_spanned_by(
                data.enum_token,
                "a command must be a struct, not an enum: define one struct per command, each with the field that names the target aggregate marked `#[aggregate_id]`",
            );
            None
        }
        Data::Union(data) => {
            cx.error_spanned_by(
                data.union_token,
                "a command must be a struct, not a union: define a struct with the field that names the target aggregate marked `#[aggregate_id]`",
            );
            None
        }
    };
    let (member, field) = match (cx.check(), target) {
        (Ok(()), Some(target)) => target,
        (checked, _) => {
            let mut tokens = checked
                .err()
                .map(|errors| errors.to_compile_error())
                .unwrap_or_default();
            tokens.extend(fallback::command(input));
            return tokens;
        }
    };

    let name = args.name.unwrap_or_else(|| fallback::type_name(ident));
    let ty = &field.ty;
    let p_at_ty = paths::private(ty.span());
    // Spanned at the field's type: "cannot be turned into an aggregate id".
    let to_id = quote_spanned!(ty.span()=> <#ty as #p_at_ty::AggregateId>::to_aggregate_id);
    let p = paths::private_call_site();
    // A string field is lent as it is; any other is formatted by `aggregate_id`.
    let borrowed = quote! {
        fn aggregate_id_str(&self) -> #p::std::borrow::Cow<'_, #p::core::primitive::str> {
            use #p::borrowed_id::{AsStr as _, NotStr as _};
            match (&#p::borrowed_id::Probe(&self.#member)).borrowed() {
                #p::core::option::Option::Some(id) => #p::std::borrow::Cow::Borrowed(id),
                #p::core::option::Option::None => #p::std::borrow::Cow::Owned(
                    <Self as #p::Command>::aggregate_id(self),
                ),
            }
        }
    };
    command_impl(ident, &name, quote!(#to_id(&self.#member)), borrowed)
}

/// The `Command` impl of `ident` whose `aggregate_id` body is `id`, with `more` items (none in
/// the fallback), used by the derive and by its fallback.
pub(crate) fn command_impl(
    ident: &Ident,
    name: &LitStr,
    id: TokenStream,
    more: TokenStream,
) -> TokenStream {
    let p = paths::private_call_site();
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::Command for #ident {
                const NAME: &'static #p::core::primitive::str = #name;

                fn aggregate_id(&self) -> #p::std::string::String {
                    #id
                }

                #more
            }
        };
    }
}

/// The one field marked `#[aggregate_id]`.
fn aggregate_id_field<'f>(
    cx: &Ctxt,
    ident: &syn::Ident,
    fields: &'f Fields,
) -> Option<(Member, &'f Field)> {
    let mut found: Option<(Member, &Field)> = None;
    for (index, field) in fields.iter().enumerate() {
        for attr in field
            .attrs
            .iter()
            .filter(|attr| attr.path() == symbol::AGGREGATE_ID)
        {
            match &attr.meta {
                Meta::Path(_) => {}
                Meta::List(list) => cx.error_spanned_by(
                    &list.tokens,
                    "`#[aggregate_id]` takes no arguments: write `#[aggregate_id]` on the field that names the target aggregate",
                ),
                Meta::NameValue(nv) => cx.error_spanned_by(
                    &nv.value,
                    "`#[aggregate_id]` takes no value: write `#[aggregate_id]` on the field that names the target aggregate",
                ),
            }
            if let Some((first, _)) = &found {
                let first = match first {
                    Member::Named(name) => format!("`{name}`"),
                    Member::Unnamed(index) => format!("field {}", index.index),
                };
                cx.error_spanned_by(
                    attr,
                    format!(
                        "duplicate `#[aggregate_id]`: a command targets one aggregate, so mark exactly one field (it is already on {first}); remove one of them"
                    ),
                );
                continue;
            }
            let member = match &field.ident {
                Some(name) => Member::Named(name.clone()),
                None => Member::Unnamed(Index {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    span: field.ty.span(),
                }),
            };
            found = Some((member, field));
        }
    }
    if found.is_none() {
        let example = match fields.iter().next() {
            Some(Field {
                ident: Some(name),
                ty,
                ..
            }) => format!(
                "mark the field that names the target aggregate, like `#[aggregate_id] {name}: {}`",
                show(ty)
            ),
            Some(Field {
                ident: None, ty, ..
            }) => format!(
                "mark the field that names the target aggregate, like `struct {ident}(#[aggregate_id] {}, ...);`",
                show(ty)
            ),
            None => format!(
                "add the field that names the target aggregate, like `struct {ident} {{ #[aggregate_id] id: String }}`"
            ),
        };
        cx.error_spanned_by(
            ident,
            format!("the command `{ident}` has no field marked `#[aggregate_id]`: {example}"),
        );
    }
    found
}
