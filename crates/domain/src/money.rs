//! Money: a non-negative decimal amount in one ISO-4217 currency.
//!
//! Amounts are `rust_decimal::Decimal`, never floats. A value is only ever
//! built through [`Money::new`], which refuses negative amounts and amounts
//! finer than the currency's minor unit (1000.5 KRW does not exist), so every
//! `Money` in the system is a real, payable amount. Arithmetic is checked and
//! returns `Result`: mixing currencies or going below zero is an error, never
//! a silent wrap or a panic.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The currencies this service accepts.
///
/// The list is a business decision (what the shops sell in and Toss settles),
/// not a copy of ISO-4217: an order in any other currency is refused at the edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    /// South Korean won: no minor unit.
    #[default]
    #[serde(rename = "KRW")]
    Krw,
    /// US dollar: cents.
    #[serde(rename = "USD")]
    Usd,
    /// Japanese yen: no minor unit.
    #[serde(rename = "JPY")]
    Jpy,
}

impl Currency {
    /// Digits allowed after the decimal point (ISO-4217 "minor unit").
    #[must_use]
    pub const fn minor_unit_scale(self) -> u32 {
        match self {
            Self::Krw | Self::Jpy => 0,
            Self::Usd => 2,
        }
    }

    /// The ISO-4217 alphabetic code.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Krw => "KRW",
            Self::Usd => "USD",
            Self::Jpy => "JPY",
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "KRW" => Ok(Self::Krw),
            "USD" => Ok(Self::Usd),
            "JPY" => Ok(Self::Jpy),
            other => Err(MoneyError::UnsupportedCurrency(other.to_owned())),
        }
    }
}

/// Why an amount of money could not be built or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative, got {0}")]
    Negative(Decimal),
    #[error("{amount} has more decimal places than {currency} allows ({scale})")]
    TooPrecise {
        amount: Decimal,
        currency: Currency,
        scale: u32,
    },
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("arithmetic overflow")]
    Overflow,
    #[error("unsupported currency {0:?} (supported: KRW, USD, JPY)")]
    UnsupportedCurrency(String),
}

