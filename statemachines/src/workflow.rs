//! The contract every workflow implements.

use crate::command::Command;
use crate::event::Event;
use crate::policy::Policy;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a machine may know about the world when it decides: the time, the policy and its own id.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    pub now: DateTime<Utc>,
    pub policy: &'a Policy,
    /// The workflow instance id; machines derive ids of the things they create from it
    /// (approvals, timers) so a replay produces the same ids.
    pub workflow_id: &'a str,
}

/// The outcome of an accepted event: the next state and the side effects to perform.
#[derive(Debug, Clone, PartialEq)]
pub struct Step<S> {
    pub state: S,
    pub commands: Vec<Command>,
}

/// One reason a request or event was refused, naming the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub field: String,
    pub message: String,
}

/// A refused start or event. A rejection changes nothing; its reasons say what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub reasons: Vec<Reason>,
}

impl Rejected {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reasons: vec![Reason {
                field: field.into(),
                message: message.into(),
            }],
        }
    }

    /// Collects reasons; `Ok` when there are none.
    pub fn from_reasons(reasons: Vec<Reason>) -> Result<(), Self> {
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Self { reasons })
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.reasons.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", r.field, r.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejected {}

/// The refusal of an event the machine has no transition for in its current state.
pub(crate) fn not_applicable(kind: &str, state: &str, event: &Event) -> Rejected {
    Rejected::new(
        "event",
        format!(
            "{} does not apply to {kind} in state {state}",
            event.label()
        ),
    )
}

/// A declared transition: `from --on--> to`. `from == "[*]"` is the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Transition {
    pub from: &'static str,
    pub on: &'static str,
    pub to: &'static str,
}

/// Shorthand for transition tables.
pub const fn t(from: &'static str, on: &'static str, to: &'static str) -> Transition {
    Transition { from, on, to }
}

/// Pseudo-state the table uses for `start`.
pub const START: &str = "[*]";

/// A machine's states, declared once with `states!`: each state's table name and whether it
/// is terminal (accepts no further events).
pub trait States {
    /// Every state as `(name, terminal)`, in declaration order.
    const ALL: &'static [(&'static str, bool)];
    fn name(&self) -> &'static str;
    fn is_terminal(&self) -> bool;
}

/// Declares a state enum's states, marking the terminal ones:
/// `states!(MyState { Running, Done: terminal })`. The match it generates is exhaustive, so a
/// new variant must be listed here.
macro_rules! states {
    ($ty:ident { $($state:ident $(: $terminal:ident)?),* $(,)? }) => {
        impl $crate::workflow::States for $ty {
            const ALL: &'static [(&'static str, bool)] =
                &[$((stringify!($state), $crate::workflow::states!(@terminal $($terminal)?))),*];

            fn name(&self) -> &'static str {
                match self {
                    $(Self::$state { .. } => stringify!($state),)*
                }
            }

            fn is_terminal(&self) -> bool {
                match self {
                    $(Self::$state { .. } => $crate::workflow::states!(@terminal $($terminal)?),)*
                }
            }
        }
    };
    (@terminal terminal) => {
        true
    };
    (@terminal) => {
        false
    };
}
pub(crate) use states;

/// One machine as data: its kind, transition table and states (see `machines::ALL`).
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    pub kind: &'static str,
    pub transitions: &'static [Transition],
    /// `(name, terminal)` for every state.
    pub states: &'static [(&'static str, bool)],
}

impl Machine {
    pub const fn of<W: Workflow>() -> Self {
        Self {
            kind: W::KIND,
            transitions: W::TRANSITIONS,
            states: <W::State as States>::ALL,
        }
    }
}

/// A workflow: a pure, typed state machine with a declared transition table.
pub trait Workflow {
    /// Persisted state; serde-tagged so a stored state names its variant.
    type State: States + Clone + fmt::Debug + Serialize + for<'de> Deserialize<'de>;
    /// What starts an instance.
    type Input: Clone + fmt::Debug;

    /// Stable kind name, used in ids, storage and diagrams.
    const KIND: &'static str;
    /// Every transition the machine may take. `on` must stay inside this table; tests check both
    /// directions (nothing undeclared is taken, nothing declared is left unexercised).
    const TRANSITIONS: &'static [Transition];

    fn start(input: Self::Input, ctx: &Ctx) -> Result<Step<Self::State>, Rejected>;
    fn on(state: &Self::State, event: Event, ctx: &Ctx) -> Result<Step<Self::State>, Rejected>;

    /// The variant name of a state, as used in the table.
    fn state_name(state: &Self::State) -> &'static str {
        state.name()
    }
    /// Terminal states accept no further events.
    fn is_terminal(state: &Self::State) -> bool {
        state.is_terminal()
    }
    /// The table label of an event: its type, plus the detail that selects a transition.
    fn event_label(event: &Event) -> &'static str {
        event.label()
    }
}

/// Starts a machine and checks the step against its table (debug builds panic on an undeclared
/// transition: that is a bug in the machine, not bad input).
pub fn start<W: Workflow>(input: W::Input, ctx: &Ctx) -> Result<Step<W::State>, Rejected> {
    let step = W::start(input, ctx)?;
    record::<W>(START, "start", W::state_name(&step.state));
    Ok(step)
}

/// Applies an event and checks the step against the table.
pub fn on<W: Workflow>(
    state: &W::State,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<W::State>, Rejected> {
    let from = W::state_name(state);
    let label = W::event_label(&event);
    let step = W::on(state, event, ctx)?;
    record::<W>(from, label, W::state_name(&step.state));
    Ok(step)
}

fn record<W: Workflow>(from: &'static str, on: &'static str, to: &'static str) {
    let taken = Transition { from, on, to };
    debug_assert!(
        W::TRANSITIONS.contains(&taken),
        "{} took an undeclared transition {from} --{on}--> {to}",
        W::KIND
    );
    coverage::hit(W::KIND, taken);
}

/// Which declared transitions the current thread has exercised (for the coverage test).
pub mod coverage {
    use super::Transition;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    thread_local! {
        static HITS: RefCell<BTreeSet<(&'static str, Transition)>> = const { RefCell::new(BTreeSet::new()) };
    }

    pub(crate) fn hit(kind: &'static str, t: Transition) {
        HITS.with(|h| {
            h.borrow_mut().insert((kind, t));
        });
    }

    /// Transitions of `kind` taken on this thread so far.
    pub fn taken(kind: &str) -> BTreeSet<Transition> {
        HITS.with(|h| {
            h.borrow()
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, t)| *t)
                .collect()
        })
    }
}

/// Refuses a timer that fires before `at`, the time it was set for (a stale or forged timer).
pub fn not_before(at: &chrono::DateTime<chrono::Utc>, ctx: &Ctx) -> Result<(), Rejected> {
    if ctx.now < *at {
        return Err(Rejected::new(
            "timer",
            format!("the timer fired before its time {}", at.to_rfc3339()),
        ));
    }
    Ok(())
}
