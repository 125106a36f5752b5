//! Inbound CloudEvents 1.0 (structured mode): the envelope every inbound
//! topic shares, checked once here.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::consumer::Incoming;

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
}

/// Parses `message` as a CloudEvent of `expected_type`; the error names
/// what is wrong (every such error is permanent: the bytes will not change).
pub(crate) fn parse<T: DeserializeOwned>(
    message: &Incoming,
    expected_type: &str,
) -> Result<CloudEvent<T>, String> {
    let payload = message.payload.as_deref().ok_or("empty message")?;
    let event: CloudEvent<T> = serde_json::from_slice(payload)
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
    if event.id.trim().is_empty() || event.id.len() > 255 {
        return Err("id must be 1-255 characters".into());
    }
    Ok(event)
}
