//! The payment life cycle, given/when/then: every legal transition, every
//! illegal one, and property tests over random command sequences.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeZone, Utc};
use payment_domain::{
    decide, execute, Currency, Failure, Money, OrderId, Payment, PaymentCommand, PaymentError,
    PaymentEvent, PaymentId, PaymentKey, PaymentStatus, TransactionId, UserId,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

const AMOUNT: i64 = 15_000;

fn krw(won: i64) -> Money {
    Money::new(Decimal::from(won), Currency::Krw).unwrap()
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + seconds, 0).unwrap()
}

fn key() -> PaymentKey {
    PaymentKey::parse("tgen_20260101abcdef").unwrap()
}

fn create() -> PaymentCommand {
    PaymentCommand::Create {
        payment_id: PaymentId::from_uuid(uuid::Uuid::from_u128(7)),
        order_id: OrderId::parse("order-0001").unwrap(),
        user_id: UserId::parse("user-1").unwrap(),
        amount: krw(AMOUNT),
        created_at: at(0),
    }
}

fn start() -> PaymentCommand {
    PaymentCommand::StartConfirmation {
        payment_key: key(),
        amount: krw(AMOUNT),
        transaction_id: TransactionId::from_uuid(uuid::Uuid::from_u128(1)),
    }
}

fn approve() -> PaymentCommand {
    PaymentCommand::Approve {
        payment_key: key(),
        approved_amount: krw(AMOUNT),
        method: Some("카드".into()),
        approved_at: at(60),
    }
}

fn abort() -> PaymentCommand {
    PaymentCommand::Abort {
        failure: Failure {
            code: "REJECT_CARD_PAYMENT".into(),
            message: "한도초과 혹은 잔액부족".into(),
        },
    }
}

fn failed_attempt() -> Failure {
    Failure {
        code: "PAY_PROCESS_CANCELED".into(),
        message: "the customer closed the widget".into(),
    }
}

fn record_attempt_failure() -> PaymentCommand {
    PaymentCommand::RecordAttemptFailure {
        failure: failed_attempt(),
    }
}

fn revert() -> PaymentCommand {
    PaymentCommand::RevertConfirmation {
        failure: Failure {
            code: "UNAUTHORIZED_KEY".into(),
            message: "our secret key was refused".into(),
        },
    }
}

fn escalate(id: u128) -> PaymentCommand {
    PaymentCommand::EscalateCancel {
        transaction_id: TransactionId::from_uuid(uuid::Uuid::from_u128(id)),
        reason: "no answer from the PG in time".into(),
    }
}

fn expire() -> PaymentCommand {
    PaymentCommand::Expire {
        expired_at: at(3600),
    }
}

fn cancel(won: Option<i64>) -> PaymentCommand {
    PaymentCommand::Cancel {
        amount: won.map(krw),
        reason: "customer asked".into(),
        transaction_key: Some("txk_cancel".into()),
    }
}

fn request(id: u128, won: Option<i64>) -> PaymentCommand {
    PaymentCommand::RequestCancel {
        transaction_id: TransactionId::from_uuid(uuid::Uuid::from_u128(id)),
        amount: won.map(krw),
        reason: "customer asked".into(),
    }
}

fn confirm_cancel(id: u128) -> PaymentCommand {
    PaymentCommand::ConfirmCancel {
        transaction_id: TransactionId::from_uuid(uuid::Uuid::from_u128(id)),
        transaction_key: Some(format!("txk-{id}")),
    }
}

fn reject_cancel(id: u128) -> PaymentCommand {
    PaymentCommand::RejectCancel {
        transaction_id: TransactionId::from_uuid(uuid::Uuid::from_u128(id)),
        failure: Failure {
            code: "NOT_CANCELABLE_AMOUNT".into(),
            message: "no".into(),
        },
    }
}

/// Runs `commands` from nothing, failing the test if any is refused.
fn history(commands: &[PaymentCommand]) -> Vec<PaymentEvent> {
    let mut state: Option<Payment> = None;
    let mut events = Vec::new();
    for command in commands {
        let (next, new) = execute(state.as_ref(), command).unwrap();
        state = Some(next);
        events.extend(new);
    }
    events
}

