//! The kit's scenarios, grouped by what they prove.

mod delivery;
mod failures;
mod lifecycle;

use super::{Kit, Scenario, TrialResult};

/// Runs one scenario.
pub(super) async fn run(kit: &Kit, scenario: Scenario) -> TrialResult {
    match scenario {
        Scenario::RoundTripWithTypedHeaders => delivery::round_trip_with_typed_headers(kit).await,
        Scenario::InternalHeadersStayInside => delivery::internal_headers_stay_inside(kit).await,
        Scenario::AnonymousSubscribersEachGetACopy => {
            delivery::anonymous_subscribers_each_get_a_copy(kit).await
        }
        Scenario::GroupMembersShare => delivery::group_members_share(kit).await,
        Scenario::PartitionedInstances => delivery::partitioned_instances(kit).await,
        Scenario::PartitionedInstanceIndexList => {
            delivery::partitioned_instance_index_list(kit).await
        }
        Scenario::RequiredGroupsExistBeforeConsumers => {
            delivery::required_groups_exist_before_consumers(kit).await
        }
        Scenario::RetryAttemptsThenRecovery => failures::retry_attempts_then_recovery(kit).await,
        Scenario::RetryBackOffThenDeadLetter => {
            failures::retry_back_off_then_dead_letter(kit).await
        }
        Scenario::RejectWithoutRequeueDeadLetters => {
            failures::reject_without_requeue_dead_letters(kit).await
        }
        Scenario::RequeueReturnsTheMessage => failures::requeue_returns_the_message(kit).await,
        Scenario::ManualAcknowledgment => failures::manual_acknowledgment(kit).await,
        Scenario::AcknowledgeModeNone => failures::acknowledge_mode_none(kit).await,
        Scenario::BatchWithOneFailingMessage => failures::batch_with_one_failing_message(kit).await,
        Scenario::PollableAcceptRejectRequeue => {
            failures::pollable_accept_reject_requeue(kit).await
        }
        Scenario::StopSettlesInFlight => lifecycle::stop_settles_in_flight(kit).await,
        Scenario::PauseHoldsUntilResume => lifecycle::pause_holds_until_resume(kit).await,
        Scenario::AutoStartupFalse => lifecycle::auto_startup_false(kit).await,
        Scenario::NoRedeliveryAfterAck => lifecycle::no_redelivery_after_ack(kit).await,
        Scenario::LateBinding => lifecycle::late_binding(kit).await,
        Scenario::DeadConsumerIsReported => lifecycle::dead_consumer_is_reported(kit).await,
        Scenario::CapabilitiesMatchBehaviour => lifecycle::capabilities_match_behaviour(kit).await,
    }
}
