//! The Payment object (API version 2022-11-16) as the fake stores and serves
//! it, and the error bodies. Field names and their order follow the examples
//! in Toss's documentation; fields the fake never fills are `null`.

use chrono::{Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The API version the fake speaks (the `version` field of every Payment).
pub(crate) const API_VERSION: &str = "2022-11-16";

/// Toss's payment status, limited to the ones the fake can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Status {
    Done,
    PartialCanceled,
    Canceled,
    Aborted,
}

impl Status {
    /// Whether money was ever taken (the order id is then used up).
    pub(crate) const fn was_approved(self) -> bool {
        matches!(self, Self::Done | Self::PartialCanceled | Self::Canceled)
    }
}

/// `{code, message}`: Toss's error object, also found in `Payment.failure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ErrorBody {
    pub(crate) code: String,
    pub(crate) message: String,
}

/// One entry of `Payment.cancels`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CancelEntry {
    pub(crate) transaction_key: String,
    pub(crate) cancel_reason: String,
    pub(crate) tax_exemption_amount: i64,
    pub(crate) canceled_at: String,
    pub(crate) easy_pay_discount_amount: i64,
    pub(crate) receipt_key: (),
    pub(crate) cancel_status: &'static str,
    pub(crate) cancel_request_id: (),
    pub(crate) cancel_amount: i64,
    pub(crate) tax_free_amount: i64,
    pub(crate) refundable_amount: i64,
}

/// `Payment.card`: a fixed test card (Toss's sandbox answers much the same).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Card {
    pub(crate) issuer_code: &'static str,
    pub(crate) acquirer_code: &'static str,
    pub(crate) number: &'static str,
    pub(crate) installment_plan_months: i64,
    pub(crate) is_interest_free: bool,
    pub(crate) interest_payer: (),
    pub(crate) approve_no: &'static str,
    pub(crate) use_card_point: bool,
    pub(crate) card_type: &'static str,
    pub(crate) owner_type: &'static str,
    pub(crate) acquire_status: &'static str,
    pub(crate) amount: i64,
}

/// `{url}` objects (`receipt`, `checkout`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Link {
    pub(crate) url: String,
}

/// The Payment object. `()` fields serialize as JSON `null`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Payment {
    pub(crate) m_id: &'static str,
    pub(crate) last_transaction_key: Option<String>,
    pub(crate) payment_key: String,
    pub(crate) order_id: String,
    pub(crate) order_name: String,
    pub(crate) tax_exemption_amount: i64,
    pub(crate) status: Status,
    pub(crate) requested_at: String,
    pub(crate) approved_at: Option<String>,
    pub(crate) use_escrow: bool,
    pub(crate) culture_expense: bool,
    pub(crate) card: Option<Card>,
    pub(crate) virtual_account: (),
    pub(crate) transfer: (),
    pub(crate) mobile_phone: (),
    pub(crate) gift_certificate: (),
    pub(crate) cash_receipt: (),
    pub(crate) cash_receipts: (),
    pub(crate) discount: (),
    pub(crate) cancels: Option<Vec<CancelEntry>>,
    pub(crate) secret: (),
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) easy_pay: (),
    pub(crate) country: &'static str,
    pub(crate) failure: Option<ErrorBody>,
    pub(crate) is_partial_cancelable: bool,
    pub(crate) receipt: Option<Link>,
    pub(crate) checkout: Option<Link>,
    pub(crate) currency: &'static str,
    pub(crate) total_amount: i64,
    pub(crate) balance_amount: i64,
    pub(crate) supplied_amount: i64,
    pub(crate) vat: i64,
    pub(crate) tax_free_amount: i64,
    pub(crate) method: Option<&'static str>,
    pub(crate) version: &'static str,
    pub(crate) metadata: (),
    /// Creation order, for "the latest payment of this order".
    #[serde(skip)]
    pub(crate) seq: u64,
}