/// A payment in `status`, reached the ordinary way.
fn given(status: PaymentStatus) -> Payment {
    let path = match status {
        PaymentStatus::Ready => vec![create()],
        PaymentStatus::InProgress => vec![create(), start()],
        PaymentStatus::Done => vec![create(), start(), approve()],
        PaymentStatus::PartialCanceled => vec![create(), start(), approve(), cancel(Some(5_000))],
        PaymentStatus::Canceled => vec![create(), start(), approve(), cancel(None)],
        PaymentStatus::Aborted => vec![create(), abort()],
        PaymentStatus::Expired => vec![create(), expire()],
    };
    let payment = Payment::replay(&history(&path)).unwrap();
    assert_eq!(payment.status(), status, "fixture for {status}");
    payment
}

fn when(payment: &Payment, command: &PaymentCommand) -> Payment {
    execute(Some(payment), command).unwrap().0
}

// ---- legal transitions ---------------------------------------------------

#[test]
fn an_order_creates_a_ready_payment_with_its_whole_amount_cancelable() {
    let events = decide(None, &create()).unwrap();
    assert_eq!(events.len(), 1);
    let payment = Payment::replay(&events).unwrap();
    assert_eq!(payment.status(), PaymentStatus::Ready);
    assert_eq!(payment.amount(), krw(AMOUNT));
    assert_eq!(payment.balance(), krw(AMOUNT));
    assert_eq!(payment.version(), 1);
    assert_eq!(payment.payment_key(), None);
}

#[test]
fn ready_goes_in_progress_when_confirmation_starts() {
    let payment = when(&given(PaymentStatus::Ready), &start());
    assert_eq!(payment.status(), PaymentStatus::InProgress);
    assert_eq!(payment.payment_key(), Some(&key()));
    assert_eq!(payment.version(), 2);
}

#[test]
fn ready_is_aborted_when_its_order_is_withdrawn() {
    let payment = when(&given(PaymentStatus::Ready), &abort());
    assert_eq!(payment.status(), PaymentStatus::Aborted);
    assert_eq!(payment.failure().unwrap().code, "REJECT_CARD_PAYMENT");
}

#[test]
fn ready_expires_when_never_confirmed() {
    let payment = when(&given(PaymentStatus::Ready), &expire());
    assert_eq!(payment.status(), PaymentStatus::Expired);
}

#[test]
fn in_progress_is_done_when_the_pg_approves() {
    let payment = when(&given(PaymentStatus::InProgress), &approve());
    assert_eq!(payment.status(), PaymentStatus::Done);
    assert_eq!(payment.approved_at(), Some(at(60)));
    assert_eq!(payment.method(), Some("카드"));
    assert_eq!(payment.balance(), krw(AMOUNT));
}

#[test]
fn in_progress_is_aborted_when_the_pg_declines() {
    let payment = when(&given(PaymentStatus::InProgress), &abort());
    assert_eq!(payment.status(), PaymentStatus::Aborted);
}

#[test]
fn done_is_partially_canceled_by_a_partial_cancel() {
    let payment = when(&given(PaymentStatus::Done), &cancel(Some(4_000)));
    assert_eq!(payment.status(), PaymentStatus::PartialCanceled);
    assert_eq!(payment.balance(), krw(11_000));
}

#[test]
fn done_is_canceled_by_a_cancel_without_amount() {
    let payment = when(&given(PaymentStatus::Done), &cancel(None));
    assert_eq!(payment.status(), PaymentStatus::Canceled);
    assert!(payment.balance().is_zero());
}

#[test]
fn done_is_canceled_by_a_cancel_of_the_whole_amount() {
    let payment = when(&given(PaymentStatus::Done), &cancel(Some(AMOUNT)));
    assert_eq!(payment.status(), PaymentStatus::Canceled);
}

#[test]
fn partial_cancels_accumulate() {
    let payment = when(&given(PaymentStatus::PartialCanceled), &cancel(Some(1_000)));
    assert_eq!(payment.status(), PaymentStatus::PartialCanceled);
    assert_eq!(payment.balance(), krw(9_000));
}

