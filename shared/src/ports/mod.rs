//! Ports: the small traits the engine talks through. Adapters implement them (embedded default
//! here; AWS, Okta and Slack in their own modules); one conformance suite per port runs against
//! every adapter.

pub mod clock;
pub mod directory;
pub mod human_channel;
pub mod idp;
pub mod outbox;
pub mod personal_tokens;
pub mod queue;
pub mod sessions;
pub mod store;
pub mod vault;

pub use clock::Clock;
pub use directory::Directory;
pub use human_channel::HumanChannel;
pub use idp::IdentityProvider;
pub use outbox::Outbox;
pub use personal_tokens::PersonalTokens;
pub use queue::Queue;
pub use sessions::Sessions;
pub use store::Store;
pub use vault::Vault;
