//! The only place that spells the path of the facade's hidden module.
//!
//! Generated code names every runtime item as `::evoq::__private::...`, so user crates depend on
//! `evoq` alone and no user item (a shadowed `Result`, `Vec`, `From`, a missing prelude) can
//! change what the generated code means.

use proc_macro2::{Span, TokenStream};
use quote::quote_spanned;

/// `::evoq::__private`, spanned at `span`.
///
/// Spanning a path at a user token makes a trait-bound failure of the item it names point at
/// that token.
pub(crate) fn private(span: Span) -> TokenStream {
    quote_spanned!(span=> ::evoq::__private)
}

/// `::evoq::__private`, at the macro's call site.
pub(crate) fn private_call_site() -> TokenStream {
    private(Span::call_site())
}
