//! Typed parsing of macro arguments: unknown and duplicate keys are errors spanned on the key,
//! and every message lists the valid keys.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::{Parse, ParseStream, Parser};
use syn::{Attribute, Expr, ExprLit, Ident, Lit, LitInt, LitStr, Meta, Token, Type};

use crate::ctxt::Ctxt;
use crate::symbol::{self, Symbol};

/// A valid key of an attribute, with the way to write it (for error messages).
pub(crate) struct Key {
    pub(crate) symbol: Symbol,
    pub(crate) example: &'static str,
}

const NAME_KEY: Key = Key {
    symbol: symbol::NAME,
    example: "name = \"...\"",
};
const VERSION_KEY: Key = Key {
    symbol: symbol::VERSION,
    example: "version = N",
};
const SNAPSHOT_EVERY_KEY: Key = Key {
    symbol: symbol::SNAPSHOT_EVERY,
    example: "snapshot_every = N",
};
const ATTEMPTS_KEY: Key = Key {
    symbol: symbol::ATTEMPTS,
    example: "attempts = N",
};
const CACHED_KEY: Key = Key {
    symbol: symbol::CACHED,
    example: "cached",
};
const EVENT_ENUM_KEY: Key = Key {
    symbol: symbol::EVENT_ENUM,
    example: "event_enum = Name",
};

const IDLE_TIMEOUT_KEY: Key = Key {
    symbol: symbol::IDLE_TIMEOUT,
    example: "idle_timeout = \"30m\"",
};
const HIBERNATE_AFTER_KEY: Key = Key {
    symbol: symbol::HIBERNATE_AFTER,
    example: "hibernate_after = \"1m\"",
};
const LIFESPAN_KEY: Key = Key {
    symbol: symbol::LIFESPAN,
    example: "lifespan = MyLifespan",
};
const STRONG_KEY: Key = Key {
    symbol: symbol::STRONG,
    example: "strong",
};
const MAX_ATTEMPTS_KEY: Key = Key {
    symbol: symbol::MAX_ATTEMPTS,
    example: "max_attempts = N",
};
const ON_ERROR_KEY: Key = Key {
    symbol: symbol::ON_ERROR,
    example: "on_error = dead_letter | skip | stop",
};
const RETRY_KEY: Key = Key {
    symbol: symbol::RETRY,
    example: "retry = exponential_jitter(\"100ms\", \"10s\")",
};

const READ_MODEL_KEY: Key = Key {
    symbol: symbol::READ_MODEL,
    example: "read_model = field",
};
const FROM_KEY: Key = Key {
    symbol: symbol::FROM,
    example: "from = N",
};
const RENAMED_FROM_KEY: Key = Key {
    symbol: symbol::RENAMED_FROM,
    example: "renamed_from = \"OldName\"",
};

/// The keys of `#[projection(...)]`.
pub(crate) const PROJECTION_KEYS: &[Key] = &[
    NAME_KEY,
    READ_MODEL_KEY,
    STRONG_KEY,
    RETRY_KEY,
    MAX_ATTEMPTS_KEY,
    ON_ERROR_KEY,
];

/// The keys of `#[upcaster(Event, ...)]`.
pub(crate) const UPCASTER_KEYS: &[Key] = &[FROM_KEY, RENAMED_FROM_KEY];

/// The keys of `#[event(...)]`.
pub(crate) const EVENT_KEYS: &[Key] = &[NAME_KEY, VERSION_KEY];

/// The keys of `#[command(...)]`.
pub(crate) const COMMAND_KEYS: &[Key] = &[NAME_KEY];

/// The keys of `#[aggregate(...)]`.
pub(crate) const AGGREGATE_KEYS: &[Key] = &[
    NAME_KEY,
    SNAPSHOT_EVERY_KEY,
    IDLE_TIMEOUT_KEY,
    HIBERNATE_AFTER_KEY,
    LIFESPAN_KEY,
    EVENT_ENUM_KEY,
];

/// The keys of `#[decision(...)]`.
pub(crate) const DECISION_KEYS: &[Key] = &[
    NAME_KEY,
    ATTEMPTS_KEY,
    CACHED_KEY,
    IDLE_TIMEOUT_KEY,
    EVENT_ENUM_KEY,
];

/// The keys of `#[event_handler(...)]`.
pub(crate) const EVENT_HANDLER_KEYS: &[Key] = &[
    NAME_KEY,
    STRONG_KEY,
    RETRY_KEY,
    MAX_ATTEMPTS_KEY,
    ON_ERROR_KEY,
];

/// `` `a`, `b` and `c` ``.
fn list(keys: &[Key]) -> String {
    let quoted: Vec<String> = keys
        .iter()
        .map(|key| format!("`{}`", key.example))
        .collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn valid_keys_sentence(keys: &[Key]) -> String {
    match keys {
        [] => "it takes no arguments".to_owned(),
        [_] => format!("the only valid argument is {}", list(keys)),
        _ => format!("the valid arguments are {}", list(keys)),
    }
}

/// One argument of an attribute: remembers the first value and reports a second one.
pub(crate) struct Attr<'c, T> {
    cx: &'c Ctxt,
    attr: Symbol,
    key: Symbol,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    pub(crate) fn none(cx: &'c Ctxt, attr: Symbol, key: Symbol) -> Self {
        Attr {
            cx,
            attr,
            key,
            value: None,
        }
    }

    /// Sets the value; a second one is an error spanned on `key_tokens`.
    pub(crate) fn set<A: ToTokens>(&mut self, key_tokens: A, value: T) {
        if self.value.is_some() {
            self.cx.error_spanned_by(
                key_tokens,
                format!(
                    "duplicate argument `{}` in `#[{}(...)]`: it is already given above; keep one",
                    self.key, self.attr
                ),
            );
        } else {
            self.value = Some(value);
        }
    }

    pub(crate) fn get(self) -> Option<T> {
        self.value
    }
}

