//! Identifiers, parsed at the edge: once a value of these types exists it is
//! valid, so nothing inside the service re-checks it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("orderId must be 6-64 characters of [A-Za-z0-9_-], got {0:?}")]
    OrderId(String),
    #[error("userId must be 1-64 printable characters, got {0:?}")]
    UserId(String),
    #[error("paymentKey must be 1-200 printable characters, got {0:?}")]
    PaymentKey(String),
    #[error("not a UUID: {0:?}")]
    Uuid(String),
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (v7) id: index-friendly and sortable by creation.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError::Uuid(s.to_owned()))
            }
        }
    };
}

uuid_id!(
    /// Our id of a payment (UUID v7).
    PaymentId
);
uuid_id!(
    /// Our id of one gateway interaction; the PG idempotency key derives from it.
    TransactionId
);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $error:ident, $valid:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// # Errors
            #[doc = concat!("[`IdError::", stringify!($error), "`] when the value breaks the rule.")]
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let valid: fn(&str) -> bool = $valid;
                if valid(&value) {
                    Ok(Self(value))
                } else {
                    Err(IdError::$error(value))
                }
            }

            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

string_id!(
    /// The shop's order id, in Toss's alphabet: 6-64 of `[A-Za-z0-9_-]`.
    OrderId,
    OrderId,
    |s| (6..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
);
string_id!(
    /// The customer's id as the order service knows it.
    UserId,
    UserId,
    |s| (1..=64).contains(&s.chars().count()) && !s.chars().any(char::is_control)
);
string_id!(
    /// Toss's id of a payment, issued by the widget and fixed at confirm.
    PaymentKey,
    PaymentKey,
    |s| (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn order_id_follows_the_toss_rule() {
        assert!(OrderId::parse("order-1_A").is_ok());
        assert!(OrderId::parse("a".repeat(64)).is_ok());
        assert_eq!(
            OrderId::parse("short"),
            Err(IdError::OrderId("short".into()))
        );
        assert!(OrderId::parse("a".repeat(65)).is_err());
        assert!(OrderId::parse("order 123").is_err());
        assert!(OrderId::parse("주문번호123456").is_err());
    }

    #[test]
    fn order_id_is_validated_when_deserialized() {
        assert!(serde_json::from_str::<OrderId>(r#""ok-order-1""#).is_ok());
        assert!(serde_json::from_str::<OrderId>(r#""bad!""#).is_err());
    }

    #[test]
    fn user_and_payment_keys_refuse_empty_values() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("user\n1").is_err());
        assert!(PaymentKey::parse("").is_err());
        assert!(PaymentKey::parse("tgen_20240101abc").is_ok());
    }

    #[test]
    fn payment_ids_are_v7_and_round_trip_as_text() {
        let id = PaymentId::new();
        assert_eq!(id.as_uuid().get_version_num(), 7);
        assert_eq!(id.to_string().parse::<PaymentId>(), Ok(id));
        assert!("nope".parse::<PaymentId>().is_err());
    }

    proptest! {
        #[test]
        fn every_string_in_the_toss_alphabet_is_an_order_id(s in "[A-Za-z0-9_-]{6,64}") {
            prop_assert!(OrderId::parse(s).is_ok());
        }

        #[test]
        fn anything_outside_the_alphabet_is_refused(
            prefix in "[A-Za-z0-9]{3,10}",
            bad in "[^A-Za-z0-9_-]",
            suffix in "[A-Za-z0-9]{3,10}",
        ) {
            let candidate = format!("{prefix}{bad}{suffix}");
            prop_assert!(OrderId::parse(candidate).is_err());
        }
    }
}