#[test]
fn partial_canceled_is_canceled_when_the_rest_is_canceled() {
    let payment = when(&given(PaymentStatus::PartialCanceled), &cancel(None));
    assert_eq!(payment.status(), PaymentStatus::Canceled);
    assert!(payment.balance().is_zero());
}

#[test]
fn a_cancel_request_reserves_its_amount_without_moving_money() {
    let payment = when(&given(PaymentStatus::Done), &request(10, Some(4_000)));
    assert_eq!(payment.status(), PaymentStatus::Done);
    assert_eq!(payment.balance(), krw(AMOUNT));
    assert_eq!(payment.cancelable(), krw(11_000));
    assert_eq!(payment.pending_cancels().len(), 1);
}

#[test]
fn a_confirmed_cancel_request_gives_the_money_back() {
    let requested = when(&given(PaymentStatus::Done), &request(10, Some(4_000)));
    let payment = when(&requested, &confirm_cancel(10));
    assert_eq!(payment.status(), PaymentStatus::PartialCanceled);
    assert_eq!(payment.balance(), krw(11_000));
    assert_eq!(payment.cancelable(), krw(11_000));
    assert!(payment.pending_cancels().is_empty());
}

#[test]
fn a_confirmed_request_for_everything_cancels_the_payment() {
    let requested = when(&given(PaymentStatus::PartialCanceled), &request(10, None));
    assert!(requested.cancelable().is_zero());
    let payment = when(&requested, &confirm_cancel(10));
    assert_eq!(payment.status(), PaymentStatus::Canceled);
    assert!(payment.balance().is_zero());
}

#[test]
fn a_rejected_cancel_request_releases_its_reservation() {
    let requested = when(&given(PaymentStatus::Done), &request(10, Some(4_000)));
    let payment = when(&requested, &reject_cancel(10));
    assert_eq!(payment.status(), PaymentStatus::Done);
    assert_eq!(payment.cancelable(), krw(AMOUNT));
    assert!(payment.pending_cancels().is_empty());
}

#[test]
fn reservations_never_exceed_what_is_left() {
    let first = when(&given(PaymentStatus::Done), &request(10, Some(10_000)));
    assert_eq!(
        decide(Some(&first), &request(11, Some(5_001))),
        Err(PaymentError::NotCancelableAmount {
            requested: krw(5_001),
            balance: krw(5_000)
        })
    );
    let second = when(&first, &request(11, Some(5_000)));
    assert!(matches!(
        decide(Some(&second), &request(12, None)),
        Err(PaymentError::ZeroAmount)
    ));
}

#[test]
fn a_cancel_request_cannot_be_made_twice_or_answered_unasked() {
    let requested = when(&given(PaymentStatus::Done), &request(10, Some(1_000)));
    let id = TransactionId::from_uuid(uuid::Uuid::from_u128(10));
    assert_eq!(
        decide(Some(&requested), &request(10, Some(1_000))),
        Err(PaymentError::CancelAlreadyRequested(id))
    );
    let other = TransactionId::from_uuid(uuid::Uuid::from_u128(99));
    assert_eq!(
        decide(Some(&requested), &confirm_cancel(99)),
        Err(PaymentError::UnknownCancel(other))
    );
    assert_eq!(
        decide(Some(&requested), &reject_cancel(99)),
        Err(PaymentError::UnknownCancel(other))
    );
    let settled = when(&requested, &confirm_cancel(10));
    assert_eq!(
        decide(Some(&settled), &confirm_cancel(10)),
        Err(PaymentError::UnknownCancel(id)),
        "answered once"
    );
}

#[test]
fn a_widget_failure_is_recorded_and_the_payment_stays_ready() {
    let payment = when(&given(PaymentStatus::Ready), &record_attempt_failure());
    assert_eq!(payment.status(), PaymentStatus::Ready);
    assert_eq!(payment.failure(), Some(&failed_attempt()));
    let retried = when(&when(&payment, &start()), &approve());
    assert_eq!(retried.status(), PaymentStatus::Done);
    assert_eq!(
        retried.failure(),
        None,
        "an approval clears the old failure"
    );
}

#[test]
fn the_last_recorded_failure_survives_until_expiry() {
    let expired = when(
        &when(&given(PaymentStatus::Ready), &record_attempt_failure()),
        &expire(),
    );
    assert_eq!(expired.status(), PaymentStatus::Expired);
    assert_eq!(expired.failure(), Some(&failed_attempt()));
}