/// Consumes the rest of one argument (up to the next comma), so parsing can go on after an error.
fn skip_argument(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    while !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        meta.input.parse::<TokenTree>()?;
    }
    Ok(())
}

/// Reports an unknown key and skips its value.
fn unknown_key(
    cx: &Ctxt,
    attr: Symbol,
    keys: &[Key],
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<()> {
    let key = meta.path.to_token_stream().to_string().replace(' ', "");
    let hint = keys
        .iter()
        .find(|valid| {
            let valid = valid.symbol.0;
            edit_distance(&key, valid) <= 2 || (key.len() >= 4 && valid.starts_with(&key))
        })
        .map(|valid| format!("did you mean `{}`? ", valid.symbol))
        .unwrap_or_default();
    cx.error_spanned_by(
        &meta.path,
        format!(
            "unknown argument `{key}` in `#[{attr}(...)]`: {hint}{}",
            valid_keys_sentence(keys)
        ),
    );
    skip_argument(meta)
}

/// The Levenshtein distance between two short strings (for "did you mean").
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Parses the value of `key = value`; reports `what to write` when the `=` is missing.
fn value_expr(cx: &Ctxt, key: &Key, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<Expr>> {
    if !meta.input.peek(Token![=]) {
        cx.error_spanned_by(
            &meta.path,
            format!("`{}` needs a value: write `{}`", key.symbol, key.example),
        );
        skip_argument(meta)?;
        return Ok(None);
    }
    Ok(Some(ungroup(meta.value()?.parse::<Expr>()?)))
}

/// The expression inside any invisible groups: a `$value:literal` (or `:expr`) fragment of a
/// `macro_rules!` macro reaches the attribute wrapped in one, and is still the value written.
fn ungroup(mut expr: Expr) -> Expr {
    while let Expr::Group(group) = expr {
        expr = *group.expr;
    }
    expr
}

/// [`ungroup`] by reference: the arguments of `fixed(...)` and `exponential(...)`.
fn ungroup_ref(mut expr: &Expr) -> &Expr {
    while let Expr::Group(group) = expr {
        expr = &group.expr;
    }
    expr
}

/// A string literal: `name = "..."`.
fn parse_lit_str(cx: &Ctxt, key: &Key, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<LitStr>> {
    let Some(expr) = value_expr(cx, key, meta)? else {
        return Ok(None);
    };
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(Some(lit)),
        other => {
            cx.error_spanned_by(
                other,
                format!("expected a string literal: `{} = \"...\"`", key.symbol),
            );
            Ok(None)
        }
    }
}

/// A non-empty string literal: `name = "..."`.
fn parse_name(cx: &Ctxt, key: &Key, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<LitStr>> {
    let Some(lit) = parse_lit_str(cx, key, meta)? else {
        return Ok(None);
    };
    if lit.value().trim().is_empty() {
        cx.error_spanned_by(
            &lit,
            format!(
                "`{}` cannot be empty: write a stable name, like `{} = \"AccountOpened\"`",
                key.symbol, key.symbol
            ),
        );
        return Ok(None);
    }
    Ok(Some(lit))
}

/// The name of `#[aggregate(name = "...")]`: a string literal that can begin a stream id.
fn parse_aggregate_name(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<LitStr>> {
    let Some(lit) = parse_lit_str(cx, &NAME_KEY, meta)? else {
        return Ok(None);
    };
    match aggregate_name_problem(&lit.value()) {
        Some(problem) => {
            cx.error_spanned_by(&lit, problem);
            Ok(None)
        }
        None => Ok(Some(lit)),
    }
}

/// What is wrong with `name` as an aggregate name, if anything. A stream id is
/// `<name>-<id>` and ids may contain `-`: the name must be non-empty and free of `-` for the
/// first `-` to end it, so that two aggregates never share a stream.
fn aggregate_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some(
            "the aggregate name cannot be empty: it begins every stream id of the aggregate (`<name>-<id>`); write a stable name without `-`, like `name = \"BankAccount\"`, or leave `name` out to use the type's name".to_owned(),
        );
    }
    if !name.contains('-') {
        return None;
    }
    let without: String = name.chars().filter(|&c| c != '-').collect();
    let suggestion = if without.trim().is_empty() {
        "BankAccount".to_owned()
    } else {
        without
    };
    Some(format!(
        "the aggregate name `{name}` contains `-`, which separates the name from the id in stream ids (`<name>-<id>`): two aggregates could then share a stream; choose a name without `-` (e.g. `{suggestion}`)"
    ))
}

/// A positive integer literal: `version = 2`.
fn parse_positive<N>(
    cx: &Ctxt,
    key: &Key,
    meta: &ParseNestedMeta<'_>,
    zero_hint: &str,
) -> syn::Result<Option<(LitInt, N)>>
where
    N: std::str::FromStr + PartialEq + From<u8>,
    N::Err: std::fmt::Display,
{
    let Some(expr) = value_expr(cx, key, meta)? else {
        return Ok(None);
    };
    let Expr::Lit(ExprLit {
        lit: Lit::Int(lit), ..
    }) = expr
    else {
        cx.error_spanned_by(
            expr,
            format!(
                "expected a number without quotes, like `{}`",
                key.example.replace('N', "2")
            ),
        );
        return Ok(None);
    };
    match lit.base10_parse::<N>() {
        Ok(value) if value == N::from(0) => {
            cx.error_spanned_by(&lit, format!("`{}` cannot be 0: {zero_hint}", key.symbol));
            Ok(None)
        }
        Ok(value) => Ok(Some((lit, value))),
        Err(error) => {
            cx.error_spanned_by(&lit, format!("invalid `{}`: {error}", key.symbol));
            Ok(None)
        }
    }
}

/// A duration string: `idle_timeout = "30m"` ([`grammar_millis`]); with `never_ok`, also
/// `"never"` (the inner `None`). The outer `None` means an error was reported.
fn parse_duration(
    cx: &Ctxt,
    key: &Key,
    meta: &ParseNestedMeta<'_>,
    never_ok: bool,
) -> syn::Result<Option<Option<u64>>> {
    let Some(expr) = value_expr(cx, key, meta)? else {
        return Ok(None);
    };
    let never = if never_ok { ", or \"never\"" } else { "" };
    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = &expr
    else {
        cx.error_spanned_by(
            &expr,
            format!(
                "expected a duration string, like `{}` (units ms, s, m, h{never})",
                key.example
            ),
        );
        return Ok(None);
    };
    let text = lit.value();
    let text = text.trim();
    if never_ok && text == "never" {
        return Ok(Some(None));
    }
    match grammar_millis(text) {
        Ok(0) => {
            cx.error_spanned_by(
                lit,
                format!(
                    "`{}` cannot be zero: write a duration like `{}`{never}",
                    key.symbol, key.example
                ),
            );
            Ok(None)
        }
        Ok(millis) => Ok(Some(Some(millis))),
        Err(bad) => {
            let message = bad.message(text, || {
                format!(
                    "`{text}` is not a duration: write a whole number and a unit, like `{}` (units ms, s, m, h{never})",
                    key.example
                )
            });
            cx.error_spanned_by(lit, message);
            Ok(None)
        }
    }
}

/// An identifier: `event_enum = Name`.
fn parse_ident(cx: &Ctxt, key: &Key, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<Ident>> {
    let Some(expr) = value_expr(cx, key, meta)? else {
        return Ok(None);
    };
    if let Expr::Path(path) = &expr
        && path.qself.is_none()
        && path.attrs.is_empty()
        && let Some(ident) = path.path.get_ident()
    {
        return Ok(Some(ident.clone()));
    }
    cx.error_spanned_by(
        expr,
        format!(
            "expected a plain identifier for the name of the generated enum: `{} = BankAccountEvent`",
            key.symbol
        ),
    );
    Ok(None)
}

/// Runs `parse` over the arguments of a `#[name(...)]` attribute; a bare `#[name]` is fine,
/// `#[name = ...]` is an error.
fn parse_list_attr(
    cx: &Ctxt,
    attr: &Attribute,
    name: Symbol,
    keys: &[Key],
    parse: impl FnMut(ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    match &attr.meta {
        Meta::Path(_) => {}
        Meta::NameValue(nv) => cx.error_spanned_by(
            &nv.value,
            format!("expected `#[{name}({})]`", list(keys).replace('`', "")),
        ),
        Meta::List(_) => {
            if let Err(error) = attr.parse_nested_meta(parse) {
                cx.syn_error(error);
            }
        }
    }
}

/// The arguments of every `#[event(...)]` attribute of a type.
pub(crate) struct EventArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<(LitInt, u32)>,
}

impl EventArgs {
    pub(crate) fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut name = Attr::none(cx, symbol::EVENT, symbol::NAME);
        let mut version = Attr::none(cx, symbol::EVENT, symbol::VERSION);
        for attr in attrs.iter().filter(|attr| attr.path() == symbol::EVENT) {
            parse_list_attr(cx, attr, symbol::EVENT, EVENT_KEYS, |meta| {
                if meta.path == symbol::NAME {
                    if let Some(value) = parse_name(cx, &NAME_KEY, &meta)? {
                        name.set(&meta.path, value);
                    }
                } else if meta.path == symbol::VERSION {
                    let hint = "schema versions start at 1 (the default); write `version = 1` or leave it out";
                    if let Some(value) = parse_positive::<u32>(cx, &VERSION_KEY, &meta, hint)? {
                        version.set(&meta.path, value);
                    }
                } else {
                    unknown_key(cx, symbol::EVENT, EVENT_KEYS, &meta)?;
                }
                Ok(())
            });
        }
        EventArgs {
            name: name.get(),
            version: version.get(),
        }
    }
}

/// The arguments of every `#[command(...)]` attribute of a type.
pub(crate) struct CommandArgs {
    pub(crate) name: Option<LitStr>,
}

impl CommandArgs {
    pub(crate) fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut name = Attr::none(cx, symbol::COMMAND, symbol::NAME);
        for attr in attrs.iter().filter(|attr| attr.path() == symbol::COMMAND) {
            parse_list_attr(cx, attr, symbol::COMMAND, COMMAND_KEYS, |meta| {
                if meta.path == symbol::NAME {
                    if let Some(value) = parse_name(cx, &NAME_KEY, &meta)? {
                        name.set(&meta.path, value);
                    }
                } else {
                    unknown_key(cx, symbol::COMMAND, COMMAND_KEYS, &meta)?;
                }
                Ok(())
            });
        }
        CommandArgs { name: name.get() }
    }
}

/// The arguments of `#[aggregate(...)]`.
pub(crate) struct AggregateArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) snapshot_every: Option<(LitInt, u64)>,
    /// Milliseconds.
    pub(crate) idle_timeout: Option<u64>,
    /// Milliseconds; `None` inside for `"never"`.
    pub(crate) hibernate_after: Option<Option<u64>>,
    pub(crate) lifespan: Option<Type>,
    pub(crate) event_enum: Option<Ident>,
}

