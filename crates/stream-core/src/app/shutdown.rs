//! Suppliers' pollers, signals and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use stream_config::BindingProperties;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::output::OutputBinding;
use super::{StreamApp, StreamError};
use crate::function::ErasedFunction;

/// Polls a supplier every `poller.fixed-delay` (after `poller.initial-delay`), up to
/// `poller.max-messages-per-poll` messages per poll, until `stop` turns true.
pub(crate) fn spawn_supplier(
    name: String,
    supplier: ErasedFunction,
    output: Arc<OutputBinding>,
    props: &BindingProperties,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, StreamError> {
    let poller = &props.producer.poller;
    let cron = poller
        .cron
        .as_deref()
        .map(|expr| {
            parse_cron(expr).map_err(|reason| StreamError::InvalidBinding {
                binding: output.binding.to_string(),
                reason: format!(
                    "`spring.cloud.stream.bindings.{}.producer.poller.cron` = `{expr}`: {reason}",
                    output.binding
                ),
            })
        })
        .transpose()?;
    let initial = poller.initial_delay;
    let delay = poller.fixed_delay;
    let per_poll = poller.max_messages_per_poll.max(1);
    let ctx = output.conversion.clone();
    let span = tracing::info_span!("stream.supplier", supplier = %name, binding = %output.binding);
    Ok(tokio::spawn(
        async move {
            if !pause(&mut stop, initial).await {
                return;
            }
            loop {
                // A stopped output binding (producer.auto-startup=false, or stopped through
                // the admin endpoint) stops the poller too: nothing is produced to be refused.
                let polls = if output.is_running() { per_poll } else { 0 };
                for _ in 0..polls {
                    match supplier.call(None, &ctx, &ctx).await {
                        Ok(Some(message)) => {
                            if let Err(e) = output.send(message).await {
                                tracing::error!(error = %e, "supplier output could not be sent");
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "supplier failed");
                            break;
                        }
                    }
                }
                let wait = match &cron {
                    Some(cron) => until_next(cron),
                    None => delay,
                };
                if !pause(&mut stop, wait).await {
                    return;
                }
            }
        }
        .instrument(span),
    ))
}

/// Parses a Spring cron expression: six fields (second minute hour day-of-month month
/// day-of-week), day-of-week 0-7 or MON-SUN, both day fields must match when both are given.
pub(crate) fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .year(croner::parser::Year::Disallowed)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| {
            format!("{e}; expected six fields: second minute hour day-of-month month day-of-week")
        })
}

/// Time until the cron expression's next occurrence (local time, as Spring's scheduler).
fn until_next(cron: &croner::Cron) -> Duration {
    let now = chrono::Local::now();
    match cron.find_next_occurrence(&now, false) {
        Ok(next) => (next - now).to_std().unwrap_or(Duration::ZERO),
        Err(e) => {
            tracing::error!(error = %e, "cron expression has no next occurrence; polling stops");
            Duration::MAX
        }
    }
}

/// Sleeps; false when stopped meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !*stop.borrow()
}

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => if let Err(e) = r {
                        tracing::error!(error = %e, "cannot listen for SIGINT");
                    },
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; waiting for SIGINT only");
                if let Err(e) = tokio::signal::ctrl_c().await {
                    tracing::error!(error = %e, "cannot listen for SIGINT");
                }
            }
        }
    }
    #[cfg(not(unix))]
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot listen for SIGINT");
    }
}

pub(crate) async fn graceful(app: StreamApp) -> Result<(), StreamError> {
    let timeout = app.shutdown_timeout;
    let mut problems = Vec::new();
    app.supplier_stop.send_replace(true);
    for s in app.suppliers {
        if let Err(e) = s.await {
            problems.push(format!("supplier task: {e}"));
        }
    }
    // Stream functions first: their inputs end, they send what they hold (a window's
    // aggregate), and what that acknowledges settles before the consumers stop.
    for runner in app.streams {
        if let Err(e) = runner.stop(timeout).await {
            problems.push(e);
        }
    }
    tracing::info!(
        consumers = app.consumers.len(),
        ?timeout,
        "stopping consumers; in-flight messages settle first"
    );
    for binding in &app.consumers {
        match tokio::time::timeout(timeout, binding.stop()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("binding `{}`: {e}", binding.name())),
            Err(_) => problems.push(format!(
                "binding `{}` did not settle its in-flight messages within {timeout:?}",
                binding.name()
            )),
        }
    }
    for (name, p) in &app.pollables {
        if let Err(e) = p.close().await {
            problems.push(format!("pollable `{name}`: {e}"));
        }
    }
    let mut producers: Vec<Arc<OutputBinding>> = app.outputs.values().cloned().collect();
    producers.extend(app.bridge.dynamic.lock().await.drain());
    for output in producers {
        let flushed = tokio::time::timeout(timeout, async {
            output.producer.flush().await?;
            output.producer.close().await
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("producer `{}`: {e}", output.binding)),
            Err(_) => problems.push(format!(
                "producer `{}` did not flush within {timeout:?}",
                output.binding
            )),
        }
    }
    for (name, binder) in app.shared.binders.all().await {
        if let Err(e) = binder.close().await {
            problems.push(format!("binder `{name}`: {e}"));
        }
    }
    #[cfg(feature = "admin")]
    if let Some(admin) = app.admin {
        admin.stop().await;
    }
    if problems.is_empty() {
        tracing::info!("shutdown complete");
        Ok(())
    } else {
        for p in &problems {
            tracing::error!("{p}");
        }
        Err(StreamError::Shutdown(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spring_cron_has_six_fields_and_sunday_is_0_or_7() {
        assert!(parse_cron("*/5 * * * * *").is_ok());
        assert!(parse_cron("0 0 9 * * MON-FRI").is_ok());
        assert!(parse_cron("0 0 9 * * 0,7").is_ok());
        let err = parse_cron("0 9 * * *").unwrap_err();
        assert!(err.contains("six fields"), "{err}");
        assert!(parse_cron("not a cron").is_err());
    }

    #[test]
    fn next_occurrence_is_within_the_period() {
        let every_second = parse_cron("* * * * * *").unwrap();
        assert!(until_next(&every_second) <= Duration::from_secs(1));
    }
}
