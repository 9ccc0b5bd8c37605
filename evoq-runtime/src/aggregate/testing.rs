//! Given / when / then tests of one aggregate, without a runtime or a store.
//!
//! ```ignore
//! AggregateTest::<BankAccount>::given([AccountOpened { account: "a".into(), initial_balance: 10 }])
//!     .when(Withdraw { account: "a".into(), amount: 50 })
//!     .then_error(BankError::InsufficientFunds { balance: 10, requested: 50 });
//! ```
//!
//! Events are compared by type name and serialized data, so event types need no `PartialEq`.

use std::error::Error as StdError;
use std::fmt::{self, Debug};

use super::command::{Rejection, Route};
use super::definition::Aggregate;
use crate::event::EventSet;

/// An aggregate under test: a state built from given events.
///
/// A [decision](crate::decision) is tested the same way: the given events are its context,
/// folded into its model, and a handler that takes the context's events receives them.
pub struct AggregateTest<A: Aggregate> {
    state: A,
    version: u64,
    /// The given events, for a decision handler that takes them.
    given: Vec<A::Event>,
}

impl<A: Aggregate> AggregateTest<A> {
    /// A fresh aggregate (no events).
    pub fn new() -> Self {
        AggregateTest {
            state: A::default(),
            version: 0,
            given: Vec::new(),
        }
    }

    /// An aggregate that has applied `events`, in order.
    pub fn given<I, E>(events: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<A::Event>,
    {
        let mut test = Self::new();
        for event in events {
            let event = event.into();
            test.state.apply(&event);
            test.version += 1;
            test.given.push(event);
        }
        test
    }

    /// Runs `command` against the state (and, for a decision handler that takes them, the
    /// given events).
    pub fn when<C: Route<Aggregate = A>>(self, command: C) -> Outcome<A> {
        let result = C::decide_on(&self.state, &command, &self.given);
        let mut state = self.state;
        let mut version = self.version;
        let mut given = self.given;
        if let Ok(events) = &result {
            for event in events {
                state.apply(event);
                version += 1;
            }
            given.extend(events.iter().cloned());
        }
        Outcome {
            command: C::NAME,
            state,
            version,
            given,
            result,
        }
    }

    /// The current state.
    pub fn state(&self) -> &A {
        &self.state
    }
}

impl<A: Aggregate> Default for AggregateTest<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// What a command did to an [`AggregateTest`]; assert on it with the `then_*` methods.
pub struct Outcome<A: Aggregate> {
    command: &'static str,
    state: A,
    version: u64,
    /// The given events and the command's, for the next command (see [`AggregateTest`]).
    given: Vec<A::Event>,
    result: Result<Vec<A::Event>, Rejection>,
}

impl<A: Aggregate> Outcome<A> {
    /// Asserts the command produced exactly `expected`, in order.
    #[track_caller]
    pub fn then_events<I, E>(self, expected: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<A::Event>,
    {
        let expected: Vec<A::Event> = expected.into_iter().map(Into::into).collect();
        match &self.result {
            Ok(events) => {
                let got: Vec<Comparable> = events.iter().map(Comparable::of).collect();
                let want: Vec<Comparable> = expected.iter().map(Comparable::of).collect();
                assert!(
                    got == want,
                    "command `{}` on `{}` produced other events than expected\n  expected: {want:?}\n       got: {got:?}",
                    self.command,
                    A::NAME,
                );
            }
            Err(rejection) => panic!(
                "command `{}` on `{}` was rejected ({rejection}), expected events {:?}",
                self.command,
                A::NAME,
                expected.iter().map(Comparable::of).collect::<Vec<_>>(),
            ),
        }
        self
    }

    /// Asserts the command succeeded without producing events.
    #[track_caller]
    pub fn then_no_events(self) -> Self {
        self.then_events(Vec::<A::Event>::new())
    }

    /// Asserts the command was rejected with an error equal to `expected`.
    #[track_caller]
    pub fn then_error<E>(self, expected: E) -> Self
    where
        E: StdError + PartialEq + 'static,
    {
        self.then_error_matches(|error: &E| {
            assert!(
                *error == expected,
                "command was rejected with {error:?}, expected {expected:?}"
            );
            true
        })
    }

    /// Asserts the command was rejected with an error of type `E` that satisfies `check`.
    #[track_caller]
    pub fn then_error_matches<E, F>(self, check: F) -> Self
    where
        E: StdError + 'static,
        F: FnOnce(&E) -> bool,
    {
        match &self.result {
            Ok(events) => panic!(
                "command `{}` on `{}` succeeded with {:?}, expected a rejection",
                self.command,
                A::NAME,
                events.iter().map(Comparable::of).collect::<Vec<_>>(),
            ),
            Err(rejection) => match rejection.downcast_ref::<E>() {
                Some(error) => assert!(
                    check(error),
                    "command `{}` on `{}` was rejected with {error:?}, which does not match",
                    self.command,
                    A::NAME,
                ),
                None => panic!(
                    "command `{}` on `{}` was rejected with `{rejection}`, which is not a `{}`",
                    self.command,
                    A::NAME,
                    std::any::type_name::<E>(),
                ),
            },
        }
        self
    }

    /// Runs `check` on the state after the command's events were applied.
    #[track_caller]
    pub fn then_state<F: FnOnce(&A)>(self, check: F) -> Self {
        check(&self.state);
        self
    }

    /// Runs a further command against the resulting state.
    pub fn and_when<C: Route<Aggregate = A>>(self, command: C) -> Outcome<A> {
        AggregateTest {
            state: self.state,
            version: self.version,
            given: self.given,
        }
        .when(command)
    }

    /// The events, or the rejection.
    pub fn result(&self) -> Result<&[A::Event], &Rejection> {
        self.result.as_deref()
    }

    /// The stream version after the command (the number of events applied in all).
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// An event reduced to what identifies it: type name and data.
#[derive(PartialEq)]
struct Comparable {
    event_type: &'static str,
    data: serde_json::Value,
}

impl Comparable {
    fn of<E: EventSet>(event: &E) -> Self {
        Comparable {
            event_type: event.event_type(),
            data: event.to_json(),
        }
    }
}

impl Debug for Comparable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.event_type, self.data)
    }
}