impl AggregateArgs {
    pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> Self {
        let mut name = Attr::none(cx, symbol::AGGREGATE, symbol::NAME);
        let mut snapshot_every = Attr::none(cx, symbol::AGGREGATE, symbol::SNAPSHOT_EVERY);
        let mut event_enum = Attr::none(cx, symbol::AGGREGATE, symbol::EVENT_ENUM);
        let mut idle_timeout = Attr::none(cx, symbol::AGGREGATE, symbol::IDLE_TIMEOUT);
        let mut hibernate_after = Attr::none(cx, symbol::AGGREGATE, symbol::HIBERNATE_AFTER);
        let mut lifespan = Attr::none(cx, symbol::AGGREGATE, symbol::LIFESPAN);
        let parser = syn::meta::parser(|meta| {
            if meta.path == symbol::NAME {
                if let Some(value) = parse_aggregate_name(cx, &meta)? {
                    name.set(&meta.path, value);
                }
            } else if meta.path == symbol::SNAPSHOT_EVERY {
                let hint = "write a number of events, like `snapshot_every = 100` (the default)";
                if let Some(value) = parse_positive::<u64>(cx, &SNAPSHOT_EVERY_KEY, &meta, hint)? {
                    snapshot_every.set(&meta.path, value);
                }
            } else if meta.path == symbol::EVENT_ENUM {
                if let Some(value) = parse_ident(cx, &EVENT_ENUM_KEY, &meta)? {
                    event_enum.set(&meta.path, value);
                }
            } else if meta.path == symbol::IDLE_TIMEOUT {
                if let Some(Some(value)) = parse_duration(cx, &IDLE_TIMEOUT_KEY, &meta, false)? {
                    idle_timeout.set(&meta.path, value);
                }
            } else if meta.path == symbol::HIBERNATE_AFTER {
                if let Some(value) = parse_duration(cx, &HIBERNATE_AFTER_KEY, &meta, true)? {
                    hibernate_after.set(&meta.path, value);
                }
            } else if meta.path == symbol::LIFESPAN {
                if let Some(expr) = value_expr(cx, &LIFESPAN_KEY, &meta)? {
                    match syn::parse2::<Type>(expr.to_token_stream()) {
                        Ok(ty) => lifespan.set(&meta.path, ty),
                        Err(_) => cx.error_spanned_by(
                            &expr,
                            "expected a type that implements `evoq::Lifespan<Self>` and `Default`: `lifespan = MyLifespan`",
                        ),
                    }
                }
            } else {
                unknown_key(cx, symbol::AGGREGATE, AGGREGATE_KEYS, &meta)?;
            }
            Ok(())
        });
        if let Err(error) = parser.parse2(args) {
            cx.syn_error(error);
        }
        AggregateArgs {
            name: name.get(),
            snapshot_every: snapshot_every.get(),
            idle_timeout: idle_timeout.get(),
            hibernate_after: hibernate_after.get(),
            lifespan: lifespan.get(),
            event_enum: event_enum.get(),
        }
    }
}

