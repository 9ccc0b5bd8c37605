//! Unit tests of parsing and expansion, on `proc_macro2` tokens.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, parse_quote};

use crate::attr::HelperArgs;
use crate::ctxt::Ctxt;
use crate::model::{AggregateDef, Output, show};
use crate::symbol;

/// The messages of the `compile_error!`s in `tokens`.
fn errors(tokens: &TokenStream) -> Vec<String> {
    let mut found = Vec::new();
    let mut iter = tokens.clone().into_iter().peekable();
    while let Some(tree) = iter.next() {
        if let proc_macro2::TokenTree::Ident(ident) = &tree
            && ident == "compile_error"
        {
            iter.next(); // `!`
            if let Some(proc_macro2::TokenTree::Group(group)) = iter.next() {
                let literal: syn::LitStr = syn::parse2(group.stream()).expect("a string literal");
                found.push(literal.value());
            }
        } else if let proc_macro2::TokenTree::Group(group) = &tree {
            found.extend(errors(&group.stream()));
        }
    }
    found
}

/// The expansion parses as Rust items.
fn parses(tokens: &TokenStream) -> syn::File {
    syn::parse2(tokens.clone()).expect("the expansion is valid Rust")
}

fn squeeze(tokens: &TokenStream) -> String {
    tokens.to_string().replace(' ', "")
}

#[test]
fn event_defaults_to_the_type_name_and_version_1() {
    let input: DeriveInput = parse_quote!(
        struct AccountOpened;
    );
    let out = crate::event::expand(&input);
    assert!(errors(&out).is_empty());
    parses(&out);
    let text = squeeze(&out);
    assert!(text.contains("=\"AccountOpened\";"), "{text}");
    assert!(
        text.contains("constVERSION:::evoq::__private::core::primitive::u32=1u32;"),
        "{text}"
    );
}

#[test]
fn event_arguments_set_name_and_version() {
    let input: DeriveInput = parse_quote!(
        #[event(name = "bank.Opened")]
        #[event(version = 3)]
        struct AccountOpened;
    );
    let text = squeeze(&crate::event::expand(&input));
    assert!(text.contains("=\"bank.Opened\";"), "{text}");
    assert!(text.contains("=3u32;"), "{text}");
}

#[test]
fn event_reports_every_mistake_and_still_implements_the_trait() {
    let input: DeriveInput = parse_quote!(
        #[event(nme = "x", version = 0, name = "a", name = "b")]
        struct Opened<T>(T);
    );
    let out = crate::event::expand(&input);
    let errors = errors(&out);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].starts_with("unknown argument `nme`")
            && errors[0].contains("did you mean `name`?")
    );
    assert!(errors[1].starts_with("`version` cannot be 0"));
    assert!(errors[2].starts_with("duplicate argument `name`"));
    assert!(errors[3].starts_with("an event cannot be generic"));
}

#[test]
fn event_stub_on_error() {
    let input: DeriveInput = parse_quote!(
        #[event(version = "2")]
        struct Opened;
    );
    let out = crate::event::expand(&input);
    assert_eq!(
        errors(&out),
        ["expected a number without quotes, like `version = 2`"]
    );
    assert!(squeeze(&out).contains("impl::evoq::__private::EventforOpened"));
}

#[test]
fn command_reads_the_aggregate_id_field() {
    let input: DeriveInput = parse_quote!(
        struct Deposit {
            amount: u64,
            #[aggregate_id]
            account: String,
        }
    );
    let out = crate::command::expand(&input);
    assert!(errors(&out).is_empty());
    parses(&out);
    let text = squeeze(&out);
    assert!(
        text.contains("<Stringas::evoq::__private::AggregateId>::to_aggregate_id(&self.account)"),
        "{text}"
    );
    assert!(text.contains("=\"Deposit\";"), "{text}");
}

