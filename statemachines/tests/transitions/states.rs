//! The state declarations agree with the transition tables: a state is terminal exactly when its
//! machine's table has no transition out of it to another state (a terminal state may still
//! absorb late results of commands sent before it was reached, as rotation's Cancelled does:
//! those are self-loops), and every state the table names is declared.

use statemachines::machines::ALL;
use statemachines::workflow::START;

#[test]
fn every_machine_is_listed_once() {
    let mut kinds: Vec<&str> = ALL.iter().map(|m| m.kind).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds.len(),
        ALL.len(),
        "a machine is listed twice: {kinds:?}"
    );
}

#[test]
fn terminal_exactly_when_no_transition_leaves() {
    let mut problems = Vec::new();
    for m in ALL {
        for &(state, terminal) in m.states {
            let leaves = m
                .transitions
                .iter()
                .any(|t| t.from == state && t.to != state);
            if terminal == leaves {
                problems.push(format!(
                    "{}: {state} is {} but the table has {} transition out of it to another state",
                    m.kind,
                    if terminal { "terminal" } else { "not terminal" },
                    if leaves { "a" } else { "no" },
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_table_names_only_declared_states_and_reaches_them_all() {
    let mut problems = Vec::new();
    for m in ALL {
        let declared = |s: &str| m.states.iter().any(|(n, _)| *n == s);
        for t in m.transitions {
            for s in [t.from, t.to] {
                if s != START && !declared(s) {
                    problems.push(format!("{}: the table names undeclared state {s}", m.kind));
                }
            }
        }
        for (s, _) in m.states {
            if !m.transitions.iter().any(|t| t.to == *s) {
                problems.push(format!("{}: no transition reaches {s}", m.kind));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