/// The arguments of `#[decision(...)]`: those it shares with `#[aggregate]`, and its budget.
pub(crate) struct DecisionArgs {
    pub(crate) shared: AggregateArgs,
    pub(crate) attempts: Option<u32>,
    pub(crate) cached: bool,
}

impl DecisionArgs {
    pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> Self {
        let mut name = Attr::none(cx, symbol::DECISION, symbol::NAME);
        let mut event_enum = Attr::none(cx, symbol::DECISION, symbol::EVENT_ENUM);
        let mut attempts = Attr::none(cx, symbol::DECISION, symbol::ATTEMPTS);
        let mut cached = Attr::none(cx, symbol::DECISION, symbol::CACHED);
        let mut idle_timeout = Attr::none(cx, symbol::DECISION, symbol::IDLE_TIMEOUT);
        let parser = syn::meta::parser(|meta| {
            if meta.path == symbol::NAME {
                if let Some(value) = parse_aggregate_name(cx, &meta)? {
                    name.set(&meta.path, value);
                }
            } else if meta.path == symbol::EVENT_ENUM {
                if let Some(value) = parse_ident(cx, &EVENT_ENUM_KEY, &meta)? {
                    event_enum.set(&meta.path, value);
                }
            } else if meta.path == symbol::ATTEMPTS {
                let hint = "write how many times a command may be decided in all, like `attempts = 5` (at least 1)";
                if let Some((_, value)) = parse_positive::<u32>(cx, &ATTEMPTS_KEY, &meta, hint)? {
                    attempts.set(&meta.path, value);
                }
            } else if meta.path == symbol::CACHED {
                if meta.input.is_empty() || meta.input.peek(Token![,]) {
                    cached.set(&meta.path, ());
                } else {
                    cx.error_spanned_by(
                        &meta.path,
                        "`cached` takes no value: write `cached` to keep the decision's model per boundary between commands, or leave it out",
                    );
                    skip_argument(&meta)?;
                }
            } else if meta.path == symbol::IDLE_TIMEOUT {
                if let Some(Some(value)) = parse_duration(cx, &IDLE_TIMEOUT_KEY, &meta, false)? {
                    idle_timeout.set(&meta.path, value);
                }
            } else {
                unknown_key(cx, symbol::DECISION, DECISION_KEYS, &meta)?;
            }
            Ok(())
        });
        if let Err(error) = parser.parse2(args) {
            cx.syn_error(error);
        }
        DecisionArgs {
            shared: AggregateArgs {
                name: name.get(),
                snapshot_every: None,
                idle_timeout: idle_timeout.get(),
                hibernate_after: None,
                lifespan: None,
                event_enum: event_enum.get(),
            },
            attempts: attempts.get(),
            cached: cached.get().is_some(),
        }
    }
}

