//! The committed diagrams under `statemachines/diagrams/` are generated from the transition
//! tables; this test fails when one is stale or missing. `STEWARD_BLESS=1` rewrites them.

use statemachines::decommission::Decommission;
use statemachines::diagram::{mermaid, render};
use statemachines::discovery::ShadowAgent;
use statemachines::expiry::Expiry;
use statemachines::freeze::Freeze;
use statemachines::machines::ALL;
use statemachines::onboarding::Onboarding;
use statemachines::review_campaign::ReviewCampaign;
use statemachines::review_item::ReviewItemMachine;
use statemachines::rotation::Rotation;
use statemachines::scope_change::ScopeChange;
use statemachines::workflow::Machine;
use statemachines::workflow::Workflow;
use std::path::PathBuf;

const REGENERATE: &str = "STEWARD_BLESS=1 cargo test -p statemachines --test transitions diagram";

fn check(m: &Machine) -> Result<(), String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("diagrams")
        .join(format!("{}.mmd", m.kind));
    let rendered = render(m);
    if std::env::var("STEWARD_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &rendered)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        return Ok(());
    }
    match std::fs::read_to_string(&path) {
        Ok(committed) if committed == rendered => Ok(()),
        Ok(_) => Err(format!(
            "{} is stale: it does not match {}::TRANSITIONS; regenerate with `{REGENERATE}`",
            path.display(),
            m.kind
        )),
        Err(e) => Err(format!(
            "{} is missing ({e}); generate it with `{REGENERATE}`",
            path.display()
        )),
    }
}

#[test]
fn every_diagram_is_current() {
    let problems: Vec<String> = ALL.iter().filter_map(|m| check(m).err()).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every declared transition appears in the rendered diagram, and the diagram ends exactly at
/// `terminals` (the states no transition leaves).
fn shows_transitions_and_ends<W: Workflow>(terminals: &[&str]) {
    let rendered = mermaid::<W>();
    assert!(rendered.contains("stateDiagram-v2"), "{rendered}");
    for t in W::TRANSITIONS {
        let line = format!("    {} --> {}: {}\n", t.from, t.to, t.on);
        assert!(
            rendered.contains(&line),
            "{} diagram lacks {line:?}:\n{rendered}",
            W::KIND
        );
    }
    let mut ends: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.trim().strip_suffix(" --> [*]"))
        .collect();
    ends.sort_unstable();
    let mut expected = terminals.to_vec();
    expected.sort_unstable();
    assert_eq!(ends, expected, "{} diagram ends:\n{rendered}", W::KIND);
}

#[test]
fn lifecycle_diagrams_show_every_transition_and_end() {
    // A cancelled rotation still records late results (Cancelled --SecretIssued--> Cancelled),
    // so the diagram shows no end marker for it.
    shows_transitions_and_ends::<Rotation>(&["Done", "Failed"]);
    shows_transitions_and_ends::<Decommission>(&["Cancelled", "Decommissioned", "Kept"]);
    shows_transitions_and_ends::<Expiry>(&["Ended"]);
}

#[test]
fn review_diagrams_show_every_transition_and_end() {
    shows_transitions_and_ends::<ReviewCampaign>(&["Closed", "Failed"]);
    shows_transitions_and_ends::<ReviewItemMachine>(&["Closed"]);
}

#[test]
fn detection_diagrams_show_every_transition_and_end() {
    // Asking re-enters itself on the approval reminder, so it is no end.
    shows_transitions_and_ends::<Freeze>(&[
        "Alerted",
        "Decommissioning",
        "Dismissed",
        "Failed",
        "Kept",
        "Unfrozen",
    ]);
    shows_transitions_and_ends::<ShadowAgent>(&["Adopted", "Failed", "Released"]);
}

/// Every declared transition, and the start and end markers, appear in the rendered diagram.
#[test]
fn diagram_shows_every_transition() {
    fn shows_all<W: Workflow>() {
        let rendered = mermaid::<W>();
        assert!(rendered.contains("stateDiagram-v2"), "{rendered}");
        for t in W::TRANSITIONS {
            let line = format!("    {} --> {}: {}\n", t.from, t.to, t.on);
            assert!(
                rendered.contains(&line),
                "{} diagram lacks {line:?}:\n{rendered}",
                W::KIND
            );
        }
        for terminal in ["Denied", "Expired", "Cancelled", "Failed"] {
            assert!(
                rendered.contains(&format!("    {terminal} --> [*]\n")),
                "{} diagram does not end at {terminal}:\n{rendered}",
                W::KIND
            );
        }
        assert!(
            !rendered.contains("AwaitingApproval --> [*]"),
            "a waiting state is not an end:\n{rendered}"
        );
    }
    shows_all::<Onboarding>();
    shows_all::<ScopeChange>();
}
