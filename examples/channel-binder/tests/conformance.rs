//! The channel binder passes the conformance kit (one trial per scenario), and each fault of
//! `channel_binder::Fault` makes the trial that guards against it fail.

mod support;

use std::process::ExitCode;

use channel_binder::Fault;
use stream_core::conformance::Scenario;

/// Which trial must catch which fault.
const MUTATIONS: [(Fault, Scenario); 5] = [
    (Fault::NoDeadLetter, Scenario::RetryBackOffThenDeadLetter),
    (
        Fault::IgnoreRequiredGroups,
        Scenario::RequiredGroupsExistBeforeConsumers,
    ),
    (
        Fault::LeakInternalHeaders,
        Scenario::InternalHeadersStayInside,
    ),
    (Fault::AbortInFlightOnStop, Scenario::StopSettlesInFlight),
    (Fault::RedeliverAfterAck, Scenario::NoRedeliveryAfterAck),
];

fn main() -> ExitCode {
    // The mutation check first: a kit that passes a faulty binder proves nothing.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listing = std::env::args().any(|a| a == "--list");
    if !listing {
        for (fault, scenario) in MUTATIONS {
            match rt.block_on(support::kit(Some(fault)).run_scenario(scenario)) {
                Err(failure) => {
                    eprintln!("mutation {fault:?}: caught by {scenario}: {failure}");
                }
                Ok(()) => {
                    eprintln!(
                        "mutation {fault:?}: NOT caught: {scenario} passed on a binder with that fault"
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    drop(rt);
    support::kit(None).run()
}
