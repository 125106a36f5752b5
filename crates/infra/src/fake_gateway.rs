//! The fake payment gateway (`PAYMENT__GATEWAY=fake`, settings under
//! `[fake]` / `PAYMENT__FAKE__…`): no network, for the booking saga, local
//! runs and load tests. What it answers is configuration, so a test or a
//! demo can choose every outcome class:
//! * `approve`, `decline`;
//! * `random`: approves a share `success_rate` of the orders, each order's
//!   fate drawn from `seed` and the order id alone — the same orders get
//!   the same outcomes on every run, in any order, after any restart;
//! * `unknown`: processes the payment (approves it) but answers "unknown",
//!   and its first `unknown_lookups` lookups of the order fail too — the
//!   unknown-outcome path (immediate lookup, then the reconciler) that a
//!   Toss timeout takes;
//! * a payment key `saga_<outcome>_…` (the saga's `processoroutcome`
//!   extension attribute) forces `approve`, `decline` or `unknown` for that
//!   payment whatever the mode;
//! * an amount ending in `999` (in the currency's units) is declined unless
//!   the key forces an outcome, so a demo can show a decline on purpose;
//! * `delay` before it processes a call (the request is in flight) and
//!   `reply_delay` after it processed it (the answer is in flight).
//!
//! It answers a repeated confirm of an order with its first answer, and
//! lookups with what it did. With a `ledger` file it appends one JSON line
//! per confirm call it receives and reloads the file at start, so what it
//! did survives a restart of the service (the crash tests count the calls
//! there). Cancels move its balance in memory only.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use payment_application::{
    CancelRequest, ConfirmRequest, GatewayCancel, GatewayOutcome, GatewayPayment, GatewayStatus,
    LookupFailed, PaymentGateway,
};
use payment_domain::{Currency, Failure, Money, OrderId, PaymentKey};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the fake does with a confirm (unless the payment key or the amount
/// decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FakeMode {
    #[default]
    Approve,
    Decline,
    Random,
    /// Approves, answers "unknown", and fails the first lookups.
    Unknown,
}

/// The fake's configuration (`[fake]`, `PAYMENT__FAKE__…`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FakeSettings {
    pub mode: FakeMode,
    /// `random`: the share of orders approved, 0.0–1.0.
    pub success_rate: f64,
    /// `random`: the seed each order's fate is drawn from.
    pub seed: u64,
    /// Before a call is processed.
    pub delay_ms: u64,
    /// After a call is processed, before it is answered.
    pub reply_delay_ms: u64,
    /// `unknown`: lookups of an order that fail before one tells.
    pub unknown_lookups: u32,
    /// Where the calls are recorded and reloaded from (none: memory only).
    pub ledger: Option<PathBuf>,
}

impl Default for FakeSettings {
    fn default() -> Self {
        Self {
            mode: FakeMode::Approve,
            success_rate: 0.5,
            seed: 0,
            delay_ms: 0,
            reply_delay_ms: 0,
            unknown_lookups: 1,
            ledger: None,
        }
    }
}

/// One confirm call as the ledger keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call {
    order_id: String,
    payment_key: String,
    idempotency_key: String,
    amount: String,
    currency: String,
    approved: bool,
    /// The call repeated an earlier one (answered from memory).
    replay: bool,
    at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct State {
    /// What it did per order: approved (DONE, maybe canceled since) or
    /// declined (ABORTED).
    payments: HashMap<OrderId, GatewayPayment>,
    /// `unknown`: failed lookups still to give per order.
    blind: HashMap<OrderId, u32>,
    /// Cancel answers by idempotency key.
    cancels: HashMap<String, GatewayOutcome>,
    ledger: Option<File>,
}

/// The fake gateway. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct FakeGateway {
    settings: FakeSettings,
    state: Arc<Mutex<State>>,
}

const DECLINED: &str = "REJECT_CARD_PAYMENT";

impl Default for FakeGateway {
    /// Approves everything at once, remembers in memory only.
    fn default() -> Self {
        Self {
            settings: FakeSettings::default(),
            state: Arc::default(),
        }
    }
}