/// A non-negative amount of one currency, at that currency's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Builds an amount, refusing negatives and sub-minor-unit precision.
    ///
    /// Trailing zeros are fine (`1000.00 KRW` is `1000 KRW`); the stored
    /// amount is rescaled to the currency's own scale.
    ///
    /// # Errors
    /// [`MoneyError::Negative`] or [`MoneyError::TooPrecise`].
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative(amount));
        }
        let scale = currency.minor_unit_scale();
        let mut normalized = amount.normalize();
        if normalized.scale() > scale {
            return Err(MoneyError::TooPrecise {
                amount,
                currency,
                scale,
            });
        }
        normalized.rescale(scale);
        // `-0` normalises to a negative-signed zero; money has no sign.
        normalized.set_sign_positive(true);
        Ok(Self {
            amount: normalized,
            currency,
        })
    }

    /// Zero in `currency`.
    #[must_use]
    pub fn zero(currency: Currency) -> Self {
        let mut amount = Decimal::ZERO;
        amount.rescale(currency.minor_unit_scale());
        Self { amount, currency }
    }

    #[must_use]
    pub const fn amount(&self) -> Decimal {
        self.amount
    }

    #[must_use]
    pub const fn currency(&self) -> Currency {
        self.currency
    }

    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// `self + other`.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] or [`MoneyError::Overflow`].
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let sum = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Self::new(sum, self.currency)
    }

    /// `self - other`; money never goes below zero.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`], or [`MoneyError::Negative`] when
    /// `other > self`.
    pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let difference = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Self::new(difference, self.currency)
    }

    /// Compares two amounts of the same currency.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`]: amounts in different currencies have
    /// no order.
    pub fn checked_cmp(&self, other: &Self) -> Result<Ordering, MoneyError> {
        self.same_currency(*other)?;
        Ok(self.amount.cmp(&other.amount))
    }

    fn same_currency(self, other: Self) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Wire shape: `{"amount": "1000", "currency": "KRW"}` (amount as a string so
/// no JSON reader ever turns it into a float).
#[derive(Serialize, Deserialize)]
struct MoneyRepr {
    amount: Decimal,
    currency: Currency,
}

impl TryFrom<MoneyRepr> for Money {
    type Error = MoneyError;

    fn try_from(repr: MoneyRepr) -> Result<Self, Self::Error> {
        Self::new(repr.amount, repr.currency)
    }
}

impl From<Money> for MoneyRepr {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount,
            currency: money.currency,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use super::*;

    fn krw(amount: Decimal) -> Money {
        Money::new(amount, Currency::Krw).unwrap()
    }

    #[test]
    fn krw_has_no_minor_unit() {
        assert_eq!(
            Money::new(dec!(1000.5), Currency::Krw),
            Err(MoneyError::TooPrecise {
                amount: dec!(1000.5),
                currency: Currency::Krw,
                scale: 0
            })
        );
    }

    #[test]
    fn trailing_zeros_are_rescaled_to_the_currency_scale() {
        let money = Money::new(dec!(1000.00), Currency::Krw).unwrap();
        assert_eq!(money.amount().to_string(), "1000");
        let dollars = Money::new(dec!(12.5), Currency::Usd).unwrap();
        assert_eq!(dollars.amount().to_string(), "12.50");
    }

    #[test]
    fn usd_allows_cents_but_not_less() {
        assert!(Money::new(dec!(10.99), Currency::Usd).is_ok());
        assert!(matches!(
            Money::new(dec!(10.999), Currency::Usd),
            Err(MoneyError::TooPrecise { .. })
        ));
    }

    #[test]
    fn negative_amounts_are_refused() {
        assert_eq!(
            Money::new(dec!(-1), Currency::Krw),
            Err(MoneyError::Negative(dec!(-1)))
        );
    }

    #[test]
    fn negative_zero_is_plain_zero() {
        let zero = Money::new(dec!(-0), Currency::Krw).unwrap();
        assert_eq!(zero, Money::zero(Currency::Krw));
    }

    #[test]
    fn subtraction_below_zero_is_an_error() {
        assert_eq!(
            krw(dec!(1000)).checked_sub(krw(dec!(1001))),
            Err(MoneyError::Negative(dec!(-1)))
        );
    }

    #[test]
    fn currencies_do_not_mix() {
        let dollars = Money::new(dec!(1), Currency::Usd).unwrap();
        assert_eq!(
            krw(dec!(1)).checked_add(dollars),
            Err(MoneyError::CurrencyMismatch {
                left: Currency::Krw,
                right: Currency::Usd
            })
        );
        assert!(krw(dec!(1)).checked_cmp(&dollars).is_err());
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert_eq!(
            krw(Decimal::MAX).checked_add(krw(dec!(1))),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn json_keeps_the_amount_exact_and_validates_on_read() {
        let json = serde_json::to_string(&krw(dec!(15000))).unwrap();
        assert_eq!(json, r#"{"amount":"15000","currency":"KRW"}"#);
        let bad = serde_json::from_str::<Money>(r#"{"amount":"1.5","currency":"KRW"}"#);
        assert!(bad.is_err());
        let unknown = serde_json::from_str::<Money>(r#"{"amount":"1","currency":"XYZ"}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn currency_codes_round_trip() {
        for currency in [Currency::Krw, Currency::Usd, Currency::Jpy] {
            assert_eq!(currency.code().parse::<Currency>(), Ok(currency));
        }
        assert!("krw".parse::<Currency>().is_err());
    }

    fn any_krw() -> impl Strategy<Value = Money> {
        (0_i64..=1_000_000_000).prop_map(|won| krw(Decimal::from(won)))
    }

    proptest! {
        #[test]
        fn add_then_sub_round_trips(a in any_krw(), b in any_krw()) {
            let sum = a.checked_add(b).unwrap();
            prop_assert_eq!(sum.checked_sub(b).unwrap(), a);
        }

        #[test]
        fn sub_is_ok_exactly_when_not_going_negative(a in any_krw(), b in any_krw()) {
            let result = a.checked_sub(b);
            prop_assert_eq!(result.is_ok(), a.amount() >= b.amount());
            if let Ok(rest) = result {
                prop_assert!(!rest.amount().is_sign_negative() || rest.is_zero());
            }
        }

        #[test]
        fn any_usd_cent_amount_is_valid(cents in 0_i64..=10_000_000_000) {
            let money = Money::new(Decimal::new(cents, 2), Currency::Usd).unwrap();
            prop_assert_eq!(money.amount().scale(), 2);
        }
    }
}
