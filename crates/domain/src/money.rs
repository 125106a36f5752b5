//! Money: a non-negative decimal amount in one ISO-4217 currency.
//!
//! Amounts are `rust_decimal::Decimal`, never floats. A value is only ever
//! built through [`Money::new`], which refuses negative amounts, amounts
//! finer than the currency's minor unit (1000.5 KRW does not exist) and
//! amounts above the currency's [`Currency::max_amount`], so every `Money` in
//! the system is a real, payable, storable amount. Arithmetic is checked and
//! returns `Result`: mixing currencies or going below zero is an error, never
//! a silent wrap or a panic.
//!
//! Amounts that arrive as text (a JSON number or a JSON string, from HTTP,
//! Kafka or Toss) are read by one parser, [`parse_amount`] (JSON values:
//! [`amount_from_json`]), digit by digit into a `Decimal`: never through a
//! float, never rounded. The workspace's `serde_json` keeps numbers as their
//! text (`arbitrary_precision`, enabled by this crate), so `10.99` stays
//! `10.99` from the wire to the database and back.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Significant digits of the largest amount of any currency: 15.
///
/// Two limits meet here. The database stores amounts as `DECIMAL(19,4)`,
/// which holds at most 15 digits before the point; and 15 significant digits
/// is what survives any reader that parses JSON numbers as IEEE doubles (a
/// JavaScript order service, a dashboard), so every amount we publish reads
/// back exactly everywhere. Real payments are many orders of magnitude
/// smaller; Toss refuses what its own limits refuse.
pub const MAX_SIGNIFICANT_DIGITS: u32 = 15;