/// `on_error = ...` of `#[event_handler]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnError {
    DeadLetter,
    Skip,
    Stop,
}

/// `retry = ...` of `#[event_handler]`, durations in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    Immediate,
    Fixed(u64),
    Exponential { base: u64, max: u64 },
    ExponentialJitter { base: u64, max: u64 },
}

/// The arguments of `#[event_handler(...)]`.
pub(crate) struct EventHandlerArgs {
    pub(crate) name: Option<LitStr>,
    /// Whether `name` was written (even with a bad value).
    pub(crate) name_given: bool,
    pub(crate) strong: bool,
    pub(crate) retry: Option<Retry>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) on_error: Option<OnError>,
    /// `read_model = field` (projections only).
    pub(crate) read_model: Option<Ident>,
    /// Whether `read_model` was written (even with a bad value).
    pub(crate) read_model_given: bool,
}

impl EventHandlerArgs {
    /// The arguments of `#[event_handler(...)]` (`attr`, `keys`) or `#[projection(...)]`.
    pub(crate) fn parse(cx: &Ctxt, args: TokenStream, attr: Symbol, keys: &[Key]) -> Self {
        let mut read_model = Attr::none(cx, attr, symbol::READ_MODEL);
        let takes_read_model = keys.iter().any(|key| key.symbol == symbol::READ_MODEL);
        let mut read_model_given = false;
        let mut name = Attr::none(cx, attr, symbol::NAME);
        let mut strong = Attr::none(cx, attr, symbol::STRONG);
        let mut retry = Attr::none(cx, attr, symbol::RETRY);
        let mut max_attempts = Attr::none(cx, attr, symbol::MAX_ATTEMPTS);
        let mut on_error = Attr::none(cx, attr, symbol::ON_ERROR);
        let mut name_given = false;
        let parser = syn::meta::parser(|meta| {
            if meta.path == symbol::NAME {
                name_given = true;
                if let Some(value) = parse_name(cx, &NAME_KEY, &meta)? {
                    name.set(&meta.path, value);
                }
            } else if meta.path == symbol::STRONG {
                if meta.input.is_empty() || meta.input.peek(Token![,]) {
                    strong.set(&meta.path, ());
                } else {
                    cx.error_spanned_by(
                        &meta.path,
                        "`strong` takes no value: write `strong` to make `Consistency::Strong` dispatches wait for this handler, or leave it out",
                    );
                    skip_argument(&meta)?;
                }
            } else if meta.path == symbol::MAX_ATTEMPTS {
                let hint = "it counts every delivery, the first included: write `max_attempts = 1` for no retry (the default is 6)";
                if let Some((_, value)) = parse_positive::<u32>(cx, &MAX_ATTEMPTS_KEY, &meta, hint)?
                {
                    max_attempts.set(&meta.path, value);
                }
            } else if meta.path == symbol::ON_ERROR {
                if let Some(value) = parse_on_error(cx, &meta)? {
                    on_error.set(&meta.path, value);
                }
            } else if meta.path == symbol::RETRY {
                if let Some(value) = parse_retry(cx, &meta)? {
                    retry.set(&meta.path, value);
                }
            } else if takes_read_model && meta.path == symbol::READ_MODEL {
                read_model_given = true;
                if let Some(expr) = value_expr(cx, &READ_MODEL_KEY, &meta)? {
                    match &expr {
                        Expr::Path(path) if path.qself.is_none() && path.path.get_ident().is_some() => {
                            if let Some(ident) = path.path.get_ident() {
                                read_model.set(&meta.path, ident.clone());
                            }
                        }
                        other => cx.error_spanned_by(
                            other,
                            "expected the name of the field that holds the read model: `read_model = summaries`",
                        ),
                    }
                }
            } else {
                unknown_key(cx, attr, keys, &meta)?;
            }
            Ok(())
        });
        if let Err(error) = parser.parse2(args) {
            cx.syn_error(error);
        }
        EventHandlerArgs {
            read_model: read_model.get(),
            read_model_given,
            name: name.get(),
            name_given,
            strong: strong.get().is_some(),
            retry: retry.get(),
            max_attempts: max_attempts.get(),
            on_error: on_error.get(),
        }
    }
}