impl FakeGateway {
    /// A fake gateway, with what its ledger (if any) says it did.
    ///
    /// # Errors
    /// When the ledger cannot be read or opened for appending.
    pub fn new(settings: FakeSettings) -> anyhow::Result<Self> {
        let mut state = State::default();
        if let Some(path) = &settings.ledger {
            for call in read_ledger(path)? {
                let request = call.request()?;
                state
                    .payments
                    .entry(request.order_id.clone())
                    .or_insert_with(|| outcome_payment(&request, call.approved, call.at));
            }
            state.ledger = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| {
                        format!("open the fake gateway's ledger {}", path.display())
                    })?,
            );
        }
        Ok(Self {
            settings,
            state: Arc::new(Mutex::new(state)),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mode for this confirm: forced by its key, declined by the amount
    /// rule, or configured.
    fn mode(&self, request: &ConfirmRequest) -> FakeMode {
        let forced = request
            .payment_key
            .as_str()
            .strip_prefix("saga_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(hint, _)| hint);
        match forced {
            Some("approve") => FakeMode::Approve,
            Some("decline") => FakeMode::Decline,
            Some("unknown") => FakeMode::Unknown,
            _ if ends_in_999(request.amount) => FakeMode::Decline,
            _ => self.settings.mode,
        }
    }

    /// `random`'s draw for an order: the same order, the same fate.
    fn lucky(&self, order_id: &OrderId) -> bool {
        let seed = Uuid::from_u64_pair(self.settings.seed, 0);
        let (draw, _) = Uuid::new_v5(&seed, order_id.as_str().as_bytes()).as_u64_pair();
        #[allow(clippy::cast_precision_loss)] // a share, not money
        let share = draw as f64 / u64::MAX as f64;
        share < self.settings.success_rate
    }

    fn record(state: &mut State, call: &Call) {
        if let Some(ledger) = state.ledger.as_mut() {
            let line = serde_json::to_string(call).unwrap_or_default();
            if let Err(error) = writeln!(ledger, "{line}") {
                tracing::error!(%error, "cannot append to the fake gateway's ledger");
            }
        }
    }
}

fn read_ledger(path: &Path) -> anyhow::Result<Vec<Call>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).context("open the fake gateway's ledger"),
    };
    let mut calls = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.context("read the fake gateway's ledger")?;
        // A line cut short by a crash is a call that was never answered.
        if let Ok(call) = serde_json::from_str(&line) {
            calls.push(call);
        }
    }
    Ok(calls)
}

impl Call {
    fn request(&self) -> anyhow::Result<ConfirmRequest> {
        let currency = Currency::from_str(&self.currency).context("ledger currency")?;
        let amount = Decimal::from_str(&self.amount).context("ledger amount")?;
        Ok(ConfirmRequest {
            payment_key: PaymentKey::parse(self.payment_key.clone()).context("ledger key")?,
            order_id: OrderId::parse(self.order_id.clone()).context("ledger order id")?,
            amount: Money::new(amount, currency).context("ledger amount")?,
            idempotency_key: self.idempotency_key.clone(),
        })
    }
}

/// The amount rule: `…999` in the currency's units is declined.
fn ends_in_999(amount: Money) -> bool {
    amount.amount() % Decimal::from(1000) == Decimal::from(999)
}

/// The fake's record of a processed confirm.
fn outcome_payment(request: &ConfirmRequest, approved: bool, at: DateTime<Utc>) -> GatewayPayment {
    GatewayPayment {
        payment_key: request.payment_key.clone(),
        order_id: request.order_id.clone(),
        status: if approved {
            GatewayStatus::Done
        } else {
            GatewayStatus::Aborted
        },
        total_amount: request.amount,
        balance_amount: request.amount,
        method: Some("FAKE".into()),
        approved_at: approved.then_some(at),
        last_transaction_key: Some(
            Uuid::new_v5(&Uuid::NAMESPACE_OID, request.idempotency_key.as_bytes())
                .simple()
                .to_string(),
        ),
        failure: (!approved).then(|| Failure {
            code: DECLINED.into(),
            message: "declined by the fake gateway".into(),
        }),
        cancels: Vec::new(),
    }
}

