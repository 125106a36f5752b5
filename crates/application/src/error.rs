//! How failures are classified, once: every error of a use case says
//! whether retrying the same input can ever succeed. The Kafka consumer
//! (dead-letter or retry) and the HTTP answers (4xx/5xx or 503) both read
//! this, and nothing else.

/// Whether a failure is permanent.
pub trait Classify {
    /// `true` when retrying the same input can never succeed (invalid
    /// input, a refusal by the rules, data the store refuses); `false` when
    /// a later attempt may (the store or the gateway unavailable, contention).
    fn is_permanent(&self) -> bool;
}

/// A command lost the optimistic-concurrency race on every attempt the
/// retry policy allows: nothing was written; it may succeed later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{payment} kept changing: gave up after {attempts} attempts")]
pub struct Contended {
    /// The payment (or order) the command was about.
    pub payment: String,
    pub attempts: usize,
}

impl Classify for Contended {
    fn is_permanent(&self) -> bool {
        false
    }
}
