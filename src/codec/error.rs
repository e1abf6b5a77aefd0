//! What can be wrong with a payload, each case with the position and the offending text, and a
//! short stable reason code for metrics labels and dead letters.

use std::fmt;

use compact_str::CompactString;

/// Where in a payload an item error is: the prefix of its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// The payload itself (a single JSON object, a bare value).
    Payload,
    /// The n-th object of a JSON array, from 0.
    Item(usize),
    /// The n-th record of a SenML pack, from 0.
    Record(usize),
    /// A line of a line-protocol payload, from 1.
    Line(usize),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Payload => Ok(()),
            Loc::Item(i) => write!(f, "item {i}: "),
            Loc::Record(i) => write!(f, "record {i}: "),
            Loc::Line(n) => write!(f, "line {n}: "),
        }
    }
}

/// Why a payload or one of its items could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CodecError {
    #[error("empty payload")]
    EmptyPayload,

    /// `offset` counts bytes from the start of the payload.
    #[error("{at}invalid UTF-8 at byte {offset}")]
    InvalidUtf8 { at: Loc, offset: usize },

    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        line: usize,
        column: usize,
        message: String,
    },

    #[error("more than {limit} readings in one payload")]
    TooManyItems { limit: usize },

    /// Closes the error list of a payload whose item errors were capped.
    #[error("{suppressed} more item errors in this payload were not recorded")]
    TooManyErrors { suppressed: usize },

    /// The payload or an array element is not the JSON value the format needs.
    #[error("{at}expected {expected}, found {found}")]
    NotAnObject {
        at: Loc,
        expected: &'static str,
        found: &'static str,
    },

    #[error("{at}no sensor id: the payload names none and the route gives none")]
    MissingSensor { at: Loc },

    #[error("no metric name: the route gives none for a bare value")]
    MissingMetric,

    /// A JSON key `""` where a metric is expected: a reading needs a metric name.
    #[error("{at}a metric with an empty name")]
    EmptyMetricName { at: Loc },

    /// A metric (or a reserved field such as `sensor`, `ts`, `tags`) holds the wrong JSON type.
    #[error("{at}{field:?}: expected {expected}, found {found}")]
    WrongType {
        at: Loc,
        field: CompactString,
        expected: &'static str,
        found: &'static str,
    },

    #[error("{at}bad timestamp {text}: {why}")]
    BadTimestamp {
        at: Loc,
        /// The timestamp as written in the payload, shortened if long.
        text: String,
        why: &'static str,
    },

    #[error("{at}no metric values")]
    NoValue { at: Loc },

    #[error("a SenML pack is a JSON array of records, found {found}")]
    SenmlNotAPack { found: &'static str },

    #[error("{at}record has no name (neither bn nor n)")]
    SenmlMissingName { at: Loc },

    #[error("{at}invalid SenML name {name:?}: {why}")]
    SenmlBadName {
        at: Loc,
        name: CompactString,
        why: &'static str,
    },

    /// Base fields change the meaning of every record after them, so a malformed one is fatal.
    #[error("{at}bad base time (bt): expected a number of seconds, found {found}")]
    SenmlBadBaseTime { at: Loc, found: String },

    #[error("{at}bad base field {field}: expected {expected}, found {found}")]
    SenmlBadBaseField {
        at: Loc,
        field: &'static str,
        expected: &'static str,
        found: String,
    },

    #[error("{at}unsupported SenML version {version} (citygate reads up to 10)")]
    SenmlVersion { at: Loc, version: f64 },

    #[error("{at}record has {why}")]
    SenmlNoValue { at: Loc, why: &'static str },

    #[error("{at}record has more than one value field (v, vs, vb, vd)")]
    SenmlSeveralValues { at: Loc },

    /// RFC 8428 §4.4: a field whose name ends in `_` must be understood or the record rejected.
    #[error("{at}record has must-understand field {field:?}, which citygate does not know")]
    SenmlMustUnderstand { at: Loc, field: CompactString },

    #[error("line {line}, column {column}: expected {expected}")]
    InvalidLine {
        line: usize,
        column: usize,
        expected: &'static str,
    },

    #[error("not a number: {text}")]
    NotANumber {
        /// The payload text, shortened if long.
        text: String,
    },
}

impl CodecError {
    /// A short stable code for metrics labels and dead letters.
    pub fn reason(&self) -> &'static str {
        use CodecError::*;
        match self {
            EmptyPayload => "empty_payload",
            InvalidUtf8 { .. } => "invalid_utf8",
            InvalidJson { .. } => "invalid_json",
            TooManyItems { .. } => "too_many_items",
            TooManyErrors { .. } => "too_many_errors",
            NotAnObject { .. } => "not_an_object",
            MissingSensor { .. } => "missing_sensor",
            MissingMetric | EmptyMetricName { .. } => "missing_metric",
            WrongType { .. } => "wrong_type",
            BadTimestamp { .. } => "bad_timestamp",
            NoValue { .. } | SenmlNoValue { .. } => "no_value",
            SenmlNotAPack { .. }
            | SenmlMissingName { .. }
            | SenmlBadName { .. }
            | SenmlBadBaseTime { .. }
            | SenmlBadBaseField { .. }
            | SenmlVersion { .. }
            | SenmlSeveralValues { .. }
            | SenmlMustUnderstand { .. } => "invalid_senml",
            InvalidLine { .. } => "invalid_line",
            NotANumber { .. } => "not_a_number",
        }
    }

    /// Every reason code, for pre-registering metrics and for the docs.
    pub const REASONS: [&'static str; 14] = [
        "empty_payload",
        "invalid_utf8",
        "invalid_json",
        "too_many_items",
        "too_many_errors",
        "not_an_object",
        "missing_sensor",
        "missing_metric",
        "wrong_type",
        "bad_timestamp",
        "no_value",
        "invalid_senml",
        "invalid_line",
        "not_a_number",
    ];
}

/// Payload text quoted in an error message, cut short so that a megabyte of garbage does not
/// end up in every log line.
pub(crate) fn snippet(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    match text.char_indices().nth(MAX_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed() {
        let at = Loc::Item(1);
        let all = [
            CodecError::EmptyPayload,
            CodecError::InvalidUtf8 { at, offset: 0 },
            CodecError::InvalidJson {
                line: 1,
                column: 1,
                message: String::new(),
            },
            CodecError::TooManyItems { limit: 1 },
            CodecError::TooManyErrors { suppressed: 1 },
            CodecError::NotAnObject {
                at,
                expected: "",
                found: "",
            },
            CodecError::MissingSensor { at },
            CodecError::MissingMetric,
            CodecError::WrongType {
                at,
                field: "m".into(),
                expected: "",
                found: "",
            },
            CodecError::BadTimestamp {
                at,
                text: String::new(),
                why: "",
            },
            CodecError::NoValue { at },
            CodecError::SenmlMissingName { at },
            CodecError::InvalidLine {
                line: 1,
                column: 1,
                expected: "",
            },
            CodecError::NotANumber {
                text: String::new(),
            },
        ];
        let mut reasons: Vec<_> = all.iter().map(CodecError::reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        let mut listed = CodecError::REASONS.to_vec();
        listed.sort_unstable();
        assert_eq!(reasons, listed);
    }

    #[test]
    fn snippet_cuts_on_a_char_boundary() {
        let long = "清".repeat(100);
        let s = snippet(&long);
        assert!(s.ends_with("\"..."));
        assert_eq!(s.chars().filter(|&c| c == '清').count(), 40);
        assert_eq!(snippet("abc"), "\"abc\"");
    }
}