impl PaymentGateway for FakeGateway {
    async fn confirm(&self, request: &ConfirmRequest) -> GatewayOutcome {
        tokio::time::sleep(Duration::from_millis(self.settings.delay_ms)).await;
        let mode = self.mode(request);
        let (payment, replay) = {
            let mut state = self.state();
            let known = state.payments.get(&request.order_id).cloned();
            let replay = known.is_some();
            let payment = known.unwrap_or_else(|| {
                let approved = match mode {
                    FakeMode::Approve | FakeMode::Unknown => true,
                    FakeMode::Decline => false,
                    FakeMode::Random => self.lucky(&request.order_id),
                };
                let payment = outcome_payment(request, approved, Utc::now());
                state
                    .payments
                    .insert(request.order_id.clone(), payment.clone());
                if mode == FakeMode::Unknown {
                    state
                        .blind
                        .insert(request.order_id.clone(), self.settings.unknown_lookups);
                }
                payment
            });
            let call = Call {
                order_id: request.order_id.to_string(),
                payment_key: request.payment_key.to_string(),
                idempotency_key: request.idempotency_key.clone(),
                amount: request.amount.amount().to_string(),
                currency: request.amount.currency().to_string(),
                approved: payment.status != GatewayStatus::Aborted,
                replay,
                at: Utc::now(),
            };
            tracing::debug!(order_id = %request.order_id, replay, "fake gateway called");
            Self::record(&mut state, &call);
            (payment, replay)
        };
        tokio::time::sleep(Duration::from_millis(self.settings.reply_delay_ms)).await;
        if mode == FakeMode::Unknown && !replay {
            return GatewayOutcome::Unknown("the fake gateway answers unknown".into());
        }
        match payment.failure.clone() {
            Some(failure) if payment.status == GatewayStatus::Aborted => {
                GatewayOutcome::Declined(failure)
            }
            _ => GatewayOutcome::Succeeded(payment),
        }
    }

    async fn cancel(&self, request: &CancelRequest) -> GatewayOutcome {
        tokio::time::sleep(Duration::from_millis(self.settings.delay_ms)).await;
        let mut state = self.state();
        if let Some(first) = state.cancels.get(&request.idempotency_key) {
            return first.clone(); // the same key replays the first answer
        }
        let declined = |code: &str, message: &str| {
            GatewayOutcome::Declined(Failure {
                code: code.into(),
                message: message.into(),
            })
        };
        let outcome =
            match state.payments.values_mut().find(|p| {
                p.payment_key == request.payment_key && p.status != GatewayStatus::Aborted
            }) {
                // As Toss answers a key it does not hold.
                None => GatewayOutcome::KeyRefused(Failure {
                    code: "NOT_FOUND_PAYMENT".into(),
                    message: "no such payment at the fake gateway".into(),
                }),
                Some(payment) => match payment.balance_amount.checked_sub(request.amount) {
                    Err(_) => declined("NOT_CANCELABLE_AMOUNT", "more than the cancelable balance"),
                    Ok(balance) => {
                        let key = Uuid::now_v7().simple().to_string();
                        payment.balance_amount = balance;
                        payment.status = if balance.is_zero() {
                            GatewayStatus::Canceled
                        } else {
                            GatewayStatus::PartialCanceled
                        };
                        payment.cancels.push(GatewayCancel {
                            amount: request.amount,
                            transaction_key: Some(key.clone()),
                        });
                        payment.last_transaction_key = Some(key);
                        GatewayOutcome::Succeeded(payment.clone())
                    }
                },
            };
        state
            .cancels
            .insert(request.idempotency_key.clone(), outcome.clone());
        outcome
    }

    async fn lookup_by_order(
        &self,
        order_id: &OrderId,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        let mut state = self.state();
        if let Some(blind) = state.blind.get_mut(order_id).filter(|left| **left > 0) {
            *blind -= 1;
            return Err(LookupFailed("the fake gateway cannot tell yet".into()));
        }
        Ok(state.payments.get(order_id).cloned())
    }

