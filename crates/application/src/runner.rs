//! The one way a command runs: load the payment, decide on its current
//! state (the domain's `execute`), record the decision — events, projection
//! state, gateway transactions, outbox messages and the trigger's inbox
//! record — in ONE commit, and when someone else changed the payment
//! meanwhile, decide again on fresh state. One retry policy for every use
//! case ([`ATTEMPTS`]), ending in [`Contended`].
//!
//! The trigger is an argument of [`run`], not a field a use case may forget:
//! a message's inbox record is written with every change it causes.

use std::fmt;

use futures::StreamExt as _;

use chrono::{DateTime, Utc};
use payment_domain::{
    execute, Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentTransaction,
};

use crate::error::Contended;
use crate::ports::{
    Append, Commit, InboxEntry, OutboxMessage, PaymentRef, PaymentRepository, RecordedEvent,
    Snapshot, StoreError,
};

/// How often a command is decided before it gives up as [`Contended`]. Each
/// round of a race lets one writer through, so this bounds how many
/// concurrent commands on one payment (e.g. ten partial cancels) are all
/// served.
pub(crate) const ATTEMPTS: usize = 32;

/// How many payments [`run_all`] reads at once.
const BATCH_READS: usize = 8;

/// What triggered a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A consumed message: its inbox record is committed with the command's
    /// effect, so a redelivery is recognised and never applied twice.
    Message(InboxEntry),
    /// An HTTP request (its Idempotency-Key is guarded before the use case
    /// runs), a gateway notice, or a job of ours: nothing to record.
    Untracked,
}

impl Trigger {
    fn inbox(&self) -> Option<InboxEntry> {
        match self {
            Self::Message(entry) => Some(entry.clone()),
            Self::Untracked => None,
        }
    }
}

/// What a decision on the current state concluded.
// Built and taken apart within one attempt of one command: boxing would
// cost an allocation per command for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Decision<A, R> {
    /// Nothing to write: the command answers `A`.
    Answer(A),
    /// Nothing to write but the trigger's inbox record (the message was
    /// seen and changes nothing); then the command answers `A`.
    Acknowledge(A),
    /// Record `Change`; once committed the command goes on with `R`.
    Record(Change, R),
}

/// The events a decision appends, the state they fold to, and what is
/// written with them.
#[derive(Debug)]
pub(crate) struct Change {
    events: Vec<PaymentEvent>,
    state: Payment,
    transactions: Vec<PaymentTransaction>,
    outbox: Vec<OutboxMessage>,
}

impl Change {
    /// Decides `command` on `state` (`None`: the payment does not exist).
    pub(crate) fn decide(
        state: Option<&Payment>,
        command: &PaymentCommand,
    ) -> Result<Self, PaymentError> {
        let (state, events) = execute(state, command)?;
        Ok(Self {
            events,
            state,
            transactions: Vec::new(),
            outbox: Vec::new(),
        })
    }

    /// Decides one more command on the state so far.
    pub(crate) fn then(mut self, command: &PaymentCommand) -> Result<Self, PaymentError> {
        let (state, events) = execute(Some(&self.state), command)?;
        self.events.extend(events);
        self.state = state;
        Ok(self)
    }

    /// The state after the change.
    pub(crate) const fn state(&self) -> &Payment {
        &self.state
    }

    /// Writes `transaction` (created or settled) with the change.
    pub(crate) fn record(mut self, transaction: PaymentTransaction) -> Self {
        self.transactions.push(transaction);
        self
    }

    /// Publishes `message` with the change (through the outbox).
    pub(crate) fn announce(mut self, message: OutboxMessage) -> Self {
        self.outbox.push(message);
        self
    }
}

/// How a command ran.
#[allow(clippy::large_enum_variant)] // as Decision
#[derive(Debug)]
pub(crate) enum Ran<A, R> {
    /// Nothing was written (or only the inbox record): the decision's answer.
    Answered(A),
    /// The change was committed: the state it left, and what to go on with.
    Recorded(Payment, R),
}

impl fmt::Display for PaymentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "payment {id}"),
            Self::Order(order_id) => write!(f, "the payment of order {order_id}"),
        }
    }
}

/// Runs one command on the payment `which` refers to: `decide` judges the
/// loaded state at `now` (every attempt, on fresh state) and the runner
/// commits what it concluded together with `trigger`'s record.
///
/// # Errors
/// `decide`'s error; [`StoreError`] when the store fails — including
/// [`StoreError::AlreadyProcessed`] when `trigger` was handled before
/// (nothing written); [`Contended`] after [`ATTEMPTS`] lost races.
pub(crate) async fn run<S, A, R, E>(
    store: &S,
    which: &PaymentRef,
    trigger: &Trigger,
    decide: impl FnMut(Option<&Snapshot>, DateTime<Utc>) -> Result<Decision<A, R>, E>,
) -> Result<Ran<A, R>, E>
where
    S: PaymentRepository,
    E: From<StoreError> + From<Contended>,
{
    run_from(store, which, trigger, None, false, decide)
        .await
        .map(|(ran, _)| ran)
}

