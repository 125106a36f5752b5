//! W3C Trace Context: the one check of a `traceparent` a message or request
//! brings, and the start of a new trace. Only the version-00 form is kept —
//! `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, 55 characters,
//! lower-case, ids not all zero — which is also what the outbox column holds.
//! Anything else is ignored and never stored; every event still carries a
//! `traceparent` (DESIGN §3): one that came with its trigger is continued,
//! otherwise the event starts a new trace ([`start`]).

/// `value` if it is a valid version-00 `traceparent`.
#[must_use]
pub fn traceparent(value: Option<&str>) -> Option<String> {
    let value = value?;
    let valid = value.len() == 55 && {
        let fields: Vec<&str> = value.split('-').collect();
        let hex = |field: &str, len: usize| {
            field.len() == len
                && field
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let nonzero = |field: &str| field.bytes().any(|b| b != b'0');
        matches!(
            fields.as_slice(),
            [version, trace_id, parent_id, flags]
                if *version == "00"
                    && hex(trace_id, 32)
                    && nonzero(trace_id)
                    && hex(parent_id, 16)
                    && nonzero(parent_id)
                    && hex(flags, 2)
        )
    };
    if valid {
        Some(value.to_owned())
    } else {
        tracing::debug!(
            length = value.len(),
            "malformed traceparent ignored; a new trace starts here"
        );
        None
    }
}

/// The `traceparent` of a new trace started here: random trace and parent
/// ids, version 00, the sampled flag set (the service records no spans of
/// its own, so it leaves recording to the next hop rather than turning it
/// off for the whole trace).
#[must_use]
pub fn start() -> String {
    let trace_id = rand::random::<u128>().max(1);
    let parent_id = rand::random::<u64>().max(1);
    format!("00-{trace_id:032x}-{parent_id:016x}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_version_00_traceparent_is_kept() {
        assert_eq!(traceparent(Some(GOOD)).as_deref(), Some(GOOD));
        assert_eq!(traceparent(None), None);
    }

    #[test]
    fn a_new_trace_is_a_valid_traceparent_of_its_own() {
        let first = start();
        assert_eq!(traceparent(Some(&first)).as_deref(), Some(first.as_str()));
        assert!(first.ends_with("-01"), "{first}");
        assert_ne!(first[3..35], start()[3..35], "a new trace id each time");
    }

    #[test]
    fn anything_else_is_ignored() {
        for bad in [
            "00-abc-def-01".to_owned(),
            format!("00-{}-b7ad6b7169203331-01", "0".repeat(40)),
            GOOD.to_uppercase(),
            GOOD.replacen("00-", "01-", 1),
            format!("00-{}-b7ad6b7169203331-01", "0".repeat(32)),
            format!("00-0af7651916cd43dd8448eb211c80319c-{}-01", "0".repeat(16)),
            GOOD.replace('-', "_"),
            format!("{GOOD}-extra"),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0\u{e9}".to_owned(),
            String::new(),
        ] {
            assert_eq!(traceparent(Some(&bad)), None, "{bad:?}");
        }
    }
}