#[test]
fn a_confirmation_the_pg_never_processed_goes_back_to_ready() {
    let payment = when(&given(PaymentStatus::InProgress), &revert());
    assert_eq!(payment.status(), PaymentStatus::Ready);
    assert_eq!(payment.payment_key(), None);
    assert_eq!(payment.failure().unwrap().code, "UNAUTHORIZED_KEY");
    assert_eq!(
        when(&when(&payment, &start()), &approve()).status(),
        PaymentStatus::Done
    );
}

#[test]
fn a_refund_asked_during_an_unknown_approval_waits_for_it() {
    let waiting = when(&given(PaymentStatus::InProgress), &request(1, None));
    assert_eq!(waiting.status(), PaymentStatus::InProgress);
    assert_eq!(waiting.pending_cancels().len(), 1);
    assert_eq!(waiting.pending_cancels()[0].amount, krw(AMOUNT));
    let approved = when(&waiting, &approve());
    assert_eq!(approved.status(), PaymentStatus::Done);
    assert_eq!(
        approved.pending_cancels().len(),
        1,
        "carried out after approval"
    );
    assert_eq!(
        when(&approved, &confirm_cancel(1)).status(),
        PaymentStatus::Canceled
    );
}

#[test]
fn a_refund_waiting_for_an_approval_that_never_comes_is_released_as_not_approved() {
    let waiting = when(&given(PaymentStatus::InProgress), &request(1, None));
    let (aborted, events) = execute(Some(&waiting), &abort()).unwrap();
    assert_eq!(aborted.status(), PaymentStatus::Aborted);
    assert!(aborted.pending_cancels().is_empty());
    assert_eq!(aborted.balance(), krw(AMOUNT), "nothing was given back");
    assert!(matches!(
        &events[..],
        [PaymentEvent::PaymentAborted { .. }, PaymentEvent::CancelRejected { failure, .. }]
            if failure.code == payment_domain::NOT_APPROVED
    ));
}

#[test]
fn a_reverted_confirmation_with_a_refund_waiting_ends_the_order() {
    let waiting = when(&given(PaymentStatus::InProgress), &request(1, None));
    let (ended, events) = execute(Some(&waiting), &revert()).unwrap();
    assert_eq!(ended.status(), PaymentStatus::Aborted);
    assert_eq!(
        ended.failure().unwrap().code,
        payment_domain::ORDER_CANCELED
    );
    assert_eq!(events.len(), 2);
}

#[test]
fn an_escalated_cancel_keeps_its_reservation_until_answered() {
    let requested = when(&given(PaymentStatus::Done), &request(1, Some(5_000)));
    let escalated = when(&requested, &escalate(1));
    assert!(escalated.pending_cancels()[0].escalated);
    assert_eq!(escalated.cancelable(), krw(AMOUNT - 5_000));
    assert_eq!(
        decide(Some(&escalated), &escalate(1)),
        Err(PaymentError::CancelAlreadyEscalated(
            TransactionId::from_uuid(uuid::Uuid::from_u128(1))
        ))
    );
    assert_eq!(
        decide(Some(&given(PaymentStatus::Done)), &escalate(1)),
        Err(PaymentError::UnknownCancel(TransactionId::from_uuid(
            uuid::Uuid::from_u128(1)
        )))
    );
    let answered = when(&escalated, &confirm_cancel(1));
    assert_eq!(answered.status(), PaymentStatus::PartialCanceled);
    assert!(answered.pending_cancels().is_empty());
}

// ---- rules inside legal transitions ---------------------------------------

#[test]
fn a_tampered_widget_amount_is_refused() {
    let tampered = PaymentCommand::StartConfirmation {
        payment_key: key(),
        amount: krw(100),
        transaction_id: TransactionId::new(),
    };
    assert_eq!(
        decide(Some(&given(PaymentStatus::Ready)), &tampered),
        Err(PaymentError::AmountMismatch {
            expected: krw(AMOUNT),
            actual: krw(100)
        })
    );
}

