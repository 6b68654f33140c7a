//! Renders transition tables as Mermaid state diagrams (committed under `diagrams/`).

use crate::workflow::{Machine, START, Workflow};

pub fn mermaid<W: Workflow>() -> String {
    render(&Machine::of::<W>())
}

/// The diagram of one machine of `machines::ALL`.
pub fn render(m: &Machine) -> String {
    let mut out = format!(
        "%% Generated from {}::TRANSITIONS — do not edit; run `STEWARD_BLESS=1 cargo test -p statemachines --test transitions diagram`.\nstateDiagram-v2\n",
        m.kind
    );
    for t in m.transitions {
        let from = if t.from == START { "[*]" } else { t.from };
        out.push_str(&format!("    {from} --> {}: {}\n", t.to, t.on));
    }
    // terminal states (no outgoing transition) end the diagram
    let mut terminals: Vec<&str> = m
        .transitions
        .iter()
        .map(|t| t.to)
        .filter(|to| !m.transitions.iter().any(|t| t.from == *to))
        .collect();
    terminals.sort();
    terminals.dedup();
    for s in terminals {
        out.push_str(&format!("    {s} --> [*]\n"));
    }
    out
}
