//! Inbound CloudEvents 1.0 (structured mode): the envelope every inbound
//! topic shares, checked once here — including everything of it the store
//! keeps, so a value a column would refuse is a permanent error of the
//! message (dead-lettered), never a failing insert retried forever:
//! * `id` (the inbox's `message_id`, ASCII `VARCHAR(255)`): 1–255 visible
//!   ASCII characters;
//! * the `traceparent` header (the outbox's `VARCHAR(55)`): kept only in the
//!   W3C version-00 form ([`payment_application::trace`]); anything else is
//!   ignored — the effects are published without a parent, never with it.

use payment_application::trace;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::consumer::Incoming;

/// The longest event id the inbox keeps.
const ID_MAX: usize = 255;

/// An event of type `T` with the envelope fields we use.
#[derive(Debug, Deserialize)]
pub(crate) struct CloudEvent<T> {
    /// The event id: the deduplication key.
    pub id: String,
    specversion: String,
    #[serde(rename = "type")]
    event_type: String,
    pub correlationid: Option<String>,
    pub data: T,
    /// The message's W3C `traceparent` header, if valid.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

/// Parses `message` as a CloudEvent of `expected_type`; the error names
/// what is wrong (every such error is permanent: the bytes will not change).
pub(crate) fn parse<T: DeserializeOwned>(
    message: &Incoming,
    expected_type: &str,
) -> Result<CloudEvent<T>, String> {
    let payload = message.payload.as_deref().ok_or("empty message")?;
    let mut event: CloudEvent<T> = serde_json::from_slice(payload)
        .map_err(|e| format!("not a CloudEvent of type {expected_type}: {e}"))?;
    if event.specversion != "1.0" {
        return Err(format!("unsupported specversion {:?}", event.specversion));
    }
    if event.event_type != expected_type {
        return Err(format!(
            "unexpected type {:?} (expected {expected_type})",
            event.event_type
        ));
    }
    if !(1..=ID_MAX).contains(&event.id.len()) || !event.id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "id must be 1-{ID_MAX} visible ASCII characters (no spaces or control characters)"
        ));
    }
    event.traceparent = trace::traceparent(message.header("traceparent"));
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn message(id: &str, traceparent: Option<&str>) -> Incoming {
        let event = serde_json::json!({
            "id": id, "specversion": "1.0", "type": "T", "data": {},
        });
        Incoming {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(event.to_string().into_bytes()),
            headers: traceparent
                .map(|t| ("traceparent".to_owned(), Some(t.as_bytes().to_vec())))
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn an_id_the_inbox_cannot_hold_is_refused() {
        let long = "a".repeat(256);
        for bad in [
            "",
            " ",
            "évènement-1",
            "id with space",
            "id\u{0}",
            long.as_str(),
        ] {
            let error = parse::<serde_json::Value>(&message(bad, None), "T").unwrap_err();
            assert!(error.starts_with("id must be"), "{bad:?}: {error}");
        }
        let longest = "a".repeat(255);
        for good in [
            "0190f1c2-7c3a-7d4e-8f00-000000000001",
            "evt_1",
            longest.as_str(),
        ] {
            assert_eq!(
                parse::<serde_json::Value>(&message(good, None), "T")
                    .unwrap()
                    .id,
                good
            );
        }
    }

    #[test]
    fn a_malformed_traceparent_is_ignored_and_a_valid_one_kept() {
        let kept = parse::<serde_json::Value>(&message("e-1", Some(GOOD_TRACE)), "T").unwrap();
        assert_eq!(kept.traceparent.as_deref(), Some(GOOD_TRACE));
        let long = format!("00-{}-b7ad6b7169203331-01", "0".repeat(40));
        for bad in ["00-abc-def-01", long.as_str(), ""] {
            let event = parse::<serde_json::Value>(&message("e-1", Some(bad)), "T").unwrap();
            assert_eq!(event.traceparent, None, "{bad:?}");
        }
    }
}