#[test]
fn approval_of_another_payment_key_is_refused() {
    let other = PaymentCommand::Approve {
        payment_key: PaymentKey::parse("tgen_other").unwrap(),
        approved_amount: krw(AMOUNT),
        method: None,
        approved_at: at(1),
    };
    assert_eq!(
        decide(Some(&given(PaymentStatus::InProgress)), &other),
        Err(PaymentError::PaymentKeyMismatch)
    );
}

#[test]
fn approval_of_another_amount_is_refused() {
    let other = PaymentCommand::Approve {
        payment_key: key(),
        approved_amount: krw(AMOUNT - 1),
        method: None,
        approved_at: at(1),
    };
    assert!(matches!(
        decide(Some(&given(PaymentStatus::InProgress)), &other),
        Err(PaymentError::AmountMismatch { .. })
    ));
}

#[test]
fn a_cancel_above_the_balance_is_refused() {
    assert_eq!(
        decide(
            Some(&given(PaymentStatus::PartialCanceled)),
            &cancel(Some(10_001))
        ),
        Err(PaymentError::NotCancelableAmount {
            requested: krw(10_001),
            balance: krw(10_000)
        })
    );
}

#[test]
fn a_zero_cancel_is_refused() {
    assert_eq!(
        decide(Some(&given(PaymentStatus::Done)), &cancel(Some(0))),
        Err(PaymentError::ZeroAmount)
    );
}

#[test]
fn a_cancel_in_another_currency_is_refused() {
    let dollars = PaymentCommand::Cancel {
        amount: Some(Money::new(Decimal::ONE, Currency::Usd).unwrap()),
        reason: "r".into(),
        transaction_key: None,
    };
    assert!(matches!(
        decide(Some(&given(PaymentStatus::Done)), &dollars),
        Err(PaymentError::Money(_))
    ));
}

#[test]
fn a_cancel_needs_a_reason() {
    let blank = PaymentCommand::Cancel {
        amount: None,
        reason: "  ".into(),
        transaction_key: None,
    };
    assert_eq!(
        decide(Some(&given(PaymentStatus::Done)), &blank),
        Err(PaymentError::InvalidCancelReason)
    );
}

#[test]
fn a_zero_amount_payment_cannot_be_created() {
    let zero = PaymentCommand::Create {
        payment_id: PaymentId::new(),
        order_id: OrderId::parse("order-0002").unwrap(),
        user_id: UserId::parse("u").unwrap(),
        amount: krw(0),
        created_at: at(0),
    };
    assert_eq!(decide(None, &zero), Err(PaymentError::ZeroAmount));
}

// ---- illegal transitions: one test each ------------------------------------

macro_rules! illegal {
    ($($name:ident: $status:ident + $command:expr;)*) => {$(
        #[test]
        fn $name() {
            let payment = given(PaymentStatus::$status);
            let command = $command;
            assert_eq!(
                decide(Some(&payment), &command),
                Err(PaymentError::InvalidTransition {
                    from: PaymentStatus::$status,
                    action: command.action(),
                })
            );
        }
    )*};
}