impl Payment {
    /// A card payment as the widget created it and confirm decided it:
    /// `DONE` (approved) or `ABORTED` with `failure` (declined).
    pub(crate) fn new_card(
        payment_key: String,
        order_id: String,
        amount: i64,
        outcome: Result<(), ErrorBody>,
        seq: u64,
    ) -> Self {
        let now = kst_now();
        let (status, approved_at, failure) = match outcome {
            Ok(()) => (Status::Done, Some(now.clone()), None),
            Err(failure) => (Status::Aborted, None, Some(failure)),
        };
        let (supplied_amount, vat) = split_vat(amount);
        Self {
            m_id: "tosspayments",
            last_transaction_key: Some(transaction_key()),
            order_name: format!("fake-toss {order_id}"),
            // Toss's URL shapes; the fake serves neither page.
            checkout: Some(Link {
                url: format!("https://api.tosspayments.com/v1/payments/{payment_key}/checkout"),
            }),
            receipt: Some(Link {
                url: format!(
                    "https://dashboard.tosspayments.com/receipt/redirection?transactionId={payment_key}&ref=PX"
                ),
            }),
            payment_key,
            order_id,
            tax_exemption_amount: 0,
            status,
            requested_at: now,
            approved_at,
            use_escrow: false,
            culture_expense: false,
            card: Some(Card {
                issuer_code: "71",
                acquirer_code: "71",
                number: "43301234****123*",
                installment_plan_months: 0,
                is_interest_free: false,
                interest_payer: (),
                approve_no: "00000000",
                use_card_point: false,
                card_type: "신용",
                owner_type: "개인",
                acquire_status: "READY",
                amount,
            }),
            virtual_account: (),
            transfer: (),
            mobile_phone: (),
            gift_certificate: (),
            cash_receipt: (),
            cash_receipts: (),
            discount: (),
            cancels: None,
            secret: (),
            kind: "NORMAL",
            easy_pay: (),
            country: "KR",
            failure,
            is_partial_cancelable: true,
            currency: "KRW",
            total_amount: amount,
            balance_amount: amount,
            supplied_amount,
            vat,
            tax_free_amount: 0,
            method: Some("카드"),
            version: API_VERSION,
            metadata: (),
            seq,
        }
    }

    /// Refunds `amount` (already checked to be `1..=balance_amount`): a new
    /// `cancels[]` entry, a new `lastTransactionKey`, the balance and the
    /// VAT split of what remains, and `PARTIAL_CANCELED` or `CANCELED`.
    pub(crate) fn apply_cancel(&mut self, amount: i64, reason: String) {
        let key = transaction_key();
        self.balance_amount -= amount;
        let (supplied_amount, vat) = split_vat(self.balance_amount);
        self.supplied_amount = supplied_amount;
        self.vat = vat;
        self.status = if self.balance_amount == 0 {
            Status::Canceled
        } else {
            Status::PartialCanceled
        };
        self.cancels.get_or_insert_with(Vec::new).push(CancelEntry {
            transaction_key: key.clone(),
            cancel_reason: reason,
            tax_exemption_amount: 0,
            canceled_at: kst_now(),
            easy_pay_discount_amount: 0,
            receipt_key: (),
            cancel_status: "DONE",
            cancel_request_id: (),
            cancel_amount: amount,
            tax_free_amount: 0,
            refundable_amount: self.balance_amount,
        });
        self.last_transaction_key = Some(key);
    }
}

/// Now in Korea, as Toss writes it: `yyyy-MM-dd'T'HH:mm:ss+09:00`.
pub(crate) fn kst_now() -> String {
    (Utc::now() + Duration::hours(9))
        .format("%Y-%m-%dT%H:%M:%S+09:00")
        .to_string()
}

/// A transaction key in Toss's shape: 32 upper-case hex digits.
pub(crate) fn transaction_key() -> String {
    Uuid::now_v7().simple().to_string().to_uppercase()
}

/// `(suppliedAmount, vat)` of a taxable amount: VAT is 1/11 of it, rounded
/// half up (15000 → 13636 + 1364, as in Toss's examples).
pub(crate) const fn split_vat(amount: i64) -> (i64, i64) {
    let vat = (2 * amount + 11) / 22;
    (amount - vat, vat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vat_matches_tosss_examples() {
        assert_eq!(split_vat(15_000), (13_636, 1_364));
        assert_eq!(split_vat(9_026), (8_205, 821));
        assert_eq!(split_vat(30_000), (27_273, 2_727));
        assert_eq!(split_vat(0), (0, 0));
    }

    #[test]
    fn transaction_keys_look_like_tosss() {
        let key = transaction_key();
        assert_eq!(key.len(), 32);
        assert!(key
            .chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)));
        assert_ne!(key, transaction_key());
    }

    #[test]
    fn times_carry_the_korean_offset() {
        let now = kst_now();
        assert!(now.ends_with("+09:00"), "{now}");
        assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok());
    }
}
