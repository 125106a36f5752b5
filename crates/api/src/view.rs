//! What the API shows of a payment, and the OpenAPI schemas of amounts.

use std::borrow::Cow;

use payment_application::integration::amount_json;
use payment_domain::money::{MAX_AMOUNT_TEXT, MAX_SIGNIFICANT_DIGITS};
use payment_domain::Payment;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// An amount in a string: at most 15 digits before the point, at most 2
/// after (no currency has more; trailing zeros do not count), no sign.
/// ([`payment_domain::parse_amount`] also reads an exponent, `1.5e3`; the
/// document leaves that form out because no pattern can bound its value.)
const AMOUNT_PATTERN: &str = r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,2}0*)?$";

const AMOUNT_RULES: &str = "Exact decimal (never read as a float). At most the currency's \
decimals (KRW and JPY: 0, USD: 2) and 15 significant digits: up to 999999999999999 KRW/JPY, \
9999999999999.99 USD.";

/// The largest amount of any currency, in whole units (KRW's maximum).
fn max_whole_units() -> usize {
    10_usize.pow(MAX_SIGNIFICANT_DIGITS) - 1
}

/// A JSON `kind` (number, integer) bounded like every amount.
fn amount_of(kind: Type) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(kind)
        .minimum(Some(0_usize))
        .maximum(Some(max_whole_units()))
}

/// An amount the service answers with: a JSON number at the currency's scale
/// (`15000`, `10.99`, `12.50`).
#[derive(Debug)]
pub struct Amount;

impl utoipa::PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        amount_of(Type::Number)
            .description(Some(format!(
                "A JSON number at the currency's scale. {AMOUNT_RULES}"
            )))
            .examples([Value::from(15_000)])
            .into()
    }
}

impl utoipa::ToSchema for Amount {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Amount")
    }
}

/// An amount the service accepts, read exactly by the one parser
/// ([`payment_domain::amount_from_json`]): declared as a JSON integer
/// (`15000`) or a string holding a decimal (`"10.99"`), the two forms JSON
/// Schema bounds exactly. The parser also reads a JSON number with decimals
/// (`10.99`), the same way; the schema leaves that form out, because JSON
/// Schema can bound a number's decimals only with `multipleOf`, which
/// validators and generators compute in floating point (`10.99 / 0.01` is
/// not a whole number in `f64`).
#[derive(Debug)]
pub struct AmountInput;

impl utoipa::PartialSchema for AmountInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(amount_of(Type::Integer))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(AMOUNT_PATTERN))
                    .min_length(Some(1))
                    .max_length(Some(MAX_AMOUNT_TEXT)),
            )
            .description(Some(format!(
                "A JSON integer (whole units), or a string holding a decimal (`\"10.99\"`). \
                 {AMOUNT_RULES} A JSON number with decimals (`10.99`) is read the same way, \
                 exactly; it is left out of this schema because JSON Schema bounds a number's \
                 decimals only with `multipleOf`, which validators compute in floating point."
            )))
            .examples([Value::from(15_000)])
            .into()
    }
}

impl utoipa::ToSchema for AmountInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AmountInput")
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentView {
    pub payment_id: String,
    pub order_id: String,
    pub user_id: String,
    /// A JSON number at the currency's scale (whole won and yen).
    #[schema(value_type = Amount)]
    pub amount: Value,
    /// What is still cancelable.
    #[schema(value_type = Amount)]
    pub balance_amount: Value,
    pub currency: &'static str,
    pub status: &'static str,
    pub payment_key: Option<String>,
    pub method: Option<String>,
    pub approved_at: Option<String>,
    pub failure: Option<FailureView>,
    /// Cancels asked of the PG and not answered yet: their amounts are
    /// reserved (not cancelable again) until the PG's answer is recorded.
    pub pending_cancels: Vec<PendingCancelView>,
    pub version: u64,
    pub created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingCancelView {
    /// Our cancel's id (the PG's idempotency key).
    pub transaction_id: String,
    #[schema(value_type = Amount)]
    pub amount: Value,
    pub reason: String,
    /// Handed to an operator: the PG's answer could not be learned in time,
    /// so the reservation is kept and nothing is sent again.
    pub escalated: bool,
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
            pending_cancels: payment
                .pending_cancels()
                .iter()
                .map(|pending| PendingCancelView {
                    transaction_id: pending.transaction_id.to_string(),
                    amount: amount_json(pending.amount),
                    reason: pending.reason.clone(),
                    escalated: pending.escalated,
                })
                .collect(),
            version: payment.version(),
            created_at: payment.created_at().to_rfc3339(),
        }
    }
}
