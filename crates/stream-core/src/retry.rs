//! Consumer-side retry (spec §3): how many attempts, how long to sleep between them, and which
//! errors are worth retrying — Spring Cloud Stream's `RetryTemplate` with an
//! `ExponentialBackOffPolicy` and a cause-walking `BinaryExceptionClassifier`.
//!
//! ```
//! use std::time::Duration;
//! use stream_core::FunctionError;
//! use stream_core::retry::{BackOff, RetryPolicy};
//!
//! let policy = RetryPolicy::builder()
//!     .max_attempts(3)
//!     .back_off(BackOff::default())
//!     .retryable("validation", false)
//!     .build();
//! let sleeps: Vec<Duration> = policy.sleeps().collect();
//! assert_eq!(sleeps, [Duration::from_millis(1000), Duration::from_millis(2000)]);
//! assert!(!policy.is_retryable(&FunctionError::msg("bad").with_kind("validation")));
//! assert!(policy.is_retryable(&FunctionError::msg("timeout")));
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::error::FunctionError;

/// Exponential back-off: sleep `initial`, then `min(previous * multiplier, max)` (spring-retry's
/// `ExponentialBackOffPolicy`). The first sleep is also capped at `max`; a multiplier below 1
/// (or not a number) counts as 1.
///
/// ```
/// use std::time::Duration;
/// use stream_core::retry::BackOff;
/// let b = BackOff::new(Duration::from_millis(1000), Duration::from_millis(3000), 3.0);
/// let ms: Vec<u128> = b.delays().take(4).map(|d| d.as_millis()).collect();
/// assert_eq!(ms, [1000, 3000, 3000, 3000]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackOff {
    /// First sleep (`back-off-initial-interval`, default 1000 ms).
    pub initial: Duration,
    /// Longest sleep (`back-off-max-interval`, default 10000 ms).
    pub max: Duration,
    /// Growth factor between sleeps (`back-off-multiplier`, default 2.0).
    pub multiplier: f64,
}

impl Default for BackOff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(1000),
            max: Duration::from_millis(10_000),
            multiplier: 2.0,
        }
    }
}

impl BackOff {
    /// A back-off from its three properties.
    pub fn new(initial: Duration, max: Duration, multiplier: f64) -> Self {
        Self {
            initial,
            max,
            multiplier,
        }
    }

    /// A fixed sleep between attempts (multiplier 1).
    pub fn fixed(interval: Duration) -> Self {
        Self::new(interval, interval, 1.0)
    }

    /// The multiplier actually used: at least 1.
    pub fn effective_multiplier(&self) -> f64 {
        if self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        }
    }

    /// The endless sequence of sleeps.
    pub fn delays(&self) -> Delays {
        Delays {
            next: self.initial,
            max: self.max,
            multiplier: self.effective_multiplier(),
        }
    }
}

/// Iterator over the sleeps of a [`BackOff`]; endless (take what you need).
#[derive(Clone, Debug)]
pub struct Delays {
    next: Duration,
    max: Duration,
    multiplier: f64,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.next >= self.max {
            return Some(self.max);
        }
        let current = self.next;
        self.next = Duration::try_from_secs_f64(current.as_secs_f64() * self.multiplier)
            .unwrap_or(self.max)
            .min(self.max);
        Some(current)
    }
}

/// Decides whether an error is worth another attempt. Object safe: a binder may hold a
/// `Box<dyn RetryClassifier>`. Implemented by [`RetryPolicy`] and by any
/// `Fn(&FunctionError) -> bool + Send + Sync`.
pub trait RetryClassifier: Send + Sync {
    /// Whether `error` should be retried.
    fn is_retryable(&self, error: &FunctionError) -> bool;
}

impl<F> RetryClassifier for F
where
    F: Fn(&FunctionError) -> bool + Send + Sync,
{
    fn is_retryable(&self, error: &FunctionError) -> bool {
        self(error)
    }
}

/// Whether the error (or a recorded cause) is a payload conversion failure.
fn is_conversion_error(error: &FunctionError) -> bool {
    let kind = std::any::type_name::<crate::error::ConversionError>();
    std::iter::once(error.kind())
        .chain(error.cause_kinds())
        .any(|k| k == kind)
}