/// `on_error = dead_letter | skip | stop`.
fn parse_on_error(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<OnError>> {
    let Some(expr) = value_expr(cx, &ON_ERROR_KEY, meta)? else {
        return Ok(None);
    };
    let value = match &expr {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            let path = &path.path;
            if path == symbol::DEAD_LETTER {
                Some(OnError::DeadLetter)
            } else if path == symbol::SKIP {
                Some(OnError::Skip)
            } else if path == symbol::STOP {
                Some(OnError::Stop)
            } else {
                None
            }
        }
        _ => None,
    };
    if value.is_none() {
        cx.error_spanned_by(
            &expr,
            "expected `dead_letter` (store the event and go on, the default), `skip` (go on without a dead letter) or `stop` (stop the handler before the event)",
        );
    }
    Ok(value)
}

/// `retry = immediate | fixed("1s") | exponential("100ms", "10s") | exponential_jitter(...)`.
fn parse_retry(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<Retry>> {
    const HINT: &str = "expected `immediate`, `fixed(\"1s\")`, `exponential(\"100ms\", \"10s\")` or `exponential_jitter(\"100ms\", \"10s\")` (a base delay and a maximum; units `ms`, `s`, `m`, `h`)";
    let Some(expr) = value_expr(cx, &RETRY_KEY, meta)? else {
        return Ok(None);
    };
    let (func, args): (&syn::Path, Vec<&Expr>) = match &expr {
        Expr::Path(path) if path.qself.is_none() => (&path.path, Vec::new()),
        Expr::Call(call) => match ungroup_ref(&call.func) {
            Expr::Path(path) if path.qself.is_none() => (&path.path, call.args.iter().collect()),
            _ => {
                cx.error_spanned_by(&expr, HINT);
                return Ok(None);
            }
        },
        _ => {
            cx.error_spanned_by(&expr, HINT);
            return Ok(None);
        }
    };
    let arity = if func == symbol::IMMEDIATE {
        0
    } else if func == symbol::FIXED {
        1
    } else if func == symbol::EXPONENTIAL || func == symbol::EXPONENTIAL_JITTER {
        2
    } else {
        cx.error_spanned_by(func, HINT);
        return Ok(None);
    };
    if args.len() != arity || (arity == 0 && matches!(expr, Expr::Call(_))) {
        let shape = match arity {
            0 => "`immediate` takes no delay: write `retry = immediate`",
            1 => "`fixed` takes one delay: write `retry = fixed(\"1s\")`",
            _ => {
                "it takes a base delay and a maximum: write `retry = exponential(\"100ms\", \"10s\")`"
            }
        };
        cx.error_spanned_by(&expr, shape);
        return Ok(None);
    }
    let args: Vec<&Expr> = args.into_iter().map(ungroup_ref).collect();
    let mut millis = Vec::with_capacity(args.len());
    for arg in &args {
        match duration_millis(arg) {
            Ok(ms) => millis.push(ms),
            Err(message) => {
                cx.error_spanned_by(arg, message);
                return Ok(None);
            }
        }
    }
    Ok(match millis.as_slice() {
        [] => Some(Retry::Immediate),
        [delay] => Some(Retry::Fixed(*delay)),
        [base, max] => {
            if *base == 0 {
                cx.error_spanned_by(
                    args[0],
                    "an exponential retry needs a base delay above zero; write `retry = immediate` to retry at once",
                );
                None
            } else if max < base {
                cx.error_spanned_by(
                    args[1],
                    "the maximum delay of an exponential retry cannot be below its base delay",
                );
                None
            } else if func == symbol::EXPONENTIAL {
                Some(Retry::Exponential {
                    base: *base,
                    max: *max,
                })
            } else {
                Some(Retry::ExponentialJitter {
                    base: *base,
                    max: *max,
                })
            }
        }
        _ => None,
    })
}

/// Milliseconds of a duration string in the framework's one duration grammar, the one the
/// runtime's configuration reads too (`humantime`: `"250ms"`, `"10s"`, `"30m"` or `"30min"`,
/// `"1h 30m"`); `None` when the text is not a duration or is too long.
fn grammar_millis(text: &str) -> Result<u64, BadDuration> {
    let duration = humantime::parse_duration(text.trim()).map_err(|error| match error {
        humantime::DurationError::NumberOverflow => BadDuration::TooLong,
        _ => BadDuration::NotADuration,
    })?;
    if !duration.is_zero() && duration.as_millis() == 0 {
        return Err(BadDuration::BelowAMillisecond);
    }
    u64::try_from(duration.as_millis()).map_err(|_| BadDuration::TooLong)
}

/// Why a string is not a duration an attribute can take.
#[derive(Debug, PartialEq, Eq)]
enum BadDuration {
    /// Not of the grammar.
    NotADuration,
    /// More milliseconds than fit in 64 bits.
    TooLong,
    /// Above zero but below a millisecond (attributes count whole milliseconds).
    BelowAMillisecond,
}

impl BadDuration {
    /// The sentence for `text`; `format` is the sentence for a text that is not a duration.
    fn message(&self, text: &str, format: impl FnOnce() -> String) -> String {
        match self {
            BadDuration::NotADuration => format(),
            BadDuration::TooLong => format!("`{text}` is too long a duration"),
            BadDuration::BelowAMillisecond => format!(
                "`{text}` is shorter than a millisecond: attributes count whole milliseconds, write at least \"1ms\""
            ),
        }
    }
}

/// A duration literal such as `"100ms"`, `"2s"`, `"5m"` or `"1h"`, in milliseconds.
fn duration_millis(expr: &Expr) -> Result<u64, String> {
    const FORMAT: &str =
        "expected a duration as a string with a unit: `\"100ms\"`, `\"2s\"`, `\"5m\"` or `\"1h\"`";
    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = expr
    else {
        return Err(FORMAT.to_owned());
    };
    let text = lit.value();
    grammar_millis(&text).map_err(|bad| bad.message(&text, || FORMAT.to_owned()))
}

/// The arguments of a helper attribute on a method (`#[handles]`, `#[apply]`, and later the
/// helpers of `#[event_handler]`, `#[saga]` and `#[projection]`): nothing, or the message type
/// the method takes (`#[handles(Deposit)]`), which is then checked against the signature.
pub(crate) struct HelperArgs {
    /// The message type named in the attribute, if any.
    pub(crate) message: Option<Type>,
    /// `by = field` (the saga helpers): the event field that correlates the event.
    pub(crate) by: Option<Ident>,
}

/// What a helper attribute's argument list may hold.
enum HelperArg {
    /// `key = value` or `key(...)`: only the saga helpers take one (`by = field`).
    Named(syn::Path, TokenStream),
    Type(Type),
}

impl Parse for HelperArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let fork = input.fork();
        if fork.parse::<syn::Path>().is_ok()
            && (fork.peek(Token![=]) || fork.peek(syn::token::Paren))
        {
            let path: syn::Path = input.parse()?;
            let mut value = TokenStream::new();
            if input.peek(Token![=]) {
                input.parse::<Token![=]>()?;
            }
            while !input.is_empty() && !input.peek(Token![,]) {
                value.extend([input.parse::<TokenTree>()?]);
            }
            return Ok(HelperArg::Named(path, value));
        }
        input.parse().map(HelperArg::Type)
    }
}

