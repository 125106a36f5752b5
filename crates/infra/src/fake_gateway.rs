//! A payment gateway with no network (`PAYMENT__GATEWAY=fake`): for the
//! booking saga, local runs and load tests. It approves, declines or delays
//! by configuration, declines amounts that end in `999` (so a demo can show
//! a decline on purpose), and remembers what it approved so lookups answer
//! like Toss would; cancels move its balance and replay by idempotency key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use payment_application::{
    CancelRequest, ConfirmRequest, GatewayCancel, GatewayOutcome, GatewayPayment, GatewayStatus,
    LookupFailed, PaymentGateway,
};
use payment_domain::{Failure, OrderId, PaymentKey};
use rust_decimal::Decimal;

/// What the fake answers to a confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FakeMode {
    #[default]
    Approve,
    Decline,
    /// Approve or decline, one in two.
    Random,
}

#[derive(Debug, Clone, Default)]
pub struct FakeGateway {
    mode: FakeMode,
    delay: Duration,
    approved: Arc<Mutex<HashMap<OrderId, GatewayPayment>>>,
    /// Cancel answers by idempotency key.
    cancels: Arc<Mutex<HashMap<String, GatewayOutcome>>>,
}

impl FakeGateway {
    #[must_use]
    pub fn new(mode: FakeMode, delay: Duration) -> Self {
        Self {
            mode,
            delay,
            approved: Arc::default(),
            cancels: Arc::default(),
        }
    }

    fn declines(&self, request: &ConfirmRequest) -> bool {
        let ends_in_999 = (request.amount.amount() % Decimal::from(1000)) == Decimal::from(999);
        ends_in_999
            || match self.mode {
                FakeMode::Approve => false,
                FakeMode::Decline => true,
                FakeMode::Random => uuid::Uuid::now_v7().as_bytes()[15].is_multiple_of(2),
            }
    }

    fn payments(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, GatewayPayment>> {
        self.approved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PaymentGateway for FakeGateway {
    async fn confirm(&self, request: &ConfirmRequest) -> GatewayOutcome {
        tokio::time::sleep(self.delay).await;
        if let Some(known) = self.payments().get(&request.order_id) {
            return GatewayOutcome::Succeeded(known.clone());
        }
        if self.declines(request) {
            return GatewayOutcome::Declined(Failure {
                code: "REJECT_CARD_PAYMENT".into(),
                message: "declined by the fake gateway".into(),
            });
        }
        let payment = GatewayPayment {
            payment_key: request.payment_key.clone(),
            order_id: request.order_id.clone(),
            status: GatewayStatus::Done,
            total_amount: request.amount,
            balance_amount: request.amount,
            method: Some("FAKE".into()),
            approved_at: Some(Utc::now()),
            last_transaction_key: Some(uuid::Uuid::now_v7().simple().to_string()),
            failure: None,
            cancels: Vec::new(),
        };
        self.payments()
            .insert(request.order_id.clone(), payment.clone());
        GatewayOutcome::Succeeded(payment)
    }

    async fn cancel(&self, request: &CancelRequest) -> GatewayOutcome {
        tokio::time::sleep(self.delay).await;
        let mut answered = self
            .cancels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(first) = answered.get(&request.idempotency_key) {
            return first.clone(); // the same key replays the first answer
        }
        let mut payments = self.payments();
        let outcome = match payments
            .values_mut()
            .find(|p| p.payment_key == request.payment_key)
        {
            None => GatewayOutcome::KeyRefused(Failure {
                code: "NOT_FOUND_PAYMENT".into(),
                message: "no such payment at the fake gateway".into(),
            }),
            Some(payment) => match payment.balance_amount.checked_sub(request.amount) {
                Err(_) => GatewayOutcome::Declined(Failure {
                    code: "NOT_CANCELABLE_AMOUNT".into(),
                    message: "more than the cancelable balance".into(),
                }),
                Ok(balance) => {
                    let key = uuid::Uuid::now_v7().simple().to_string();
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
        answered.insert(request.idempotency_key.clone(), outcome.clone());
        outcome
    }

    async fn lookup_by_order(
        &self,
        order_id: &OrderId,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        Ok(self.payments().get(order_id).cloned())
    }

    async fn lookup(
        &self,
        payment_key: &PaymentKey,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        Ok(self
            .payments()
            .values()
            .find(|p| &p.payment_key == payment_key)
            .cloned())
    }
}