/// Attempts, back-off and retryable errors of a consumer binding (`max-attempts`,
/// `back-off-*`, `default-retryable`, `retryable-exceptions`).
///
/// **Classification** ([`RetryPolicy::is_retryable`]): errors with a
/// [`special`](FunctionError::special) outcome are never retried. Otherwise the error's kinds
/// are walked from the outside in: its own [`kind`](FunctionError::kind) (an explicit kind, or
/// the Rust type name of the error it was made from), then the kinds of its causes recorded with
/// [`FunctionError::with_cause_kind`] / [`FunctionError::rekinded_as`]. The first level with an
/// entry in `retryable-exceptions` decides, else `default-retryable` does. A configured key
/// matches a kind when equal, when equal to the kind's last `::` segment (`ParseIntError`
/// matches `core::num::error::ParseIntError`), or when equal to either ignoring case, `-` and
/// `_` (`parse-int-error`). Within one level an exact match beats a last-segment match, which
/// beats a relaxed one. Without a matching entry, a payload conversion failure (kind
/// `stream_core::error::ConversionError`, key `ConversionError`) is not retried, as Spring never
/// retries a `MessageConversionException`; `retryable-exceptions.ConversionError=true` retries it.
///
/// ```
/// use stream_core::{ConversionError, FunctionError};
/// use stream_core::retry::{BackOff, RetryPolicy};
/// let conversion = || FunctionError::from(ConversionError::InvalidContentType("x".into()));
/// assert!(!RetryPolicy::default().is_retryable(&conversion()));
/// let retried = RetryPolicy::new(3, BackOff::default(), true, [("ConversionError", true)]);
/// assert!(retried.is_retryable(&conversion()));
/// assert!(RetryPolicy::default().is_retryable(&FunctionError::msg("timeout")));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    back_off: BackOff,
    default_retryable: bool,
    retryable: Vec<(String, bool)>,
}