impl HelperArgs {
    /// Parses `#[attr]` or `#[attr(MessageType)]`; `noun` names the message in messages
    /// ("command", "event").
    #[cfg(test)]
    pub(crate) fn from_attr(cx: &Ctxt, attr: &Attribute, name: Symbol, noun: &str) -> Self {
        Self::parse_helper(cx, attr, name, noun, false)
    }

    /// Parses a helper's arguments; `correlated`: it takes `by = field` (the saga helpers),
    /// and requires it.
    pub(crate) fn parse_helper(
        cx: &Ctxt,
        attr: &Attribute,
        name: Symbol,
        noun: &str,
        correlated: bool,
    ) -> Self {
        let reported = cx.error_count();
        let mut parsed = Self::parse_args(cx, attr, name, noun, correlated);
        // A `by` written wrong was reported where it is: not missing as well.
        if correlated && parsed.by.is_none() && cx.error_count() == reported {
            cx.error_spanned_by(
                attr,
                format!("`#[{name}]` needs the event field that names the saga instance: write `#[{name}(by = field)]`"),
            );
            parsed.by = None;
        }
        parsed
    }

    fn parse_args(cx: &Ctxt, attr: &Attribute, name: Symbol, noun: &str, correlated: bool) -> Self {
        let hint = if correlated {
            format!(
                "write `#[{name}(by = field)]`, naming the event field that correlates it to a saga instance"
            )
        } else {
            format!(
                "write `#[{name}]` to take the {noun} type from the signature, or `#[{name}(SomeType)]` to name it"
            )
        };
        let tokens = match &attr.meta {
            Meta::Path(_) => {
                return HelperArgs {
                    message: None,
                    by: None,
                };
            }
            Meta::NameValue(nv) => {
                cx.error_spanned_by(&nv.value, format!("`#[{name} = ...]` is not valid: {hint}"));
                return HelperArgs {
                    message: None,
                    by: None,
                };
            }
            Meta::List(list) => list.tokens.clone(),
        };
        let parsed =
            syn::punctuated::Punctuated::<HelperArg, Token![,]>::parse_terminated.parse2(tokens);
        let args = match parsed {
            Ok(args) => args,
            Err(error) => {
                cx.error_at(error.span(), format!("expected a type: {hint}"));
                return HelperArgs {
                    message: None,
                    by: None,
                };
            }
        };
        let mut message = None;
        let mut by: Option<Ident> = None;
        for arg in args {
            match arg {
                HelperArg::Named(path, value) if correlated && path == symbol::BY => {
                    match syn::parse2::<Ident>(value.clone()) {
                        Ok(field) if by.is_none() => by = Some(field),
                        Ok(field) => cx.error_spanned_by(
                            &field,
                            format!("duplicate `by` in `#[{name}(...)]`: write it once"),
                        ),
                        Err(_) => cx.error_spanned_by(
                            if value.is_empty() {
                                path.to_token_stream()
                            } else {
                                value
                            },
                            format!(
                                "`by` names a field of the event: write `#[{name}(by = field)]`"
                            ),
                        ),
                    }
                }
                HelperArg::Named(path, _) => {
                    let key = path.to_token_stream().to_string().replace(' ', "");
                    cx.error_spanned_by(
                        &path,
                        if correlated {
                            format!("unknown argument `{key}` in `#[{name}(...)]`: it takes `by = field` only; {hint}")
                        } else {
                            format!("unknown argument `{key}` in `#[{name}(...)]`: it takes no named arguments; {hint}")
                        },
                    );
                }
                HelperArg::Type(ty) => {
                    if message.is_some() {
                        cx.error_spanned_by(
                            &ty,
                            format!("duplicate argument in `#[{name}(...)]`: it names one {noun} type; {hint}"),
                        );
                    } else {
                        message = Some(ty);
                    }
                }
            }
        }
        HelperArgs { message, by }
    }
}

