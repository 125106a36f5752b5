//! The payment gateway the configuration chose (`PAYMENT__GATEWAY`).

use payment_application::{
    CancelRequest, ConfirmRequest, GatewayOutcome, GatewayPayment, LookupFailed, PaymentGateway,
};
use payment_domain::{OrderId, PaymentKey};

use crate::fake_gateway::FakeGateway;
use crate::toss::TossGateway;

/// Toss, or the network-free fake.
#[derive(Debug, Clone)]
pub enum ConfiguredGateway {
    Toss(TossGateway),
    Fake(FakeGateway),
}

impl PaymentGateway for ConfiguredGateway {
    async fn confirm(&self, request: &ConfirmRequest) -> GatewayOutcome {
        match self {
            Self::Toss(toss) => toss.confirm(request).await,
            Self::Fake(fake) => fake.confirm(request).await,
        }
    }

    async fn cancel(&self, request: &CancelRequest) -> GatewayOutcome {
        match self {
            Self::Toss(toss) => toss.cancel(request).await,
            Self::Fake(fake) => fake.cancel(request).await,
        }
    }

    async fn lookup_by_order(
        &self,
        order_id: &OrderId,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        match self {
            Self::Toss(toss) => toss.lookup_by_order(order_id).await,
            Self::Fake(fake) => fake.lookup_by_order(order_id).await,
        }
    }

    async fn lookup(
        &self,
        payment_key: &PaymentKey,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        match self {
            Self::Toss(toss) => toss.lookup(payment_key).await,
            Self::Fake(fake) => fake.lookup(payment_key).await,
        }
    }
}