impl Default for RetryPolicy {
    /// Spring's defaults: 3 attempts, 1000 ms × 2.0 up to 10000 ms, everything retryable.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            back_off: BackOff::default(),
            default_retryable: true,
            retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// A policy from the binding properties. `max_attempts` 0 counts as 1 (no retry).
    pub fn new<K: Into<String>>(
        max_attempts: u32,
        back_off: BackOff,
        default_retryable: bool,
        retryable_exceptions: impl IntoIterator<Item = (K, bool)>,
    ) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            back_off,
            default_retryable,
            retryable: retryable_exceptions
                .into_iter()
                .map(|(k, v)| (k.into(), v))
                .collect(),
        }
    }

    /// A builder starting from [`RetryPolicy::default`].
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            policy: RetryPolicy::default(),
        }
    }

    /// A policy with a single attempt.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Total attempts, the first included (1 = no retry).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The back-off.
    pub fn back_off(&self) -> &BackOff {
        &self.back_off
    }

    /// Whether errors without a `retryable-exceptions` entry are retried.
    pub fn default_retryable(&self) -> bool {
        self.default_retryable
    }

    /// The `retryable-exceptions` entries, in configuration order.
    pub fn retryable_exceptions(&self) -> &[(String, bool)] {
        &self.retryable
    }

    /// How long to sleep before attempt `attempt` (1-based): `None` for the first attempt and
    /// for attempts beyond [`max_attempts`](Self::max_attempts).
    ///
    /// ```
    /// use std::time::Duration;
    /// use stream_core::retry::RetryPolicy;
    /// let p = RetryPolicy::default();
    /// assert_eq!(p.sleep_before_attempt(1), None);
    /// assert_eq!(p.sleep_before_attempt(3), Some(Duration::from_secs(2)));
    /// assert_eq!(p.sleep_before_attempt(4), None);
    /// ```
    pub fn sleep_before_attempt(&self, attempt: u32) -> Option<Duration> {
        if attempt < 2 || attempt > self.max_attempts {
            return None;
        }
        self.back_off.delays().nth((attempt - 2) as usize)
    }

    /// The sleeps between attempts: `max_attempts - 1` of them.
    pub fn sleeps(&self) -> impl Iterator<Item = Duration> + use<> {
        self.back_off
            .delays()
            .take(self.max_attempts.saturating_sub(1) as usize)
    }

    /// Whether `error` should be retried (see the type docs for the rules).
    pub fn is_retryable(&self, error: &FunctionError) -> bool {
        if error.special().is_some() {
            return false;
        }
        self.classify(error).unwrap_or_else(|| {
            // As Spring, which never retries a MessageConversionException: the same bytes
            // fail the same way on every attempt.
            !is_conversion_error(error) && self.default_retryable
        })
    }

    /// The decision of the closest `retryable-exceptions` entry, if one matches: the error's own
    /// kind first, then its recorded cause kinds, outermost first.
    fn classify(&self, error: &FunctionError) -> Option<bool> {
        if self.retryable.is_empty() {
            return None;
        }
        std::iter::once(error.kind())
            .chain(error.cause_kinds())
            .find_map(|kind| self.best_match(kind))
    }

    fn best_match(&self, kind: &str) -> Option<bool> {
        if kind.is_empty() {
            return None;
        }
        let mut best: Option<(u8, bool)> = None;
        for (key, retry) in &self.retryable {
            if let Some(score) = match_score(key, kind)
                && best.is_none_or(|(s, _)| score > s)
            {
                best = Some((score, *retry));
            }
        }
        best.map(|(_, retry)| retry)
    }

    /// Runs `attempt` until it succeeds, the error is not retryable, or the attempts are
    /// used up, sleeping (with `tokio::time::sleep`) between attempts. The closure receives the
    /// 1-based attempt number, the value of the `deliveryAttempt` header.
    ///
    /// ```
    /// use stream_core::FunctionError;
    /// use stream_core::retry::{BackOff, RetryPolicy};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let policy = RetryPolicy::builder()
    ///     .max_attempts(3)
    ///     .back_off(BackOff::fixed(std::time::Duration::ZERO))
    ///     .build();
    /// let out = policy
    ///     .run(|attempt| async move {
    ///         if attempt < 3 { Err(FunctionError::msg("flaky")) } else { Ok(attempt) }
    ///     })
    ///     .await;
    /// assert_eq!(out.ok(), Some(3));
    /// # }
    /// ```
    pub async fn run<F, Fut, T>(&self, mut attempt: F) -> Result<T, RetryExhausted>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, FunctionError>>,
    {
        let mut delays = self.back_off.delays();
        let mut n = 1;
        loop {
            let error = match attempt(n).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if n >= self.max_attempts || !self.is_retryable(&error) {
                return Err(RetryExhausted { error, attempts: n });
            }
            let delay = delays.next().unwrap_or(self.back_off.max);
            tracing::debug!(
                attempt = n,
                next_attempt = n + 1,
                max_attempts = self.max_attempts,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                kind = error.kind(),
                error = %error,
                "attempt failed; retrying after back-off"
            );
            tokio::time::sleep(delay).await;
            n += 1;
        }
    }
}

impl RetryClassifier for RetryPolicy {
    fn is_retryable(&self, error: &FunctionError) -> bool {
        RetryPolicy::is_retryable(self, error)
    }
}

/// Strips generic arguments and returns the last `::` segment.
fn last_segment(kind: &str) -> &str {
    let base = kind.split('<').next().unwrap_or(kind);
    base.rsplit("::").next().unwrap_or(base)
}

fn relaxed(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// 3: exact, 2: last segment, 1: relaxed; `None`: no match.
fn match_score(key: &str, kind: &str) -> Option<u8> {
    let key = key.trim();
    if key == kind {
        return Some(3);
    }
    let last = last_segment(kind);
    if key == last {
        return Some(2);
    }
    let key = relaxed(key);
    (key == relaxed(kind) || key == relaxed(last)).then_some(1)
}

/// Builds a [`RetryPolicy`]; see [`RetryPolicy::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
}

impl RetryPolicyBuilder {
    /// Total attempts (`max-attempts`, default 3; 0 counts as 1).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.policy.max_attempts = max_attempts.max(1);
        self
    }

    /// The back-off (default 1000 ms × 2.0 up to 10000 ms).
    pub fn back_off(mut self, back_off: BackOff) -> Self {
        self.policy.back_off = back_off;
        self
    }

    /// Whether unlisted errors are retried (`default-retryable`, default true).
    pub fn default_retryable(mut self, retryable: bool) -> Self {
        self.policy.default_retryable = retryable;
        self
    }

    /// Adds a `retryable-exceptions` entry: errors of `kind` are (not) retried.
    pub fn retryable(mut self, kind: impl Into<String>, retryable: bool) -> Self {
        self.policy.retryable.push((kind.into(), retryable));
        self
    }

    /// The policy.
    pub fn build(self) -> RetryPolicy {
        self.policy
    }
}

