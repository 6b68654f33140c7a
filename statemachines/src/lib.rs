//! Steward's workflows as pure state machines.
//!
//! Every workflow is a [`Workflow`]: `(state, event, ctx) -> Step { state, commands }` or a
//! [`Rejected`] that says why. Machines never read a clock, the network or a disk: `Ctx` carries
//! the time and the loaded policy, and side effects leave as [`Command`] data whose results come
//! back as [`Event`]s. The durable engine in `shared` persists states and runs the commands.

pub mod agent;
pub mod approval;
pub mod command;
pub mod credential;
pub mod detection;
pub mod diagram;
pub mod event;
pub mod lifecycle;
pub mod policy;
pub mod receipt;
pub mod review;
pub mod sweep;
pub mod workflow;

pub mod machines;
// The machines keep their historical top-level paths (`statemachines::rotation::...`).
pub use machines::{
    certificate_expiry, certificate_rotation, decommission, discovery, expiry, freeze, key_expiry,
    key_rotation, onboarding, owner_loss, review_campaign, review_item, rotation, scope_change,
};

pub use agent::{Agent, AgentChange, AgentFlag, AgentRequest, AgentStatus};
pub use approval::{ApprovalOutcome, ApprovalRequest, Decision, FollowUp, Vote};
pub use command::{Actor, AuditEvent, AuditKind, Command, IdpCommand, VaultCommand};
pub use event::Event;
pub use policy::Policy;
pub use workflow::{Ctx, Rejected, States, Step, Transition, Workflow};