/// Whether `attr` is the helper attribute `name` (`#[name]`, `#[evoq::name]`, `#[::evoq::name]`).
pub(crate) fn is_helper(attr: &Attribute, name: Symbol) -> bool {
    let path = attr.path();
    match path.segments.len() {
        1 => path.leading_colon.is_none() && path.segments[0].ident == name,
        2 => path.segments[0].ident == symbol::EVOQ && path.segments[1].ident == name,
        _ => false,
    }
}

/// The `#[cfg(...)]` attributes of an item, to copy onto what is generated for it.
pub(crate) fn cfgs(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|attr| attr.path() == symbol::CFG)
        .cloned()
        .collect()
}

/// The arguments of `#[upcaster(Event, from = N, renamed_from = "Old")]`.
pub(crate) struct UpcasterArgs {
    pub(crate) event: Option<Type>,
    pub(crate) from: Option<(LitInt, u32)>,
    pub(crate) renamed_from: Option<LitStr>,
}

impl UpcasterArgs {
    pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> Self {
        let attr = symbol::UPCASTER;
        let mut from = Attr::none(cx, attr, symbol::FROM);
        let mut renamed_from = Attr::none(cx, attr, symbol::RENAMED_FROM);
        let event = (|input: ParseStream<'_>| -> syn::Result<(Type, TokenStream)> {
            let event: Type = input.parse()?;
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
            Ok((event, input.parse()?))
        })
        .parse2(args);
        let (event, rest) = match event {
            Ok(parsed) => parsed,
            Err(_) => {
                cx.error_at(
                    proc_macro2::Span::call_site(),
                    "`#[upcaster]` names the event type first: `#[upcaster(MoneyDeposited, from = 1)]`",
                );
                return UpcasterArgs {
                    event: None,
                    from: None,
                    renamed_from: None,
                };
            }
        };
        let mut from_given = false;
        let parser = syn::meta::parser(|meta| {
            if meta.path == symbol::FROM {
                from_given = true;
                let hint = "versions start at 1: `from = 1` reads the data stored at version 1";
                if let Some(value) = parse_positive::<u32>(cx, &FROM_KEY, &meta, hint)? {
                    from.set(&meta.path, value);
                }
            } else if meta.path == symbol::RENAMED_FROM {
                if let Some(value) = parse_name(cx, &RENAMED_FROM_KEY, &meta)? {
                    renamed_from.set(&meta.path, value);
                }
            } else {
                unknown_key(cx, attr, UPCASTER_KEYS, &meta)?;
            }
            Ok(())
        });
        if let Err(error) = parser.parse2(rest) {
            cx.syn_error(error);
        }
        let from = from.get();
        if !from_given {
            cx.error_spanned_by(
                &event,
                "`#[upcaster]` needs the version it reads: `#[upcaster(Event, from = 1)]` turns data stored at version 1 into version 2",
            );
        }
        UpcasterArgs {
            event: Some(event),
            from,
            renamed_from: renamed_from.get(),
        }
    }
}

#[cfg(test)]
mod duration_tests {
    use super::{BadDuration, grammar_millis};

    #[test]
    fn attributes_read_the_durations_the_configuration_reads() {
        assert_eq!(grammar_millis("250ms"), Ok(250));
        assert_eq!(grammar_millis("30m"), Ok(1_800_000));
        assert_eq!(grammar_millis("30min"), Ok(1_800_000));
        assert_eq!(grammar_millis(" 1h 30m "), Ok(5_400_000));
        assert_eq!(grammar_millis("0s"), Ok(0));
        assert_eq!(
            grammar_millis("30 fortnights"),
            Err(BadDuration::NotADuration)
        );
        assert_eq!(grammar_millis("60"), Err(BadDuration::NotADuration));
        assert_eq!(grammar_millis("500us"), Err(BadDuration::BelowAMillisecond));
        assert_eq!(
            grammar_millis("99999999999999999999999h"),
            Err(BadDuration::TooLong)
        );
    }
}