/// [`RetryPolicy::run`] gave up: the last error and how many attempts were made.
#[derive(Debug)]
#[non_exhaustive]
pub struct RetryExhausted {
    /// The error of the last attempt.
    pub error: FunctionError,
    /// Attempts made (1-based count).
    pub attempts: u32,
}

impl fmt::Display for RetryExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt(s): {}",
            self.attempts, self.error
        )
    }
}

impl StdError for RetryExhausted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.error.inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn retry_default_back_off_sequence() {
        let p = RetryPolicy::builder().max_attempts(3).build();
        assert_eq!(p.sleeps().collect::<Vec<_>>(), ms(&[1000, 2000]));
        let p = RetryPolicy::builder().max_attempts(6).build();
        assert_eq!(
            p.sleeps().collect::<Vec<_>>(),
            ms(&[1000, 2000, 4000, 8000, 10_000])
        );
        assert_eq!(RetryPolicy::no_retry().sleeps().count(), 0);
        assert_eq!(
            RetryPolicy::builder()
                .max_attempts(0)
                .build()
                .max_attempts(),
            1
        );
    }

    #[test]
    fn retry_capped_back_off_sequence() {
        let b = BackOff::new(
            Duration::from_millis(1000),
            Duration::from_millis(3000),
            3.0,
        );
        let p = RetryPolicy::new(5, b, true, Vec::<(String, bool)>::new());
        assert_eq!(
            p.sleeps().collect::<Vec<_>>(),
            ms(&[1000, 3000, 3000, 3000])
        );
        assert_eq!(p.sleep_before_attempt(2), Some(Duration::from_millis(1000)));
        assert_eq!(p.sleep_before_attempt(5), Some(Duration::from_millis(3000)));
        assert_eq!(p.sleep_before_attempt(6), None);
    }

    #[test]
    fn retry_back_off_multiplier_below_one_clamps() {
        let b = BackOff::new(Duration::from_millis(500), Duration::from_millis(3000), 0.5);
        assert_eq!(b.delays().take(3).collect::<Vec<_>>(), ms(&[500, 500, 500]));
        let nan = BackOff::new(Duration::from_millis(5), Duration::from_millis(9), f64::NAN);
        assert_eq!(nan.delays().take(2).collect::<Vec<_>>(), ms(&[5, 5]));
        // Initial above max is capped; a huge multiplier saturates at max.
        let b = BackOff::new(Duration::from_secs(5), Duration::from_secs(2), f64::MAX);
        assert_eq!(b.delays().take(2).collect::<Vec<_>>(), ms(&[2000, 2000]));
        let b = BackOff::new(
            Duration::from_secs(1),
            Duration::from_secs(2),
            f64::INFINITY,
        );
        assert_eq!(
            b.delays().take(3).collect::<Vec<_>>(),
            ms(&[1000, 2000, 2000])
        );
    }

    /// `Outer`, whose cause is a `ParseIntError`, recorded as a cause kind.
    #[derive(Debug)]
    struct Outer;

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not read amount")
        }
    }

    impl StdError for Outer {}

    fn chained() -> FunctionError {
        FunctionError::new(Outer).with_cause_kind(std::any::type_name::<std::num::ParseIntError>())
    }

    #[test]
    fn retry_classifies_over_cause_chain() {
        let err = chained();
        assert!(err.kind().ends_with("::Outer"));
        let classify = |entries: &[(&str, bool)], default: bool| {
            RetryPolicy::new(
                3,
                BackOff::default(),
                default,
                entries.iter().map(|(k, v)| (*k, *v)),
            )
            .is_retryable(&err)
        };
        // No entry: default-retryable decides.
        assert!(classify(&[], true));
        assert!(!classify(&[], false));
        // A cause matches (last segment, relaxed spelling).
        assert!(!classify(&[("ParseIntError", false)], true));
        assert!(!classify(&[("parse-int-error", false)], true));
        assert!(!classify(&[("PARSE_INT_ERROR", false)], true));
        assert!(classify(&[("ParseIntError", true)], false));
        // The outermost level wins over its cause.
        assert!(classify(
            &[("ParseIntError", false), ("Outer", true)],
            false
        ));
        assert!(!classify(
            &[("outer", false), ("ParseIntError", true)],
            true
        ));
        // Full path of the kind matches; exact beats last-segment at the same level.
        let full = err.kind().to_owned();
        assert!(!classify(&[("Outer", true), (full.as_str(), false)], true));
        // Unrelated keys fall through to the default.
        assert!(classify(&[("Timeout", false)], true));
    }

    #[test]
    fn retry_classifies_explicit_kinds() {
        let p = RetryPolicy::builder()
            .default_retryable(true)
            .retryable("validation", false)
            .retryable("core::num::error::ParseIntError", false)
            .build();
        assert!(!p.is_retryable(&FunctionError::msg("x").with_kind("validation")));
        let parse: FunctionError = "x"
            .parse::<i32>()
            .err()
            .map_or_else(|| FunctionError::msg("?"), FunctionError::new);
        assert!(!p.is_retryable(&parse));
        // A re-kinded error still matches through its former kind, now a cause kind.
        let p = RetryPolicy::builder()
            .retryable("ParseIntError", false)
            .build();
        assert!(!p.is_retryable(&parse.rekinded_as("amount")));
        // A panic has its own kind.
        let p = RetryPolicy::builder().retryable("panic", false).build();
        let payload: Box<dyn std::any::Any + Send> = Box::new("boom");
        let panic = FunctionError::panic(&*payload);
        assert_eq!(panic.kind(), crate::error::PANIC_KIND);
        assert_eq!(panic.to_string(), "panicked: boom");
        assert!(!p.is_retryable(&panic));
    }

    #[test]
    fn retry_special_outcomes_never_retried() {
        let p = RetryPolicy::builder()
            .retryable("reject-and-dont-requeue", true)
            .retryable("immediate-acknowledge", true)
            .build();
        assert!(!p.is_retryable(&FunctionError::reject_and_dont_requeue("bad")));
        assert!(!p.is_retryable(&FunctionError::immediate_acknowledge("skip")));
    }

    #[test]
    fn retry_classifier_is_object_safe() {
        let classifiers: Vec<Box<dyn RetryClassifier>> = vec![
            Box::new(RetryPolicy::default()),
            Box::new(|e: &FunctionError| e.kind() == "transient"),
        ];
        let err = FunctionError::msg("x").with_kind("transient");
        assert!(classifiers.iter().all(|c| c.is_retryable(&err)));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_run_sleeps_with_back_off_and_counts_attempts() {
        let policy = RetryPolicy::builder().max_attempts(4).build();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let start = tokio::time::Instant::now();
        let result = policy
            .run(|attempt| {
                let seen = Arc::clone(&seen);
                async move {
                    if let Ok(mut s) = seen.lock() {
                        s.push((attempt, start.elapsed()));
                    }
                    Err::<(), _>(FunctionError::msg("down"))
                }
            })
            .await;
        let err = result.err();
        assert_eq!(err.as_ref().map(|e| e.attempts), Some(4));
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("gave up after 4 attempt(s): down")
        );
        // 1000 + 2000 + 4000 ms of virtual time.
        assert_eq!(start.elapsed(), Duration::from_millis(7000));
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(
            seen,
            vec![
                (1, Duration::ZERO),
                (2, Duration::from_millis(1000)),
                (3, Duration::from_millis(3000)),
                (4, Duration::from_millis(7000)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_run_stops_on_success_or_non_retryable() {
        let policy = RetryPolicy::builder()
            .max_attempts(5)
            .retryable("fatal", false)
            .build();
        let start = tokio::time::Instant::now();
        let ok = policy
            .run(|attempt| async move {
                if attempt == 2 {
                    Ok(attempt)
                } else {
                    Err(FunctionError::msg("again"))
                }
            })
            .await;
        assert_eq!(ok.ok(), Some(2));
        assert_eq!(start.elapsed(), Duration::from_millis(1000));

        let start = tokio::time::Instant::now();
        let fatal = policy
            .run(|_| async { Err::<(), _>(FunctionError::msg("boom").with_kind("fatal")) })
            .await;
        assert_eq!(fatal.err().map(|e| e.attempts), Some(1));
        let special = policy
            .run(|_| async { Err::<(), _>(FunctionError::reject_and_dont_requeue("no")) })
            .await;
        assert_eq!(special.err().map(|e| e.attempts), Some(1));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