    async fn lookup(
        &self,
        payment_key: &PaymentKey,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        let order_id = self
            .state()
            .payments
            .values()
            .find(|p| &p.payment_key == payment_key)
            .map(|p| p.order_id.clone());
        match order_id {
            Some(order_id) => self.lookup_by_order(&order_id).await,
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(order: &str, key: &str) -> ConfirmRequest {
        request_of(order, key, 1_000)
    }

    fn request_of(order: &str, key: &str, won: i64) -> ConfirmRequest {
        ConfirmRequest {
            payment_key: PaymentKey::parse(key).unwrap(),
            order_id: OrderId::parse(order).unwrap(),
            amount: Money::new(Decimal::from(won), Currency::Krw).unwrap(),
            idempotency_key: format!("idem-{order}"),
        }
    }

    fn fake(mode: FakeMode) -> FakeGateway {
        FakeGateway::new(FakeSettings {
            mode,
            seed: 42,
            success_rate: 0.3,
            ..FakeSettings::default()
        })
        .unwrap()
    }

    async fn approvals(fake: &FakeGateway, orders: &[String]) -> Vec<bool> {
        let mut approved = Vec::new();
        for order in orders {
            let outcome = fake.confirm(&request(order, "saga_x")).await;
            approved.push(matches!(outcome, GatewayOutcome::Succeeded(_)));
        }
        approved
    }

    #[tokio::test]
    async fn random_is_the_same_for_the_same_seed_in_any_order() {
        let orders: Vec<String> = (0..400).map(|i| format!("order-{i:04}")).collect();
        let first = approvals(&fake(FakeMode::Random), &orders).await;
        let mut reversed: Vec<String> = orders.clone();
        reversed.reverse();
        let mut second = approvals(&fake(FakeMode::Random), &reversed).await;
        second.reverse();
        assert_eq!(first, second);
        let share = first.iter().filter(|a| **a).count();
        assert!((80..160).contains(&share), "about 30% of 400: {share}");
    }

    #[tokio::test]
    async fn the_key_forces_an_outcome_and_a_repeat_replays_it() {
        let fake = fake(FakeMode::Approve);
        let declined = fake.confirm(&request("order-0001", "saga_decline_1")).await;
        assert!(
            matches!(declined, GatewayOutcome::Declined(_)),
            "{declined:?}"
        );
        let again = fake.confirm(&request("order-0001", "saga_decline_1")).await;
        assert_eq!(again, declined);
        let looked_up = fake
            .lookup_by_order(&OrderId::parse("order-0001").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(looked_up.status, GatewayStatus::Aborted);
    }

    #[tokio::test]
    async fn unknown_answers_unknown_then_lookups_resolve_it() {
        let fake = fake(FakeMode::Unknown);
        let order = OrderId::parse("order-0002").unwrap();
        let outcome = fake.confirm(&request("order-0002", "saga_1")).await;
        assert!(matches!(outcome, GatewayOutcome::Unknown(_)), "{outcome:?}");
        assert!(fake.lookup_by_order(&order).await.is_err());
        let resolved = fake.lookup_by_order(&order).await.unwrap().unwrap();
        assert_eq!(resolved.status, GatewayStatus::Done);
    }

    #[tokio::test]
    async fn the_ledger_survives_a_restart() {
        let path = std::env::temp_dir().join(format!("fake-gateway-{}.jsonl", Uuid::now_v7()));
        let settings = FakeSettings {
            mode: FakeMode::Decline,
            ledger: Some(path.clone()),
            ..FakeSettings::default()
        };
        let first = FakeGateway::new(settings.clone()).unwrap();
        first.confirm(&request("order-0003", "saga_1")).await;
        let restarted = FakeGateway::new(FakeSettings {
            mode: FakeMode::Approve,
            ..settings
        })
        .unwrap();
        let looked_up = restarted
            .lookup_by_order(&OrderId::parse("order-0003").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(looked_up.status, GatewayStatus::Aborted);
        assert_eq!(read_ledger(&path).unwrap().len(), 1);
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn an_amount_ending_in_999_declines_unless_the_key_forces_an_outcome() {
        let fake = fake(FakeMode::Approve);
        let declined = fake
            .confirm(&request_of("order-0004", "tgen_1", 10_999))
            .await;
        assert!(
            matches!(&declined, GatewayOutcome::Declined(f) if f.code == DECLINED),
            "{declined:?}"
        );
        let approved = fake
            .confirm(&request_of("order-0005", "tgen_2", 11_000))
            .await;
        assert!(
            matches!(approved, GatewayOutcome::Succeeded(_)),
            "{approved:?}"
        );
        let forced = fake
            .confirm(&request_of("order-0006", "saga_approve_3", 10_999))
            .await;
        assert!(matches!(forced, GatewayOutcome::Succeeded(_)), "{forced:?}");
    }

    #[tokio::test]
    async fn a_cancel_of_a_key_it_does_not_hold_is_refused_as_toss_refuses_it() {
        let fake = FakeGateway::default();
        let outcome = fake
            .cancel(&CancelRequest {
                payment_key: PaymentKey::parse("tgen_never").unwrap(),
                amount: Money::new(Decimal::from(1_000), Currency::Krw).unwrap(),
                reason: "test".into(),
                idempotency_key: "cancel-1".into(),
            })
            .await;
        assert!(
            matches!(&outcome, GatewayOutcome::KeyRefused(f) if f.code == "NOT_FOUND_PAYMENT"),
            "{outcome:?}"
        );
    }
}