illegal! {
    ready_cannot_be_approved_before_confirmation: Ready + approve();
    ready_cannot_be_canceled: Ready + cancel(None);
    in_progress_cannot_start_confirming_again: InProgress + start();
    in_progress_cannot_expire: InProgress + expire();
    in_progress_cannot_be_canceled: InProgress + cancel(None);
    done_cannot_start_confirming: Done + start();
    done_cannot_be_approved_again: Done + approve();
    done_cannot_be_aborted: Done + abort();
    done_cannot_expire: Done + expire();
    partial_canceled_cannot_start_confirming: PartialCanceled + start();
    partial_canceled_cannot_be_approved: PartialCanceled + approve();
    partial_canceled_cannot_be_aborted: PartialCanceled + abort();
    partial_canceled_cannot_expire: PartialCanceled + expire();
    canceled_cannot_start_confirming: Canceled + start();
    canceled_cannot_be_approved: Canceled + approve();
    canceled_cannot_be_aborted: Canceled + abort();
    canceled_cannot_expire: Canceled + expire();
    canceled_cannot_be_canceled_again: Canceled + cancel(None);
    aborted_cannot_start_confirming: Aborted + start();
    aborted_cannot_be_approved: Aborted + approve();
    aborted_cannot_be_aborted_again: Aborted + abort();
    aborted_cannot_expire: Aborted + expire();
    aborted_cannot_be_canceled: Aborted + cancel(None);
    expired_cannot_start_confirming: Expired + start();
    expired_cannot_be_approved: Expired + approve();
    expired_cannot_be_aborted: Expired + abort();
    expired_cannot_expire_again: Expired + expire();
    expired_cannot_be_canceled: Expired + cancel(None);
    ready_cannot_request_a_cancel: Ready + request(1, None);
    canceled_cannot_request_a_cancel: Canceled + request(1, None);
    aborted_cannot_request_a_cancel: Aborted + request(1, None);
    expired_cannot_request_a_cancel: Expired + request(1, None);
    done_cannot_be_reverted: Done + revert();
    ready_cannot_be_reverted: Ready + revert();
    aborted_cannot_be_reverted: Aborted + revert();
    in_progress_records_no_widget_failure: InProgress + record_attempt_failure();
    done_records_no_widget_failure: Done + record_attempt_failure();
    expired_records_no_widget_failure: Expired + record_attempt_failure();
}

macro_rules! already_exists {
    ($($name:ident: $status:ident;)*) => {$(
        #[test]
        fn $name() {
            assert_eq!(
                decide(Some(&given(PaymentStatus::$status)), &create()),
                Err(PaymentError::AlreadyExists)
            );
        }
    )*};
}

already_exists! {
    ready_cannot_be_created_again: Ready;
    in_progress_cannot_be_created_again: InProgress;
    done_cannot_be_created_again: Done;
    partial_canceled_cannot_be_created_again: PartialCanceled;
    canceled_cannot_be_created_again: Canceled;
    aborted_cannot_be_created_again: Aborted;
    expired_cannot_be_created_again: Expired;
}

macro_rules! not_found {
    ($($name:ident: $command:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_eq!(decide(None, &$command), Err(PaymentError::NotFound));
        }
    )*};
}

not_found! {
    a_missing_payment_cannot_start_confirming: start();
    a_missing_payment_cannot_be_approved: approve();
    a_missing_payment_cannot_be_aborted: abort();
    a_missing_payment_cannot_expire: expire();
    a_missing_payment_cannot_be_canceled: cancel(None);
}

/// Guards the tables above: the legal (status, command) pairs are exactly the
/// ones docs/architecture.md ("The state machine") draws, so a new arm in `decide` cannot slip in untested.
#[test]
fn the_transition_table_is_exactly_the_documented_one() {
    use PaymentStatus::{Done, InProgress, PartialCanceled, Ready};
    let legal = [
        (Ready, "start confirming"),
        (Ready, "abort"),
        (Ready, "expire"),
        (Ready, "record a failed attempt on"),
        (InProgress, "approve"),
        (InProgress, "abort"),
        (InProgress, "revert a confirmation of"),
        (InProgress, "cancel"),
        (Done, "cancel"),
        (PartialCanceled, "cancel"),
    ];
    for status in PaymentStatus::ALL {
        for command in [
            start(),
            approve(),
            abort(),
            expire(),
            cancel(None),
            request(1, None),
            revert(),
            record_attempt_failure(),
        ] {
            let allowed = decide(Some(&given(status)), &command).is_ok();
            // `cancel` names both a PG-side cancel and a reservation; only the
            // reservation may wait for an approval.
            let documented = legal.contains(&(status, command.action()))
                && !(status == InProgress && matches!(command, PaymentCommand::Cancel { .. }));
            assert_eq!(allowed, documented, "{status} + {}", command.action());
        }
    }
}