#[test]
fn command_tuple_field() {
    let input: DeriveInput = parse_quote!(
        #[command(name = "bank.Withdraw")]
        struct Withdraw(u64, #[aggregate_id] String);
    );
    let text = squeeze(&crate::command::expand(&input));
    assert!(text.contains("(&self.1)"), "{text}");
    assert!(text.contains("=\"bank.Withdraw\";"), "{text}");
}

#[test]
fn command_errors() {
    let missing: DeriveInput = parse_quote!(
        struct Deposit {
            account: String,
        }
    );
    assert_eq!(
        errors(&crate::command::expand(&missing)),
        [
            "the command `Deposit` has no field marked `#[aggregate_id]`: mark the field that names the target aggregate, like `#[aggregate_id] account: String`"
        ]
    );
    let twice: DeriveInput = parse_quote!(
        struct Transfer {
            #[aggregate_id]
            from: String,
            #[aggregate_id(x)]
            to: String,
        }
    );
    let errors_twice = errors(&crate::command::expand(&twice));
    assert_eq!(errors_twice.len(), 2, "{errors_twice:#?}");
    assert!(errors_twice[0].starts_with("`#[aggregate_id]` takes no arguments"));
    assert!(errors_twice[1].starts_with("duplicate `#[aggregate_id]`"));
    let an_enum: DeriveInput = parse_quote!(
        enum Commands {
            A,
        }
    );
    assert!(
        errors(&crate::command::expand(&an_enum))[0]
            .starts_with("a command must be a struct, not an enum")
    );
}

#[test]
fn output_shapes() {
    let classify = |ty: syn::Type| match Output::classify(&ty) {
        Output::Unit => "unit".to_owned(),
        Output::Single(ty) => format!("single {}", show(ty)),
        Output::Option(ty) => format!("option {}", show(ty)),
        Output::Vec(ty) => format!("vec {}", show(ty)),
        Output::Tuple(types) => format!("tuple {}", types.len()),
    };
    assert_eq!(classify(parse_quote!(())), "unit");
    assert_eq!(classify(parse_quote!(Opened)), "single Opened");
    assert_eq!(classify(parse_quote!(Option<Opened>)), "option Opened");
    assert_eq!(
        classify(parse_quote!(::std::vec::Vec<a::Opened>)),
        "vec a::Opened"
    );
    assert_eq!(classify(parse_quote!((A, B, C))), "tuple 3");
    assert_eq!(classify(parse_quote!((A,))), "tuple 1");
}

#[test]
fn helper_arguments() {
    let cx = Ctxt::new();
    let bare: syn::Attribute = parse_quote!(#[handles]);
    assert!(
        HelperArgs::from_attr(&cx, &bare, symbol::HANDLES, "command")
            .message
            .is_none()
    );
    let named: syn::Attribute = parse_quote!(#[handles(crate::Deposit)]);
    let message = HelperArgs::from_attr(&cx, &named, symbol::HANDLES, "command").message;
    assert_eq!(message.map(show).as_deref(), Some("crate::Deposit"));
    assert!(cx.check().is_ok());

    let cx = Ctxt::new();
    let bad: syn::Attribute = parse_quote!(#[handles(Deposit, Withdraw, retries = 3)]);
    HelperArgs::from_attr(&cx, &bad, symbol::HANDLES, "command");
    let error = cx.check().expect_err("two mistakes");
    assert_eq!(error.into_iter().count(), 2);
}

fn aggregate(args: TokenStream, block: TokenStream) -> TokenStream {
    crate::aggregate::expand(args, block)
}

#[test]
fn aggregate_generates_the_enum_the_impls_and_the_routes() {
    let out = aggregate(
        quote!(),
        quote! {
            impl BankAccount {
                #[handles]
                fn deposit(&self, cmd: &Deposit) -> Result<(MoneyDeposited, FeeCharged), BankError> { todo!() }
                #[apply]
                fn deposited(&mut self, e: &events::MoneyDeposited) {}
                #[evoq::apply]
                fn charged(&mut self, e: &FeeCharged) {}
                fn helper(&self) {}
            }
        },
    );
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    let file = parses(&out);
    let text = squeeze(&out);
    assert!(text.contains("pubenumBankAccountEvent{"), "{text}");
    assert!(
        text.contains("MoneyDeposited(events::MoneyDeposited),"),
        "{text}"
    );
    assert!(
        text.contains("impl::evoq::__private::AggregateforBankAccount"),
        "{text}"
    );
    assert!(
        text.contains("impl::evoq::__private::RouteforDeposit"),
        "{text}"
    );
    assert!(
        text.contains("constNAME:&'static::evoq::__private::core::primitive::str=\"BankAccount\";"),
        "{text}"
    );
    // No `#[aggregate(...)]` lifecycle argument: the app defaults apply.
    assert!(!text.contains("SNAPSHOT_EVERY"), "{text}");
    assert!(!text.contains("IDLE_TIMEOUT"), "{text}");
    // The helper attributes are gone; the other method is kept.
    let Some(syn::Item::Impl(block)) = file.items.first() else {
        panic!("the impl block comes first");
    };
    assert_eq!(block.items.len(), 4);
    for item in &block.items {
        let syn::ImplItem::Fn(method) = item else {
            panic!("only methods");
        };
        assert!(method.attrs.is_empty(), "{}", method.sig.ident);
    }
}

#[test]
fn aggregate_arguments() {
    let out = aggregate(
        quote!(
            name = "bank",
            snapshot_every = 7,
            event_enum = Events,
            idle_timeout = "2m",
            hibernate_after = "never",
            lifespan = Short
        ),
        quote!(impl BankAccount {}),
    );
    let text = squeeze(&out);
    assert!(text.contains("pubenumEvents{}"), "{text}");
    assert!(text.contains("=\"bank\";"), "{text}");
    assert!(text.contains("::Some(7u64);"), "{text}");
    assert!(text.contains("Duration::from_millis(120000u64)"), "{text}");
    assert!(text.contains("constHIBERNATE_AFTER"), "{text}");
    assert!(
        text.contains("::Some(::evoq::__private::core::option::Option::None);"),
        "{text}"
    );
    assert!(
        text.contains("<Shortas::evoq::__private::LifespanOf<BankAccount>>::make()"),
        "{text}"
    );

    let out = aggregate(
        quote!(snapshot = 7, name = "a", name = "b"),
        quote!(impl BankAccount {}),
    );
    let errors = errors(&out);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("did you mean `snapshot_every`?"));
    assert!(errors[1].starts_with("duplicate argument `name`"));
    // The fallback still declares the enum and the impls.
    assert!(squeeze(&out).contains("pubenumBankAccountEvent{}"));
}

/// `name = <value>` with the value in an invisible group, as a `$name:literal` of a
/// `macro_rules!` macro delivers it.
fn grouped_name(value: &str) -> TokenStream {
    let literal = proc_macro2::Literal::string(value);
    let group = proc_macro2::Group::new(proc_macro2::Delimiter::None, quote!(#literal));
    quote!(name = #group)
}

#[test]
fn aggregate_name_cannot_contain_the_stream_separator() {
    let out = aggregate(quote!(name = "Counter-X"), quote!(impl Counter {}));
    assert_eq!(
        errors(&out),
        [
            "the aggregate name `Counter-X` contains `-`, which separates the name from the id in stream ids (`<name>-<id>`): two aggregates could then share a stream; choose a name without `-` (e.g. `CounterX`)"
        ]
    );
    // The fallback still declares the enum and the impls.
    assert!(squeeze(&out).contains("pubenumCounterEvent{}"));
    let only_dashes = errors(&aggregate(quote!(name = "--"), quote!(impl Counter {})));
    assert!(
        only_dashes[0].ends_with("(e.g. `BankAccount`)"),
        "{only_dashes:#?}"
    );
}

#[test]
fn aggregate_name_cannot_be_empty() {
    for name in ["", "  "] {
        let errors = errors(&aggregate(quote!(name = #name), quote!(impl Counter {})));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with("the aggregate name cannot be empty"),
            "{errors:#?}"
        );
    }
}

#[test]
fn aggregate_name_from_a_macro_rules_literal() {
    let out = aggregate(grouped_name("CounterX"), quote!(impl Counter {}));
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    assert!(squeeze(&out).contains("=\"CounterX\";"));
    let errors = errors(&aggregate(
        grouped_name("Counter-X"),
        quote!(impl Counter {}),
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("the aggregate name `Counter-X` contains `-`"));
}

#[test]
fn names_of_other_items_may_contain_dashes() {
    let input: DeriveInput = parse_quote!(
        #[event(name = "bank-opened")]
        struct Opened;
    );
    let out = crate::event::expand(&input);
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
}

#[test]
fn aggregate_block_rules() {
    let out = aggregate(
        quote!(),
        quote! {
            impl BankAccount {
                #[handles]
                fn a(&self, cmd: &Deposit) -> Result<(), E> { todo!() }
                #[handles]
                fn b(&self, cmd: &Deposit) -> Result<(), E> { todo!() }
                #[apply]
                fn c(&mut self, e: &a::Opened) {}
                #[apply]
                fn d(&mut self, e: &b::Opened) {}
                #[apply]
                fn e(&mut self, e: &a::Opened) {}
            }
        },
    );
    let errors = errors(&out);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("the command `Deposit` is handled twice"));
    assert!(
        errors[1].starts_with("the events `a::Opened` and `b::Opened` would both be the variant")
    );
    assert!(errors[2].starts_with("the event `a::Opened` is applied twice"));
    // One stub route and one variant per name: no conflicting impls after the errors.
    let text = squeeze(&out);
    assert_eq!(
        text.matches("impl::evoq::__private::RouteforDeposit")
            .count(),
        1
    );
    assert_eq!(text.matches("Opened(a::Opened),").count(), 1);
}

#[test]
fn an_apply_of_the_event_enum_is_one_error_and_no_variant() {
    let out = aggregate(
        quote!(),
        quote! {
            impl Book {
                #[apply]
                fn lent(&mut self, e: &BookLent) {}
                #[apply]
                fn any(&mut self, e: &BookEvent) {}
            }
        },
    );
    let errors = errors(&out);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("`#[apply]` takes one event type, not the generated enum"));
    // A variant holding the enum itself would make it infinitely large: more errors.
    let text = squeeze(&out);
    assert!(text.contains("BookLent(BookLent),"), "{text}");
    assert!(!text.contains("BookEvent(BookEvent)"), "{text}");
}

#[test]
fn a_decision_leaves_an_applied_event_spelled_otherwise_than_its_query_to_the_compiler() {
    let block = |applied: TokenStream| {
        quote! {
            impl Lending {
                #[handles]
                #[query(all_of(types(Lent), tag("book", &command.book)))]
                fn lend(&self, command: &LendBook) -> Result<(), E> { todo!() }
                #[apply]
                fn lent(&mut self, e: &#applied) {}
            }
        }
    };
    // `Lent` may be an alias of `BookLent`, and `a::Lent` another type than `Lent`: the macro
    // cannot tell, so neither is its error; a const assertion on the wire names decides.
    for applied in [quote!(BookLent), quote!(a::Lent)] {
        let out = crate::decision::expand(quote!(), block(applied.clone()));
        assert!(errors(&out).is_empty(), "{applied}: {:?}", errors(&out));
        let text = squeeze(&out);
        let check = format!(
            "::evoq::__private::str_among(<{}as::evoq::__private::IsEvent>::VTABLE.name,&[<Lentas::evoq::__private::IsEvent>::VTABLE.name]),\"themodelapplies`{}`",
            squeeze(&applied),
            applied.to_string().replace(' ', "")
        );
        assert!(text.contains(&check), "{check}\n{text}");
    }
    // The same tokens are the same type: nothing to check.
    let out = crate::decision::expand(quote!(), block(quote!(Lent)));
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    assert!(!squeeze(&out).contains("str_among"));
}

fn saga(args: TokenStream, block: TokenStream) -> TokenStream {
    crate::saga::expand(args, block)
}

#[test]
fn a_saga_whose_methods_only_continue_or_stop_is_refused() {
    for helper in [quote!(continues), quote!(stops)] {
        let out = saga(
            quote!(name = "fulfillment"),
            quote! {
                impl Fulfillment {
                    #[#helper(by = order_id)]
                    fn placed(&mut self, e: &OrderPlaced) -> Commands { Commands::none() }
                }
            },
        );
        let errors = errors(&out);
        assert_eq!(errors.len(), 1, "{helper}: {errors:#?}");
        assert!(
            errors[0]
                .starts_with("a `#[saga]` block needs at least one `#[starts(by = field)]` method"),
            "{errors:#?}"
        );
    }
    let out = saga(
        quote!(name = "fulfillment"),
        quote! {
            impl Fulfillment {
                #[starts(by = order_id)]
                fn placed(&mut self, e: &OrderPlaced) -> Commands { Commands::none() }
            }
        },
    );
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
}

#[test]
fn one_event_applied_twice_through_a_path_is_told_to_keep_one_method() {
    let out = aggregate(
        quote!(),
        quote! {
            impl Account {
                #[apply]
                fn deposited(&mut self, e: &Deposited) {}
                #[apply]
                fn deposited_again(&mut self, e: &crate::ev::Deposited) {}
            }
        },
    );
    let errors = errors(&out);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains(
            "if they are one type written twice, remove one of the two `#[apply]` methods"
        ),
        "{errors:#?}"
    );
    // The wire-name checks that follow a fix by renaming say the same.
    let out = aggregate(
        quote!(),
        quote! {
            impl Account {
                #[apply]
                fn deposited(&mut self, e: &Deposited) {}
                #[apply]
                fn deposited_again(&mut self, e: &Dep) {}
            }
        },
    );
    assert!(
        squeeze(&out).contains("iftheyareonetypewrittentwice,removeoneofthetwo`#[apply]`methods"),
        "{out}"
    );
    let out = saga(
        quote!(name = "fulfillment"),
        quote! {
            impl Fulfillment {
                #[starts(by = order_id)]
                fn placed(&mut self, e: &OrderPlaced) -> Commands { Commands::none() }
                #[continues(by = order_id)]
                fn placed_again(&mut self, e: &crate::ev::OrderPlaced) -> Commands { Commands::none() }
            }
        },
    );
    assert!(
        squeeze(&out).contains("iftheyareonetypewrittentwice,takeitinonemethod"),
        "{out}"
    );
}

#[test]
fn aggregate_on_something_else() {
    let out = aggregate(
        quote!(),
        quote!(
            struct BankAccount;
        ),
    );
    assert!(errors(&out)[0].starts_with("`#[aggregate]` goes on the impl block"));
    let out = aggregate(
        quote!(),
        quote!(
            impl<T> Wrapper<T> {}
        ),
    );
    assert!(errors(&out)[0].starts_with("an aggregate cannot be generic"));
}

#[test]
fn parse_model_keeps_cfg() {
    let cx = Ctxt::new();
    let mut item: syn::ItemImpl = parse_quote! {
        impl State {
            #[cfg(feature = "x")]
            #[handles]
            fn a(&self, cmd: &Cmd) -> Result<Opened, E> { todo!() }
        }
    };
    let def = AggregateDef::from_ast(&cx, quote!(), &mut item).expect("a model");
    assert!(cx.check().is_ok());
    assert_eq!(def.handlers.len(), 1);
    assert_eq!(def.handlers[0].cfgs.len(), 1);
    assert_eq!(def.event_enum, "StateEvent");
}

fn event_handler(args: TokenStream, block: TokenStream) -> TokenStream {
    crate::event_handler::expand(args, block)
}

#[test]
fn event_handler_generates_the_subscription_list_and_the_dispatch() {
    let out = event_handler(
        quote!(
            name = "notifier",
            strong,
            retry = exponential("100ms", "1m"),
            max_attempts = 3,
            on_error = stop
        ),
        quote! {
            impl Notifier {
                #[handles]
                async fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), E> { todo!() }
                #[evoq::handles(events::Closed)]
                async fn closed(&mut self, e: &events::Closed, meta: &EventMeta) -> Result<(), E> { todo!() }
                fn helper(&self) {}
            }
        },
    );
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    let file = parses(&out);
    let text = squeeze(&out);
    assert!(
        text.contains("impl::evoq::__private::EventHandlerforNotifier"),
        "{text}"
    );
    assert!(
        text.contains("constNAME:&'static::evoq::__private::core::primitive::str=\"notifier\";"),
        "{text}"
    );
    assert!(
        text.contains("=&[__EVOQ_EVENT_0.name,__EVOQ_EVENT_1.name,];"),
        "{text}"
    );
    assert!(
        text.contains(".retry(::evoq::__private::RetryStrategy::exponential(::evoq::__private::core::time::Duration::from_millis(100u64),::evoq::__private::core::time::Duration::from_millis(60000u64)))"),
        "{text}"
    );
    assert!(text.contains(".max_attempts(3u32)"), "{text}");
    assert!(
        text.contains(".on_error(::evoq::__private::OnError::Stop)"),
        "{text}"
    );
    assert!(text.contains(".strong(true)"), "{text}");
    assert!(text.contains("<Notifier>::opened(self,&event,"), "{text}");
    let Some(syn::Item::Impl(block)) = file.items.first() else {
        panic!("the impl block comes first");
    };
    assert_eq!(block.items.len(), 3);
    for item in &block.items {
        let syn::ImplItem::Fn(method) = item else {
            panic!("only methods");
        };
        assert!(method.attrs.is_empty(), "{}", method.sig.ident);
    }
}

#[test]
fn event_handler_reports_every_mistake_and_still_implements_the_trait() {
    let out = event_handler(
        quote!(retries = 2, on_error = ignore),
        quote! {
            impl Notifier {
                #[handles]
                fn opened(&self, e: &AccountOpened) -> Result<u8, E> { todo!() }
                #[handles]
                async fn again(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), E> { todo!() }
            }
        },
    );
    let errors = errors(&out);
    assert_eq!(errors.len(), 8, "{errors:#?}");
    assert!(errors[0].starts_with("unknown argument `retries`"));
    assert!(errors[1].starts_with("expected `dead_letter`"));
    assert!(
        errors[2]
            .starts_with("a `#[handles]` method of an `#[event_handler]` block must be `async`")
    );
    assert!(errors[2].ends_with(
        "(a sync `#[handles]` method that takes `&self` and a command belongs to an `#[aggregate]` block)"
    ));
    assert!(errors[3].starts_with(
        "a `#[handles]` method of an `#[event_handler]` block takes `&mut self`, not `&self`"
    ));
    assert!(errors[4].contains("add the `&EventMeta` parameter"));
    assert!(errors[5].starts_with(
        "a `#[handles]` method of an `#[event_handler]` block returns `Result<(), Error>`"
    ));
    assert!(errors[6].starts_with(
        "`#[event_handler]` needs a name: write `#[event_handler(name = \"notifier\")]`"
    ));
    assert!(errors[7].starts_with("the event `AccountOpened` is handled twice"));
    let text = squeeze(&out);
    assert!(
        text.contains("impl::evoq::__private::EventHandlerforNotifier"),
        "{text}"
    );
    assert!(
        text.contains("=\"Notifier\";"),
        "the stub is named after the type: {text}"
    );
}

#[test]
fn event_handler_on_something_else() {
    let out = event_handler(
        quote!(name = "n"),
        quote!(
            struct Notifier;
        ),
    );
    assert!(errors(&out)[0].starts_with("`#[event_handler]` goes on the impl block"));
    let out = event_handler(quote!(name = "n"), quote!(impl Trait for Notifier {}));
    assert!(errors(&out)[0].starts_with("`#[event_handler]` goes on the inherent impl block"));
}

#[test]
fn event_lists_its_upcaster_chain() {
    let input: DeriveInput = parse_quote!(
        #[event(version = 3)]
        struct MoneyDeposited;
    );
    let text = squeeze(&crate::event::expand(&input));
    assert!(
        text.contains("constUPCASTERS:&'static[::evoq::__private::Upcaster]=&[<MoneyDepositedas::evoq::__private::UpcastStep<1>>::STEP,<MoneyDepositedas::evoq::__private::UpcastStep<2>>::STEP,];"),
        "{text}"
    );
    let plain: DeriveInput = parse_quote!(
        struct AccountOpened;
    );
    let text = squeeze(&crate::event::expand(&plain));
    assert!(
        text.contains("constUPCASTERS:&'static[::evoq::__private::Upcaster]=&[];"),
        "{text}"
    );
}

#[test]
fn upcaster_generates_one_step_and_keeps_the_function() {
    let out = crate::upcaster::expand(
        quote!(MoneyDeposited, from = 2, renamed_from = "FundsAdded"),
        quote! {
            fn v2_to_v3(data: Value) -> Result<Value, UpcastError> { Ok(data) }
        },
    );
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    let file = parses(&out);
    assert!(matches!(file.items.first(), Some(syn::Item::Fn(_))));
    let text = squeeze(&out);
    assert!(
        text.contains("impl::evoq::__private::UpcastStep<2>forMoneyDeposited"),
        "{text}"
    );
    assert!(text.contains("from:2,"), "{text}");
    assert!(
        text.contains("renamed_from:::evoq::__private::core::option::Option::Some(\"FundsAdded\")"),
        "{text}"
    );
    assert!(
        text.contains("2<<MoneyDepositedas::evoq::__private::IsEvent>::VTABLE.version"),
        "{text}"
    );
}

#[test]
fn upcaster_reports_every_mistake_and_still_implements_the_step() {
    let out = crate::upcaster::expand(
        quote!(MoneyDeposited, from = 1, since = 3),
        quote! {
            async fn v1(&self, data: Value) -> Result<Value, UpcastError> { Ok(data) }
        },
    );
    let found = errors(&out);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].starts_with("unknown argument `since`"));
    assert!(found[1].starts_with("an upcaster is not async"));
    assert!(found[2].starts_with("an upcaster is a free function, not a method"));
    let text = squeeze(&out);
    assert!(
        text.contains("upcast:::evoq::__private::upcast_stub"),
        "{text}"
    );
    let out = crate::upcaster::expand(
        quote!(),
        quote!(
            fn f(data: Value) {}
        ),
    );
    assert!(errors(&out)[0].starts_with("`#[upcaster]` names the event type first"));
}

#[test]
fn projection_is_an_event_handler_with_a_read_model() {
    let out = crate::event_handler::expand_flavor(
        &crate::model::PROJECTION_FLAVOR,
        quote!(name = "summary", read_model = summaries, max_attempts = 2),
        quote! {
            impl Summary {
                #[handles]
                async fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), ProjectionError> { todo!() }
            }
        },
    );
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    parses(&out);
    let text = squeeze(&out);
    assert!(
        text.contains("impl::evoq::__private::EventHandlerforSummary"),
        "{text}"
    );
    assert!(
        text.contains("impl::evoq::__private::ProjectionforSummary"),
        "{text}"
    );
    assert!(
        text.contains("&self.summariesas&dyn::evoq::__private::ReadModel"),
        "{text}"
    );
    assert!(text.contains("constUPCASTERS:&'static[&'static[::evoq::__private::Upcaster]]=&[__EVOQ_EVENT_0.upcasters,];"), "{text}");

    let out = crate::event_handler::expand_flavor(
        &crate::model::PROJECTION_FLAVOR,
        quote!(),
        quote! {
            impl Summary {
                #[handles]
                fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), ProjectionError> { todo!() }
            }
        },
    );
    let errors = errors(&out);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("a `#[handles]` method of a `#[projection]` block must be `async`"),
        "{}",
        errors[0]
    );
    assert!(errors[1].starts_with("`#[projection]` needs a name: write `#[projection(name = \"summary\")]`; the name keys the projection's"), "{}", errors[1]);
    assert!(
        errors[2].starts_with("`#[projection]` needs its read model"),
        "{}",
        errors[2]
    );
    let text = squeeze(&out);
    assert!(
        text.contains("impl::evoq::__private::ProjectionforSummary"),
        "the stub: {text}"
    );
}

/// `tokens` in an invisible group, as a `$x:literal` or `$x:expr` of a `macro_rules!` macro
/// delivers them.
fn invisible(tokens: TokenStream) -> proc_macro2::Group {
    proc_macro2::Group::new(proc_macro2::Delimiter::None, tokens)
}

#[test]
fn retry_durations_from_macro_rules_literals() {
    let (base, max, fixed) = (
        invisible(quote!("100ms")),
        invisible(quote!("2s")),
        invisible(quote!("1s")),
    );
    let block = quote! {
        impl Notifier {
            #[handles]
            async fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), E> { todo!() }
        }
    };
    let out = event_handler(
        quote!(name = "n", retry = exponential(#base, #max)),
        block.clone(),
    );
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    assert!(squeeze(&out).contains("RetryStrategy::exponential(::evoq::__private::core::time::Duration::from_millis(100u64),::evoq::__private::core::time::Duration::from_millis(2000u64))"));
    let whole = invisible(quote!(fixed(#fixed)));
    let out = event_handler(quote!(name = "n", retry = #whole), block);
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    assert!(squeeze(&out).contains(
        "RetryStrategy::fixed(::evoq::__private::core::time::Duration::from_millis(1000u64))"
    ));
}

#[test]
fn result_aliases_go_through_the_check_traits() {
    let out = aggregate(
        quote!(),
        quote! {
            impl Book {
                #[handles]
                fn lend(&self, cmd: &LendBook) -> Result<BookLent> { todo!() }
                #[handles]
                fn keep(&self, cmd: &KeepBook) -> Outcome { todo!() }
                #[handles]
                fn lose(&self, cmd: &LoseBook) -> std::result::Result<Self, E> { todo!() }
                #[apply]
                fn lent(&mut self, e: &BookLent) {}
            }
        },
    );
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    let text = squeeze(&out);
    assert!(
        text.contains("<Result<BookLent>as::evoq::__private::CommandResult>::into_result"),
        "{text}"
    );
    assert!(text.contains("<<Outcomeas::evoq::__private::CommandResult>::Okas::evoq::__private::EventsOf<Book>>::into_events"), "{text}");
    assert!(text.contains("<<Outcomeas::evoq::__private::CommandResult>::Erras::evoq::__private::CommandError>::into_rejection"), "{text}");
    // Written out: each type checked on its own; `Self` is the state, not the command.
    assert!(
        text.contains("<Bookas::evoq::__private::EventOf<Book>>::into_event"),
        "{text}"
    );
    assert!(
        text.contains("impl::evoq::__private::EventsOf<Book>forBookLent"),
        "{text}"
    );
    assert!(text.contains("impl::evoq::__private::HandledByOneAggregateforLendBook{}"));

    let out = event_handler(
        quote!(name = "n"),
        quote! {
            impl Notifier {
                #[handles]
                async fn lent(&mut self, e: &BookLent, meta: &EventMeta) -> Result<()> { todo!() }
            }
        },
    );
    assert!(errors(&out).is_empty(), "{:?}", errors(&out));
    let text = squeeze(&out);
    assert!(
        text.contains("<Result<()>as::evoq::__private::EventHandlerResult>::into_result(result)"),
        "{text}"
    );
    assert!(text.contains("<<Result<()>as::evoq::__private::EventHandlerResult>::Erras::evoq::__private::EventHandlerError>::into_failure"), "{text}");

    // What is not a path type cannot be an alias.
    let out = aggregate(
        quote!(),
        quote! {
            impl Book {
                #[handles]
                fn lend(&self, cmd: &LendBook) -> &'static str { todo!() }
            }
        },
    );
    let errors = errors(&out);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("written out or through an alias"),
        "{errors:#?}"
    );
}

#[test]
fn error_types_that_are_never_errors_get_their_own_check() {
    use crate::model::ErrorSpelling;
    for never in [
        quote!(String),
        quote!(std::string::String),
        quote!(&'static str),
        quote!(Box<dyn std::error::Error>),
        quote!(anyhow::Error),
        quote!(u32),
        quote!(()),
    ] {
        let ty: syn::Type = syn::parse2(never.clone()).expect("a type");
        assert!(
            ErrorSpelling::of(&ty) == ErrorSpelling::NotAnErrorType,
            "{never}"
        );
    }
    for own in [
        quote!(BookError),
        quote!(errors::BookError),
        quote!(std::io::Error),
    ] {
        let ty: syn::Type = syn::parse2(own.clone()).expect("a type");
        assert!(ErrorSpelling::of(&ty) == ErrorSpelling::Own, "{own}");
    }
    let out = aggregate(
        quote!(),
        quote! {
            impl Book {
                #[handles]
                fn lend(&self, cmd: &LendBook) -> Result<BookLent, String> { todo!() }
                #[apply]
                fn lent(&mut self, e: &BookLent) {}
            }
        },
    );
    assert!(squeeze(&out).contains("<Stringas::evoq::__private::ErrorType>::into_rejection"));
}

#[test]
fn event_checks_its_bounds_at_the_type() {
    let input: DeriveInput = parse_quote!(
        struct BookLent;
    );
    let text = squeeze(&crate::event::expand(&input));
    assert!(
        text.contains("<BookLentas::evoq::__private::StoredAsJson>::OK"),
        "{text}"
    );
    assert!(
        text.contains("<BookLentas::evoq::__private::SharedEvent>::OK"),
        "{text}"
    );
    assert!(
        text.contains("<BookLentas::evoq::__private::core::clone::Clone>::clone"),
        "{text}"
    );
    assert!(
        text.contains("for<'__evoq>BookLent:::evoq::__private::serde::Serialize"),
        "{text}"
    );
}
