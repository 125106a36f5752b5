//! A backlog of approvals whose outcome is unknown, as a PG outage leaves
//! it — payments IN_PROGRESS, each with an UNKNOWN APPROVAL transaction —
//! written straight through the store (no HTTP, no broker, no PG), so the
//! reconciler's tests and bench can make thousands in seconds.

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use payment_application::{Append, Commit, PaymentRepository as _};
use payment_domain::{
    execute, Currency, Money, OrderId, Payment, PaymentCommand, PaymentId, PaymentKey,
    PaymentTransaction, TransactionKind, UserId,
};
use payment_infra::mariadb::MariaDbPaymentRepository;
use rust_decimal::Decimal;

/// One payment of the backlog.
#[derive(Debug, Clone)]
pub struct Unknown {
    pub payment_id: PaymentId,
    pub order_id: String,
    pub payment_key: String,
    pub amount: i64,
}

/// Records `commands` as one new payment's stream, with `transactions`, in
/// one commit at `at`; answers the state.
///
/// # Panics
/// When a command does not apply or the store refuses the commit.
#[allow(clippy::expect_used)]
pub async fn record(
    repository: &MariaDbPaymentRepository,
    commands: &[PaymentCommand],
    transactions: Vec<PaymentTransaction>,
    at: DateTime<Utc>,
) -> Payment {
    let mut state: Option<Payment> = None;
    let mut events = Vec::new();
    for command in commands {
        let (next, new) = execute(state.as_ref(), command).expect("command applies");
        events.extend(new);
        state = Some(next);
    }
    let state = state.expect("at least one command");
    repository
        .commit(Commit {
            append: Some(Append {
                expected_version: 0,
                events,
                state: state.clone(),
                occurred_at: at,
            }),
            transactions,
            ..Commit::default()
        })
        .await
        .expect("payment written");
    state
}

/// `amount` KRW.
///
/// # Panics
/// When `amount` is out of range.
#[must_use]
#[allow(clippy::expect_used)]
pub fn won(amount: i64) -> Money {
    Money::new(Decimal::from(amount), Currency::Krw).expect("an amount in range")
}

/// The commands that create a payment of `amount` for `order_id` and start
/// its confirmation with `payment_key` under `approval`.
///
/// # Panics
/// When an id does not parse.
#[must_use]
#[allow(clippy::expect_used)]
pub fn confirmation_started(
    approval: &PaymentTransaction,
    order_id: &str,
    payment_key: &str,
) -> Vec<PaymentCommand> {
    vec![
        PaymentCommand::Create {
            payment_id: approval.payment_id(),
            order_id: OrderId::parse(order_id).expect("order id"),
            user_id: UserId::parse("u-backlog").expect("user id"),
            amount: approval.amount(),
            created_at: approval.requested_at(),
        },
        PaymentCommand::StartConfirmation {
            payment_key: PaymentKey::parse(payment_key).expect("payment key"),
            amount: approval.amount(),
            transaction_id: approval.id(),
        },
    ]
}

/// `count` payments of `amount` KRW for orders `{prefix}-{i}` (keys
/// `tgen_{prefix}_{i}`), whose confirm was sent at `at` and never answered;
/// written `concurrency` at a time. Answers them in the order of `i`.
pub async fn unknown_approvals(
    repository: &MariaDbPaymentRepository,
    prefix: &str,
    count: usize,
    amount: i64,
    at: DateTime<Utc>,
    concurrency: usize,
) -> Vec<Unknown> {
    futures::stream::iter(0..count)
        .map(|i| async move {
            let order_id = format!("{prefix}-{i}");
            let payment_key = format!("tgen_{prefix}_{i}");
            let payment_id = PaymentId::new();
            let approval =
                PaymentTransaction::request(payment_id, TransactionKind::Approval, won(amount), at);
            let commands = confirmation_started(&approval, &order_id, &payment_key);
            record(repository, &commands, vec![approval], at).await;
            Unknown {
                payment_id,
                order_id,
                payment_key,
                amount,
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}