// ---- properties -------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Start { tampered: bool },
    Approve { wrong_key: bool },
    Abort,
    Expire,
    Cancel { won: Option<i64> },
    Request { id: u8, won: Option<i64> },
    Confirm { id: u8 },
    Reject { id: u8 },
    Escalate { id: u8 },
    Revert,
    AttemptFailed,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<bool>().prop_map(|tampered| Op::Start { tampered }),
        any::<bool>().prop_map(|wrong_key| Op::Approve { wrong_key }),
        Just(Op::Abort),
        Just(Op::Expire),
        proptest::option::of(0_i64..12_000).prop_map(|won| Op::Cancel { won }),
        // Cancels are the interesting part of the balance invariant: weight them.
        proptest::option::of(0_i64..4_000).prop_map(|won| Op::Cancel { won }),
        (0_u8..4, proptest::option::of(0_i64..6_000)).prop_map(|(id, won)| Op::Request { id, won }),
        (0_u8..4).prop_map(|id| Op::Confirm { id }),
        (0_u8..4).prop_map(|id| Op::Reject { id }),
        (0_u8..4).prop_map(|id| Op::Escalate { id }),
        Just(Op::Revert),
        Just(Op::AttemptFailed),
    ]
}

fn command_for(op: &Op, amount: i64) -> PaymentCommand {
    match op {
        Op::Start { tampered } => PaymentCommand::StartConfirmation {
            payment_key: key(),
            amount: krw(if *tampered { amount + 1 } else { amount }),
            transaction_id: TransactionId::new(),
        },
        Op::Approve { wrong_key } => PaymentCommand::Approve {
            payment_key: if *wrong_key {
                PaymentKey::parse("tgen_wrong").unwrap()
            } else {
                key()
            },
            approved_amount: krw(amount),
            method: None,
            approved_at: at(5),
        },
        Op::Abort => abort(),
        Op::Expire => expire(),
        Op::Cancel { won } => cancel(*won),
        Op::Request { id, won } => request(u128::from(*id), *won),
        Op::Confirm { id } => confirm_cancel(u128::from(*id)),
        Op::Reject { id } => reject_cancel(u128::from(*id)),
        Op::Escalate { id } => escalate(u128::from(*id)),
        Op::Revert => revert(),
        Op::AttemptFailed => record_attempt_failure(),
    }
}

fn canceled_total(events: &[PaymentEvent]) -> Money {
    events.iter().fold(krw(0), |total, event| match event {
        PaymentEvent::PaymentCanceled { amount, .. } => total.checked_add(*amount).unwrap(),
        _ => total,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever commands arrive, in whatever order, the recorded events replay
    /// to exactly the state the decisions produced, and the balance is always
    /// `amount − Σ cancels`, never negative.
    #[test]
    fn replay_reproduces_the_state_and_the_balance_holds(
        amount in 1_i64..10_000,
        ops in proptest::collection::vec(op(), 0..24),
    ) {
        let created = PaymentCommand::Create {
            payment_id: PaymentId::new(),
            order_id: OrderId::parse("order-prop").unwrap(),
            user_id: UserId::parse("u").unwrap(),
            amount: krw(amount),
            created_at: at(0),
        };
        let (mut state, mut recorded) = execute(None, &created).unwrap();
        for op in &ops {
            let before = state.clone();
            match execute(Some(&state), &command_for(op, amount)) {
                Ok((next, events)) => {
                    prop_assert!(!events.is_empty());
                    recorded.extend(events);
                    state = next;
                }
                Err(_) => prop_assert_eq!(&state, &before),
            }
            let expected_balance = krw(amount).checked_sub(canceled_total(&recorded));
            prop_assert_eq!(Ok(state.balance()), expected_balance);
            prop_assert!(state.balance().checked_cmp(&state.amount()).unwrap().is_le());
            prop_assert!(state.cancelable().checked_cmp(&state.balance()).unwrap().is_le());
        }
        prop_assert_eq!(Payment::replay(&recorded).unwrap(), state.clone());
        prop_assert_eq!(state.version(), recorded.len() as u64);
    }

    /// Events survive the JSON they are stored as.
    #[test]
    fn events_round_trip_through_json(ops in proptest::collection::vec(op(), 0..12)) {
        let mut state = None;
        let mut recorded = Vec::new();
        for command in std::iter::once(create()).chain(ops.iter().map(|op| command_for(op, AMOUNT))) {
            if let Ok((next, events)) = execute(state.as_ref(), &command) {
                state = Some(next);
                recorded.extend(events);
            }
        }
        let json = serde_json::to_string(&recorded).unwrap();
        let back: Vec<PaymentEvent> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, recorded);
    }
}
