//! Rules across the items of one block, checked on the model before anything is generated.
//!
//! The macros see tokens, not types: these rules compare types as written. Whatever they cannot
//! see (two spellings of one type) the generated code leaves to the type system, which rejects
//! it with an error on the same user tokens (conflicting `Route` or `From` impls).

use crate::ctxt::Ctxt;
use crate::model::{AggregateDef, EventHandlerDef, HandlerFn, same_tokens, show};
use crate::symbol::{self, Symbol};

/// Whether two methods exist under the same `#[cfg]`s (only then can they collide).
pub(crate) fn same_cfgs(a: &HandlerFn, b: &HandlerFn) -> bool {
    a.cfgs.len() == b.cfgs.len() && a.cfgs.iter().zip(&b.cfgs).all(|(a, b)| same_tokens(a, b))
}

/// Commands handled twice, events applied twice, variant names that collide.
pub(crate) fn aggregate(cx: &Ctxt, def: &AggregateDef) {
    for (index, handler) in def.handlers.iter().enumerate() {
        if let Some(first) = def.handlers[..index].iter().find(|first| {
            same_cfgs(first, handler) && same_tokens(&first.message, &handler.message)
        }) {
            cx.error_spanned_by(
                &handler.message,
                format!(
                    "the command `{}` is handled twice in this block, by `{}` and by `{}`: a command has exactly one handler; merge them into one method",
                    show(&handler.message),
                    first.ident,
                    handler.ident
                ),
            );
        }
    }

    for (index, apply) in def.applies.iter().enumerate() {
        if apply.variant == def.event_enum {
            cx.error_spanned_by(
                apply.event(),
                format!(
                    "`#[apply]` takes one event type, not the generated enum `{}`: write one `#[apply]` method per event type",
                    def.event_enum
                ),
            );
            continue;
        }
        let earlier = def.applies[..index]
            .iter()
            .filter(|first| same_cfgs(&first.method, &apply.method));
        for first in earlier {
            if same_tokens(first.event(), apply.event()) {
                cx.error_spanned_by(
                    apply.event(),
                    format!(
                        "the event `{}` is applied twice in this block, by `{}` and by `{}`: an event has exactly one `#[apply]` method; merge them into one",
                        show(apply.event()),
                        first.method.ident,
                        apply.method.ident
                    ),
                );
                break;
            }
            if first.variant == apply.variant {
                cx.error_spanned_by(
                    apply.event(),
                    format!(
                        "the events `{}` and `{}` would both be the variant `{}::{}`: if they are one type written twice, remove one of the two `#[apply]` methods (an event has exactly one); if they are two types, import one of them under another name (`use path::{} as OtherName;`) and apply it by that name",
                        show(first.event()),
                        show(apply.event()),
                        def.event_enum,
                        apply.variant,
                        apply.variant
                    ),
                );
                break;
            }
        }
    }
}

/// A name, at least one `#[handles]` method, and one method per event type.
pub(crate) fn event_handler(cx: &Ctxt, def: &EventHandlerDef, attr: Symbol) {
    if def.name.is_none() && !def.args.name_given {
        cx.error_at(
            proc_macro2::Span::call_site(),
            format!(
                "`#[{attr}]` needs a name: write `#[{attr}(name = \"{}\")]`; the name keys the {}'s checkpoint and dead letters in the store, so keep it stable",
                suggested_name(&def.self_ty),
                if attr == symbol::PROJECTION { "projection" } else { "handler" },
            ),
        );
    }
    if attr == symbol::PROJECTION && !def.args.read_model_given {
        cx.error_at(
            proc_macro2::Span::call_site(),
            "`#[projection]` needs its read model: write `read_model = field`, naming the field that holds it (an `InMemoryReadModel`, say); a rebuild clears it",
        );
    }
    if def.handlers.is_empty() {
        cx.error_spanned_by(
            &def.self_ty,
            format!(
                "{} `#[{attr}]` block needs at least one `#[handles]` method, like `#[handles] async fn name(&mut self, event: &SomeEvent, meta: &EventMeta) -> Result<(), SomeError>`",
                if attr == symbol::PROJECTION { "a" } else { "an" }
            ),
        );
    }
    for (index, handler) in def.handlers.iter().enumerate() {
        if let Some(first) = def.handlers[..index].iter().find(|first| {
            same_cfgs(first, handler) && same_tokens(&first.message, &handler.message)
        }) {
            cx.error_spanned_by(
                &handler.message,
                format!(
                    "the event `{}` is handled twice in this block, by `{}` and by `{}`: an event handler has one method per event type; merge them into one",
                    show(&handler.message),
                    first.ident,
                    handler.ident
                ),
            );
        }
    }
}

/// `Notifier` -> `notifier`, `AccountSummary` -> `account_summary`.
pub(crate) fn suggested_name(ty: &syn::Type) -> String {
    let shown = show(ty);
    let last = shown.rsplit("::").next().unwrap_or(&shown);
    let mut name = String::new();
    for (index, c) in last.chars().enumerate() {
        if c.is_uppercase() {
            if index > 0 {
                name.push('_');
            }
            name.extend(c.to_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}
