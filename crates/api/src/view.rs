//! What the API shows of a payment.

use payment_application::integration::amount_json;
use payment_domain::Payment;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentView {
    pub payment_id: String,
    pub order_id: String,
    pub user_id: String,
    /// A JSON number at the currency's scale (whole won and yen).
    #[schema(value_type = f64)]
    pub amount: Value,
    /// What is still cancelable.
    #[schema(value_type = f64)]
    pub balance_amount: Value,
    pub currency: &'static str,
    pub status: &'static str,
    pub payment_key: Option<String>,
    pub method: Option<String>,
    pub approved_at: Option<String>,
    pub failure: Option<FailureView>,
    pub version: u64,
    pub created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FailureView {
    pub code: String,
    pub message: String,
}

impl From<&Payment> for PaymentView {
    fn from(payment: &Payment) -> Self {
        Self {
            payment_id: payment.id().to_string(),
            order_id: payment.order_id().to_string(),
            user_id: payment.user_id().to_string(),
            amount: amount_json(payment.amount()),
            balance_amount: amount_json(payment.balance()),
            currency: payment.amount().currency().code(),
            status: payment.status().as_str(),
            payment_key: payment.payment_key().map(ToString::to_string),
            method: payment.method().map(str::to_owned),
            approved_at: payment.approved_at().map(|t| t.to_rfc3339()),
            failure: payment.failure().map(|f| FailureView {
                code: f.code.clone(),
                message: f.message.clone(),
            }),
            version: payment.version(),
            created_at: payment.created_at().to_rfc3339(),
        }
    }
}