/// Longest amount text [`parse_amount`] reads (no real amount comes close).
pub const MAX_AMOUNT_TEXT: usize = 64;

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

    /// The largest amount of this currency the service takes: 15 significant
    /// digits at the currency's scale (see [`MAX_SIGNIFICANT_DIGITS`]):
    /// 999,999,999,999,999 KRW or JPY, 9,999,999,999,999.99 USD.
    #[must_use]
    pub fn max_amount(self) -> Decimal {
        let scale = self.minor_unit_scale();
        // 10^15 - 1 minor units; 15 digits fit an i64 with room to spare.
        let minor_units = 10_i64.pow(MAX_SIGNIFICANT_DIGITS) - 1;
        Decimal::new(minor_units, scale)
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
    #[error("{amount} {currency} is above the largest amount the service takes ({max})")]
    AboveMaximum {
        amount: Decimal,
        currency: Currency,
        max: Decimal,
    },
    #[error("unsupported currency {0:?} (supported: KRW, USD, JPY)")]
    UnsupportedCurrency(String),
    #[error("{text:?} is not an amount: {reason}")]
    NotAnAmount { text: String, reason: &'static str },
}

/// Reads an amount written as a JSON number (`15000`, `10.99`, `1.5e3`), the
/// same grammar being accepted inside a JSON string (`"10.99"`). Exact: the
/// digits become a `Decimal` as they are written, never through a float and
/// never rounded; text that a `Decimal` cannot hold exactly is refused.
///
/// This is the grammar only (sign included, so a negative amount gets the
/// clearer [`MoneyError::Negative`] from [`Money::new`]); the currency's scale
/// and maximum are [`Money::new`]'s. It already refuses anything with more
/// than [`MAX_SIGNIFICANT_DIGITS`] digits before the point, which no currency
/// takes.
///
/// # Errors
/// [`MoneyError::NotAnAmount`] naming what is wrong with `text`.
pub fn parse_amount(text: &str) -> Result<Decimal, MoneyError> {
    let refuse = |reason| MoneyError::NotAnAmount {
        text: text.chars().take(MAX_AMOUNT_TEXT).collect(),
        reason,
    };
    if text.len() > MAX_AMOUNT_TEXT {
        return Err(refuse("longer than 64 characters"));
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (integer, fraction) = match mantissa.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (mantissa, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(integer) || (integer.len() > 1 && integer.starts_with('0')) {
        return Err(refuse(
            "expected digits without leading zeros, like 15000 or 10.99",
        ));
    }
    if fraction.is_some_and(|f| !all_digits(f)) {
        return Err(refuse("expected digits after the decimal point"));
    }
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if !all_digits(digits) {
                return Err(refuse("expected digits in the exponent"));
            }
            // At most 64 characters: the exponent has at most 62 digits, so
            // parse saturating and let the range checks below refuse it.
            let magnitude = digits.parse::<i64>().unwrap_or(i64::MAX / 2);
            if e.starts_with('-') {
                -magnitude
            } else {
                magnitude
            }
        }
    };
    // value = significant digits x 10^power, trailing zeros folded into power.
    let fraction = fraction.unwrap_or("");
    let written = format!("{integer}{fraction}");
    let significant = written.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    let fraction_len = i64::try_from(fraction.len()).unwrap_or(i64::MAX);
    let trailing_zeros = i64::try_from(significant.len() - trimmed.len()).unwrap_or(0);
    let power = exponent - fraction_len + trailing_zeros;
    if trimmed.is_empty() {
        return Ok(Decimal::ZERO);
    }
    let digits = i64::try_from(trimmed.len()).unwrap_or(i64::MAX);
    let max_digits = i64::from(MAX_SIGNIFICANT_DIGITS);
    if digits + power > max_digits {
        return Err(refuse("more than 15 digits before the decimal point"));
    }
    // `Decimal` holds at most 28 decimal places.
    if -power > 28 || digits > 28 {
        return Err(refuse("more decimal places than any amount has"));
    }
    let mut units: i128 = trimmed.parse().map_err(|_| refuse("expected digits"))?;
    let mut scale = 0_u32;
    if power >= 0 {
        // digits + power <= 15: 10^power and the product fit an i128.
        units *= 10_i128.pow(u32::try_from(power).unwrap_or(0));
    } else {
        scale = u32::try_from(-power).unwrap_or(28);
    }
    if negative {
        units = -units;
    }
    Decimal::try_from_i128_with_scale(units, scale).map_err(|_| refuse("out of range"))
}

/// [`parse_amount`] for a JSON value: a number, or a string holding one.
///
/// # Errors
/// [`MoneyError::NotAnAmount`]; `null`, booleans, arrays and objects too.
pub fn amount_from_json(value: &Value) -> Result<Decimal, MoneyError> {
    match value {
        // With `arbitrary_precision` a number displays as it was written.
        Value::Number(number) => parse_amount(&number.to_string()),
        Value::String(text) => parse_amount(text),
        other => Err(MoneyError::NotAnAmount {
            text: other.to_string().chars().take(MAX_AMOUNT_TEXT).collect(),
            reason: "expected a JSON number or a decimal string",
        }),
    }
}

/// A non-negative amount of one currency, at that currency's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Builds an amount, refusing negatives, sub-minor-unit precision and
    /// amounts above [`Currency::max_amount`].
    ///
    /// Trailing zeros are fine (`1000.00 KRW` is `1000 KRW`); the stored
    /// amount is rescaled to the currency's own scale.
    ///
    /// # Errors
    /// [`MoneyError::Negative`], [`MoneyError::TooPrecise`] or
    /// [`MoneyError::AboveMaximum`].
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative(amount));
        }
        let max = currency.max_amount();
        if amount > max {
            return Err(MoneyError::AboveMaximum {
                amount,
                currency,
                max,
            });
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

    /// Reads an amount of `currency` from a JSON number or string: the one
    /// parser ([`amount_from_json`]), then [`Money::new`]'s rules.
    ///
    /// # Errors
    /// [`MoneyError::NotAnAmount`] or any error of [`Money::new`].
    pub fn from_json(value: &Value, currency: Currency) -> Result<Self, MoneyError> {
        Self::new(amount_from_json(value)?, currency)
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
        // Decimal::MAX is no longer an amount (above the maximum), so the
        // largest sum that can be asked for starts from the maximum.
        let max = krw(Currency::Krw.max_amount());
        assert!(matches!(
            max.checked_add(krw(dec!(1))),
            Err(MoneyError::AboveMaximum { .. })
        ));
        assert!(Money::new(Decimal::MAX, Currency::Krw).is_err());
    }

    #[test]
    fn each_currency_has_a_documented_maximum() {
        assert_eq!(Currency::Krw.max_amount(), dec!(999_999_999_999_999));
        assert_eq!(Currency::Jpy.max_amount(), dec!(999_999_999_999_999));
        assert_eq!(Currency::Usd.max_amount(), dec!(9_999_999_999_999.99));
        for currency in [Currency::Krw, Currency::Usd, Currency::Jpy] {
            let max = currency.max_amount();
            assert_eq!(Money::new(max, currency).unwrap().amount(), max);
        }
    }

    #[test]
    fn ten_to_the_fifteen_is_refused_as_invalid_input() {
        // issue 9: the DECIMAL(19,4) column cannot hold it; refuse at the edge.
        let ten_to_15 = Decimal::from(1_000_000_000_000_000_i64);
        assert!(matches!(
            Money::new(ten_to_15, Currency::Krw),
            Err(MoneyError::AboveMaximum { .. })
        ));
        assert!(matches!(
            parse_amount("1000000000000000"),
            Err(MoneyError::NotAnAmount { .. })
        ));
        assert!(matches!(
            parse_amount("1e15"),
            Err(MoneyError::NotAnAmount { .. })
        ));
        assert!(matches!(
            Money::from_json(&serde_json::json!(10_000_000_000_000_u64), Currency::Usd),
            Err(MoneyError::AboveMaximum { .. })
        ));
    }

    #[test]
    fn amounts_are_parsed_exactly_from_numbers_and_strings() {
        let cases = [
            ("15000", dec!(15000)),
            ("10.99", dec!(10.99)),
            ("0.1", dec!(0.1)),
            ("0", dec!(0)),
            ("-0", dec!(0)),
            ("1000.00", dec!(1000)),
            ("1.5e3", dec!(1500)),
            ("15E+2", dec!(1500)),
            ("1099e-2", dec!(10.99)),
            ("999999999999999", dec!(999_999_999_999_999)),
            ("9999999999999.99", dec!(9_999_999_999_999.99)),
            ("-5", dec!(-5)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_amount(text), Ok(expected), "{text}");
            let number: Value = serde_json::from_str(text).unwrap();
            assert_eq!(amount_from_json(&number), Ok(expected), "number {text}");
            assert_eq!(
                amount_from_json(&Value::String(text.to_owned())),
                Ok(expected),
                "string {text}"
            );
        }
    }

    #[test]
    fn a_json_number_keeps_every_digit() {
        // Through a float, 0.1 + 0.2 style noise or a 17th digit would creep in.
        let value: Value = serde_json::from_str("12345678901234.56").unwrap();
        assert_eq!(amount_from_json(&value), Ok(dec!(12345678901234.56)));
        let value: Value = serde_json::from_str("0.30000000000000001").unwrap();
        assert_eq!(amount_from_json(&value), Ok(dec!(0.30000000000000001)));
        assert!(matches!(
            Money::from_json(&value, Currency::Usd),
            Err(MoneyError::TooPrecise { .. })
        ));
    }

    #[test]
    fn what_is_not_an_amount_is_refused() {
        for text in [
            "",
            "-",
            "abc",
            "1,000",
            "1 000",
            " 1",
            "1.",
            ".5",
            "+1",
            "01",
            "0x10",
            "1e",
            "1e+",
            "1.2.3",
            "NaN",
            "Infinity",
            "1_000",
            "１２",
            "1e-29",
            "0.00000000000000000000000000001",
        ] {
            assert!(
                matches!(parse_amount(text), Err(MoneyError::NotAnAmount { .. })),
                "{text:?}"
            );
        }
        assert!(parse_amount(&"1".repeat(65)).is_err());
        assert!(parse_amount("1e99999999999999999999999").is_err());
        for value in [
            Value::Null,
            Value::Bool(true),
            serde_json::json!([1]),
            serde_json::json!({"amount": 1}),
        ] {
            assert!(amount_from_json(&value).is_err(), "{value}");
        }
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

        #[test]
        fn amounts_up_to_the_maximum_parse_and_print_back(
            units in 0_i64..1_000_000_000_000_000,
            currency in prop_oneof![Just(Currency::Krw), Just(Currency::Usd), Just(Currency::Jpy)],
        ) {
            let amount = Decimal::new(units, currency.minor_unit_scale());
            let money = Money::new(amount, currency).unwrap();
            let text = money.amount().to_string();
            prop_assert_eq!(Money::from_json(&Value::String(text.clone()), currency), Ok(money));
            let number: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(number.to_string(), text);
            prop_assert_eq!(Money::from_json(&number, currency), Ok(money));
        }

        #[test]
        fn above_the_maximum_is_refused(
            excess in 1_i64..1_000_000_000,
            currency in prop_oneof![Just(Currency::Krw), Just(Currency::Usd), Just(Currency::Jpy)],
        ) {
            let amount = currency.max_amount() + Decimal::new(excess, currency.minor_unit_scale());
            let is_above_maximum = matches!(
                Money::new(amount, currency),
                Err(MoneyError::AboveMaximum { .. })
            );
            prop_assert!(is_above_maximum);
        }
    }
}
