//! The HTTP ingest body: `?format=`, Content-Type and the other query parameters chosen
//! from the input, then the body decoded exactly as `POST /api/v1/ingest` does
//! (`http::ingest::decode_body`). Every bad item and a fatal error each leave one dead letter
//! with a reason, and the payload is always kept.
//!
//! Input: the first byte picks the format source and the parameters; the rest is the body.
#![no_main]

use bytes::Bytes;
use citygate::codec::DecodeContext;
use citygate::http::ingest::{decode_body, request_format, IngestParams};
use citygate_fuzz::{check_reading, RECEIVED_AT};
use libfuzzer_sys::fuzz_target;

const FORMATS: [Option<&str>; 6] = [
    None,
    Some("json"),
    Some("senml"),
    Some("line"),
    Some("value"),
    Some("xml"),
];
const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/senml+json"),
    Some("text/plain; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
];
const PRECISIONS: [Option<&str>; 3] = [None, Some("ms"), Some("minutes")];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let s = usize::from(selector);
    let with_route = s & 0x80 != 0;
    let p = IngestParams {
        format: FORMATS[s % 6].map(String::from),
        sensor: with_route.then(|| "http-sensor".to_string()),
        kind: with_route.then(|| "noise".to_string()),
        metric: with_route.then(|| "laeq".to_string()),
        precision: PRECISIONS[(s / 24) % 3].map(String::from),
    };
    let content_type = CONTENT_TYPES[(s / 6) % 4];
    let Ok(format) = request_format(&p, content_type) else {
        assert_eq!(p.format.as_deref(), Some("xml"));
        return;
    };
    let decoded = match decode_body(format, &p, Bytes::copy_from_slice(body), RECEIVED_AT) {
        Ok(d) => d,
        Err(e) => {
            assert_eq!(e.reason, "bad_query");
            assert_eq!(p.precision.as_deref(), Some("minutes"));
            return;
        }
    };
    let batch = &decoded.batch;
    assert_eq!(batch.payloads.len(), 1, "the payload is always kept");
    assert_eq!(&batch.payloads[0][..], body);
    assert_eq!(batch.source, "http");
    let ctx = DecodeContext {
        received_at: RECEIVED_AT,
        ..DecodeContext::default()
    };
    if let Some(fatal) = &decoded.fatal {
        assert!(
            batch.readings.is_empty(),
            "readings from an unreadable payload"
        );
        assert_eq!(batch.dead_letters.len(), 1);
        assert_eq!(batch.dead_letters[0].reason, fatal.reason());
    }
    for r in &batch.readings {
        check_reading(r, &ctx);
    }
    for d in &batch.dead_letters {
        assert!(!d.reason.is_empty(), "a dead letter with no reason: {d:?}");
    }
});
