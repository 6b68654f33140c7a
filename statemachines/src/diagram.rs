//! Renders transition tables as Mermaid state diagrams (committed under `diagrams/`).

use crate::workflow::{START, Workflow};

pub fn mermaid<W: Workflow>() -> String {
    let mut out = format!(
        "%% Generated from {}::TRANSITIONS — do not edit; run `STEWARD_BLESS=1 cargo test -p statemachines --test diagrams`.\nstateDiagram-v2\n",
        W::KIND
    );
    for t in W::TRANSITIONS {
        let from = if t.from == START { "[*]" } else { t.from };
        out.push_str(&format!("    {from} --> {}: {}\n", t.to, t.on));
    }
    // terminal states (no outgoing transition) end the diagram
    let mut terminals: Vec<&str> = W::TRANSITIONS
        .iter()
        .map(|t| t.to)
        .filter(|to| !W::TRANSITIONS.iter().any(|t| t.from == *to))
        .collect();
    terminals.sort();
    terminals.dedup();
    for s in terminals {
        out.push_str(&format!("    {s} --> [*]\n"));
    }
    out
}
