//! Port conformance suites, written once against the port traits so every adapter runs the same
//! code: the embedded SQLite / file adapters (`embedded_conformance.rs`) and the AWS adapters
//! against moto (`tests/tests/aws/adapters.rs`). Each property is a `pub async fn`; the
//! `*_suite!` macros below list every property once and register one test per property for an
//! adapter, so a property added here runs on every adapter of its port.
//!
//! A test crate that includes this module may use only some of the properties.
#![allow(dead_code)]

pub mod personal_tokens;
pub mod queue;
pub mod sessions;
pub mod store;
pub mod vault;

use std::any::Any;
use std::sync::Arc;

/// A port under test plus whatever keeps its backing storage alive (a temp dir, a table to drop).
pub struct Subject<P: ?Sized> {
    pub port: Arc<P>,
    _keep: Box<dyn Any + Send>,
}

impl<P: ?Sized> Subject<P> {
    pub fn new(port: Arc<P>, keep: impl Any + Send) -> Self {
        Self {
            port,
            _keep: Box::new(keep),
        }
    }
}

/// One test per store property, in module `$module`: `$open` makes an [`store::Opener`] on fresh
/// storage; `$test` is the test attribute (`tokio::test`, or its multi-thread flavour).
macro_rules! store_suite {
    ($module:ident, $open:expr, $test:meta) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance::store_suite!(@each $open, [$test];
                create_with_version_zero,
                update_bumps_version,
                stale_version_conflicts_and_writes_nothing,
                history_in_seq_order,
                timers_set_cancel_rearm,
                due_timers_respects_now_and_limit,
                agents_upsert_and_lookup,
                a_stale_agent_read_conflicts_and_writes_nothing,
                approvals_open_close_and_filter,
                approval_votes_and_messages_are_kept,
                audit_is_hash_chained_and_pages,
                audit_tips_are_where_the_trail_ends,
                a_large_audit_append_lands_whole,
                a_workflows_audit_records_newest_first,
                commit_batch_rolls_back_conflicts_alone,
                inbound_ids_are_remembered,
                cursors_are_kept_by_name,
                groups_scope_usage_and_messages,
                clients_and_baselines,
                grants_are_evidence_kept_once_and_read_by_client,
                agents_are_found_through_their_indexes,
                counts_for_the_overview,
            );
            #[$test]
            async fn survives_reopen() {
                $crate::conformance::store::survives_reopen(&$open).await;
            }
        }
    };
    (@each $open:expr, [$test:meta]; $($property:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $property() {
                let open = $open;
                $crate::conformance::store::$property(&*open()).await;
            }
        )*
    };
}
pub(crate) use store_suite;

/// One test per queue property, in module `$module`: `$fresh` makes a fresh queue
/// [`Subject`]; `$tick` is the adapter's clock resolution.
macro_rules! queue_suite {
    ($module:ident, $fresh:expr, $tick:expr, $test:meta) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance::queue_suite!(@timed $fresh, $tick, [$test];
                send_receive_ack,
                delay_hides_until_due,
                visibility_timeout_redelivers,
                fifo_one_in_flight_per_group,
                order_within_group,
                nack_with_delay,
                dead_letter_after_max_receives,
                depth_counts_waiting_and_in_flight,
                send_and_ack_does_both,
            );
            $crate::conformance::queue_suite!(@untimed $fresh, [$test];
                dedupe_id_drops_duplicates,
                dedupe_window_outlives_the_ack,
            );
        }
    };
    (@timed $fresh:expr, $tick:expr, [$test:meta]; $($property:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $property() {
                let q = $fresh;
                $crate::conformance::queue::$property(&*q.port, $tick).await;
            }
        )*
    };
    (@untimed $fresh:expr, [$test:meta]; $($property:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $property() {
                let q = $fresh;
                $crate::conformance::queue::$property(&*q.port).await;
            }
        )*
    };
}
pub(crate) use queue_suite;

/// One test per vault property, in module `$module`: `$fresh` makes a fresh vault [`Subject`].
macro_rules! vault_suite {
    ($module:ident, $fresh:expr, $test:meta) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance::vault_suite!(@each $fresh, [$test];
                put_get_by_stage,
                new_current_demotes_old_to_previous,
                pending_is_separate,
                put_is_idempotent_per_version,
                versions_list_ids_and_stages_never_values,
                secrets_are_independent,
                version_ids_must_be_tokens,
                deletion_is_scheduled_with_a_recovery_window,
                a_version_without_a_stage_is_never_read,
            );
        }
    };
    (@each $fresh:expr, [$test:meta]; $($property:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $property() {
                let v = $fresh;
                $crate::conformance::vault::$property(&*v.port).await;
            }
        )*
    };
}
pub(crate) use vault_suite;

/// One test per personal-token property, in module `$module`: `$fresh` makes a fresh
/// [`Subject`].
macro_rules! tokens_suite {
    ($module:ident, $fresh:expr, $test:meta) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance::tokens_suite!(@each $fresh, [$test];
                put_get_and_list_in_creation_order,
                an_id_is_never_replaced,
                revoking_keeps_the_first_time,
            );
        }
    };
    (@each $fresh:expr, [$test:meta]; $($property:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $property() {
                let t = $fresh;
                $crate::conformance::personal_tokens::$property(&*t.port).await;
            }
        )*
    };
}
pub(crate) use tokens_suite;

/// One test per dashboard-session property, in module `$module`: `$fresh` makes a fresh
/// [`Subject`].
macro_rules! sessions_suite {
    ($module:ident, $fresh:expr, $test:meta) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance::sessions_suite!(@each $fresh, [$test];
                put_get_touch_and_end,
                a_session_is_never_replaced,
                a_sign_in_is_taken_once,
            );
        }
    };
    (@each $fresh:expr, [$test:meta]; $($property:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $property() {
                let t = $fresh;
                $crate::conformance::sessions::$property(&*t.port).await;
            }
        )*
    };
}
pub(crate) use sessions_suite;