/// As [`run`], with two differences for a command that goes on with the
/// same payment (a confirm: started, then settled):
///
/// * `known`, when given, is what the FIRST attempt decides on instead of
///   a read — a snapshot the caller's own commit produced. The commit keeps
///   the version guard, so if anyone changed the payment since, it
///   conflicts and the next attempt reads fresh state as usual.
/// * when `keep` is set and the command recorded a change, it also answers
///   the snapshot that change produced (the decided-on snapshot with the
///   new events, state and transactions), for the next command to decide
///   on without reading it back.
///
/// # Errors
/// As [`run`].
pub(crate) async fn run_from<S, A, R, E>(
    store: &S,
    which: &PaymentRef,
    trigger: &Trigger,
    mut known: Option<Snapshot>,
    keep: bool,
    mut decide: impl FnMut(Option<&Snapshot>, DateTime<Utc>) -> Result<Decision<A, R>, E>,
) -> Result<(Ran<A, R>, Option<Snapshot>), E>
where
    S: PaymentRepository,
    E: From<StoreError> + From<Contended>,
{
    for _ in 0..ATTEMPTS {
        let loaded = match known.take() {
            Some(snapshot) => Some(snapshot),
            None => store.load(which).await?,
        };
        let (commit, outcome) = decided(loaded.as_ref(), trigger, &mut decide)?;
        let Some(commit) = commit else {
            return Ok((outcome, None));
        };
        let after = if keep {
            after_commit(loaded, &commit)
        } else {
            None
        };
        match store.commit(commit).await {
            Ok(()) => return Ok((outcome, after)),
            // Someone else changed the payment (or created the order's
            // payment) after it was loaded: decide again on fresh state.
            Err(StoreError::Conflict { .. } | StoreError::DuplicateOrder(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(Contended {
        payment: which.to_string(),
        attempts: ATTEMPTS,
    }
    .into())
}

/// The snapshot `commit` leaves when applied to `before` (`None` when it
/// appends nothing): its events follow the stream at the next versions, its
/// state is the new fold, and each of its transactions replaces the one with
/// the same id or, new, comes last (the latest requested) — as a read after
/// the commit would find them.
fn after_commit(before: Option<Snapshot>, commit: &Commit) -> Option<Snapshot> {
    let append = commit.append.as_ref()?;
    let (mut history, mut transactions) =
        before.map_or_else(Default::default, |s| (s.history, s.transactions));
    let payment_id = append.state.id();
    history.extend(
        append
            .events
            .iter()
            .zip(1..)
            .map(|(event, n)| RecordedEvent {
                payment_id,
                version: append.expected_version + n,
                occurred_at: append.occurred_at,
                event: event.clone(),
            }),
    );
    for written in &commit.transactions {
        match transactions.iter_mut().find(|t| t.id() == written.id()) {
            Some(existing) => *existing = written.clone(),
            None => transactions.push(written.clone()),
        }
    }
    Some(Snapshot {
        payment: append.state.clone(),
        history,
        transactions,
    })
}

/// Runs several commands, each on its own payment, and commits all their
/// decisions in ONE store transaction ([`PaymentRepository::commit_all`]):
/// `target` names a command's payment and trigger, `decide` judges it as
/// [`run`]'s `decide` does. Every decision is taken on a state read before
/// any of them is written, so the commands must concern distinct payments
/// (and orders).
///
/// Answers `None` when they cannot be committed together — a decision
/// failed, the store failed or refused (a race, a message seen before) —
/// and then nothing was written: run each with [`run`], which deals with
/// each failure as it should.
pub(crate) async fn run_all<S, T, A, R, E>(
    store: &S,
    commands: &[T],
    target: impl Fn(&T) -> (PaymentRef, Trigger),
    mut decide: impl FnMut(&T, Option<&Snapshot>, DateTime<Utc>) -> Result<Decision<A, R>, E>,
) -> Option<Vec<Ran<A, R>>>
where
    S: PaymentRepository,
    E: From<StoreError> + fmt::Display,
{
    // Every payment is read first, a few at a time, then every decision is
    // taken: the decisions (and the time they carry) come right before the
    // commit, not spread over the reads.
    let targets: Vec<(PaymentRef, Trigger)> = commands.iter().map(&target).collect();
    let reads: Vec<_> = targets.iter().map(|(which, _)| store.load(which)).collect();
    let loads: Vec<Result<Option<Snapshot>, StoreError>> = futures::stream::iter(reads)
        .buffered(BATCH_READS)
        .collect()
        .await;
    let mut commits = Vec::with_capacity(commands.len());
    let mut outcomes = Vec::with_capacity(commands.len());
    for ((command, (which, trigger)), loaded) in commands.iter().zip(&targets).zip(loads) {
        let prepared = match loaded {
            Ok(loaded) => decided(loaded.as_ref(), trigger, &mut |loaded, now| {
                decide(command, loaded, now)
            }),
            Err(error) => Err(E::from(error)),
        };
        match prepared {
            Ok((commit, outcome)) => {
                commits.extend(commit);
                outcomes.push(outcome);
            }
            Err(error) => {
                tracing::debug!(%which, %error, "not decided in a batch; one by one");
                return None;
            }
        }
    }
    match store.commit_all(commits).await {
        Ok(()) => Some(outcomes),
        Err(error) => {
            tracing::debug!(%error, commands = commands.len(), "batch not committed; one by one");
            None
        }
    }
}

/// One decision on `loaded`, judged at now: the commit that records it
/// (`None` when nothing is written) and the command's outcome once it is
/// committed.
fn decided<A, R, E>(
    loaded: Option<&Snapshot>,
    trigger: &Trigger,
    decide: &mut impl FnMut(Option<&Snapshot>, DateTime<Utc>) -> Result<Decision<A, R>, E>,
) -> Result<(Option<Commit>, Ran<A, R>), E> {
    let now = Utc::now();
    let expected_version = loaded.map_or(0, |s| s.payment.version());
    Ok(match decide(loaded, now)? {
        Decision::Answer(answer) => (None, Ran::Answered(answer)),
        Decision::Acknowledge(answer) => {
            let seen = trigger.inbox().map(|inbox| Commit {
                inbox: Some(inbox),
                ..Commit::default()
            });
            (seen, Ran::Answered(answer))
        }
        Decision::Record(change, next) => {
            let state = change.state.clone();
            let commit = Commit {
                append: Some(Append {
                    expected_version,
                    events: change.events,
                    state: change.state,
                    occurred_at: now,
                }),
                transactions: change.transactions,
                outbox: change.outbox,
                inbox: trigger.inbox(),
            };
            (Some(commit), Ran::Recorded(state, next))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::memory::MemoryRepository;
    use crate::testing::{payment_at, Stage};

    /// A store where someone else always wrote first.
    struct AlwaysChanged {
        inner: MemoryRepository,
        commits: AtomicUsize,
    }

    impl PaymentRepository for AlwaysChanged {
        async fn load(&self, which: &PaymentRef) -> Result<Option<Snapshot>, StoreError> {
            self.inner.load(which).await
        }
        async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
            self.commits.fetch_add(1, Ordering::SeqCst);
            let append = commit.append.unwrap();
            Err(StoreError::Conflict {
                payment_id: append.state.id(),
                expected_version: append.expected_version,
            })
        }
    }

    #[derive(Debug, thiserror::Error)]
    enum Failed {
        #[error(transparent)]
        Contended(#[from] Contended),
        #[error(transparent)]
        Store(#[from] StoreError),
    }

    #[tokio::test]
    async fn a_command_that_keeps_losing_the_race_is_contended_after_the_policy() {
        let inner = MemoryRepository::default();
        let payment = payment_at(
            &inner,
            "order-race-1",
            "k",
            1_000,
            Stage::Ready,
            chrono::Duration::zero(),
        )
        .await;
        let store = AlwaysChanged {
            inner,
            commits: AtomicUsize::new(0),
        };
        let mut decisions = 0;
        let which = PaymentRef::Id(payment.id());
        let ran = run(
            &store,
            &which,
            &Trigger::Untracked,
            |loaded, now| -> Result<_, Failed> {
                decisions += 1;
                let payment = &loaded.unwrap().payment;
                let change =
                    Change::decide(Some(payment), &PaymentCommand::Expire { expired_at: now })
                        .unwrap();
                Ok(Decision::<(), ()>::Record(change, ()))
            },
        )
        .await;
        assert!(
            matches!(
                ran,
                Err(Failed::Contended(Contended {
                    attempts: ATTEMPTS,
                    ..
                }))
            ),
            "{ran:?}"
        );
        assert_eq!(decisions, ATTEMPTS, "decided again on every attempt");
        assert_eq!(store.commits.load(Ordering::SeqCst), ATTEMPTS);
    }
}
