//! InfluxDB line protocol: `measurement,tag=v,... field=v,... [timestamp]`.
//!
//! The measurement is the sensor kind, the `sensor` tag the sensor id, other tags are tags and
//! each numeric or boolean field a reading. Lines are independent: a bad one is an item error
//! and the others still decode.

use std::borrow::Cow;

use compact_str::CompactString;

use super::emit::{Emitter, ItemMeta};
use super::error::{snippet, CodecError, Loc};
use super::time;
use super::{is_blank, strip_bom};

/// Characters a backslash escapes in a measurement name.
const MEASUREMENT_SPECIALS: &[u8] = b", ";
/// Characters a backslash escapes in tag keys, tag values and field keys.
const KEY_SPECIALS: &[u8] = b",= ";

pub(crate) fn decode(payload: &[u8], em: &mut Emitter) -> Result<(), CodecError> {
    let payload = strip_bom(payload);
    if is_blank(payload) {
        return Err(CodecError::EmptyPayload);
    }
    let mut parsed = ParsedLine::default();
    let mut line_start = 0;
    for (index, raw) in payload.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let offset = line_start;
        line_start += raw.len() + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // UTF-8 is checked per line so that one corrupted line costs only itself.
        let line = match std::str::from_utf8(raw) {
            Ok(line) => line,
            Err(e) => {
                em.item_error(CodecError::InvalidUtf8 {
                    at: Loc::Line(line_no),
                    offset: offset + e.valid_up_to(),
                });
                continue;
            }
        };
        let body = line.trim_start_matches([' ', '\t']);
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        match parsed.parse(body) {
            Ok(()) => emit_line(em, &parsed, line_no)?,
            Err(syntax) => em.item_error(CodecError::InvalidLine {
                line: line_no,
                column: line[..indent + syntax.pos].chars().count() + 1,
                expected: syntax.expected,
            }),
        }
    }
    Ok(())
}

fn emit_line(em: &mut Emitter, line: &ParsedLine, line_no: usize) -> Result<(), CodecError> {
    let at = Loc::Line(line_no);
    let mut sensor = None;
    let mut tags = Vec::with_capacity(line.tags.len());
    for (k, v) in &line.tags {
        if k == "sensor" {
            sensor = Some(CompactString::from(v.as_ref()));
        } else {
            tags.push((
                CompactString::from(k.as_ref()),
                CompactString::from(v.as_ref()),
            ));
        }
    }
    let Some(sensor) = sensor.or_else(|| em.ctx.sensor.map(CompactString::from)) else {
        em.item_error(CodecError::MissingSensor { at });
        return Ok(());
    };
    let ts = match line.timestamp {
        None => None,
        Some(text) => match timestamp(text, em.ctx.precision) {
            Ok(ts) => Some(ts),
            Err(why) => {
                em.item_error(CodecError::BadTimestamp {
                    at,
                    text: snippet(text),
                    why,
                });
                return Ok(());
            }
        },
    };

    let start = em.len();
    for (key, value) in &line.fields {
        match value {
            Field::Number(v) => em.push(key, *v)?,
            Field::String => em.item_error(CodecError::WrongType {
                at,
                field: key.as_ref().into(),
                expected: "a number or boolean",
                found: "a string",
            }),
        }
    }
    let meta = ItemMeta {
        sensor,
        kind: Some(CompactString::from(line.measurement.as_ref())),
        ts,
        tags: em.merge_tags(tags),
    };
    em.complete_since(start, &meta);
    Ok(())
}

fn timestamp(text: &str, precision: super::Precision) -> Result<i64, &'static str> {
    let value = text
        .parse::<i64>()
        .map_err(|_| "expected an integer count of the payload's precision")?;
    time::from_precision(value, precision).ok_or(time::OUT_OF_RANGE)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Number(f64),
    /// String fields are not readings; their content is not kept.
    String,
}

/// One line, borrowing from the payload. Reused from line to line to keep its buffers.
#[derive(Default)]
struct ParsedLine<'p> {
    measurement: Cow<'p, str>,
    tags: Vec<(Cow<'p, str>, Cow<'p, str>)>,
    fields: Vec<(Cow<'p, str>, Field)>,
    timestamp: Option<&'p str>,
}

#[derive(Debug, PartialEq)]
struct SyntaxError {
    /// Byte position in the line (after leading whitespace).
    pos: usize,
    expected: &'static str,
}

impl<'p> ParsedLine<'p> {
    fn parse(&mut self, line: &'p str) -> Result<(), SyntaxError> {
        self.tags.clear();
        self.fields.clear();
        self.timestamp = None;
        let mut c = Cursor { line, pos: 0 };

        self.measurement = c.escaped_token(MEASUREMENT_SPECIALS, b", ");
        if self.measurement.is_empty() {
            return Err(c.expected("a measurement name"));
        }
        while c.eat(b',') {
            let key = c.escaped_token(KEY_SPECIALS, b",= ");
            if key.is_empty() {
                return Err(c.expected("a tag key"));
            }
            if !c.eat(b'=') {
                return Err(c.expected("'=' after the tag key"));
            }
            let value = c.escaped_token(KEY_SPECIALS, b", ");
            if value.is_empty() {
                return Err(c.expected("a tag value"));
            }
            self.tags.push((key, value));
        }
        if !c.skip_spaces() {
            return Err(c.expected("a space, then the fields"));
        }
        if c.at_end() {
            return Err(c.expected("at least one field"));
        }
        loop {
            let key = c.escaped_token(KEY_SPECIALS, b",= ");
            if key.is_empty() {
                return Err(c.expected("a field key"));
            }
            if !c.eat(b'=') {
                return Err(c.expected("'=' after the field key"));
            }
            let value = c.field_value()?;
            self.fields.push((key, value));
            if !c.eat(b',') {
                break;
            }
        }
        if c.at_end() {
            return Ok(());
        }
        if !c.skip_spaces() {
            return Err(c.expected("',' or a space after the field value"));
        }
        if c.at_end() {
            return Ok(());
        }
        let ts = c.raw_token(b" ");
        self.timestamp = Some(ts);
        c.skip_spaces();
        if !c.at_end() {
            return Err(c.expected("the end of the line after the timestamp"));
        }
        Ok(())
    }
}

struct Cursor<'p> {
    line: &'p str,
    pos: usize,
}

impl<'p> Cursor<'p> {
    fn bytes(&self) -> &'p [u8] {
        self.line.as_bytes()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.line.len()
    }

    fn expected(&self, expected: &'static str) -> SyntaxError {
        SyntaxError {
            pos: self.pos.min(self.line.len()),
            expected,
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.bytes().get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips spaces and tabs; true if there was at least one.
    fn skip_spaces(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.bytes().get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Up to the first unescaped byte of `stops`. A backslash escapes the next character
    /// whatever it is while scanning (as InfluxDB does), but only `specials` lose their
    /// backslash in the result; `\n` stays a backslash and an `n`.
    fn escaped_token(&mut self, specials: &[u8], stops: &[u8]) -> Cow<'p, str> {
        let bytes = self.bytes();
        let start = self.pos;
        let mut escaped = false;
        while let Some(&b) = bytes.get(self.pos) {
            if b == b'\\' && self.pos + 1 < bytes.len() {
                escaped = true;
                // Stops and specials are ASCII, so landing inside a multi-byte character here
                // cannot split it: continuation bytes never match them.
                self.pos += 2;
                continue;
            }
            if stops.contains(&b) {
                break;
            }
            self.pos += 1;
        }
        let raw = &self.line[start..self.pos];
        if escaped {
            Cow::Owned(unescape(raw, specials))
        } else {
            Cow::Borrowed(raw)
        }
    }

    fn raw_token(&mut self, stops: &[u8]) -> &'p str {
        let start = self.pos;
        while let Some(b) = self.bytes().get(self.pos) {
            if stops.contains(b) {
                break;
            }
            self.pos += 1;
        }
        &self.line[start..self.pos]
    }

    fn field_value(&mut self) -> Result<Field, SyntaxError> {
        if self.eat(b'"') {
            let bytes = self.bytes();
            while let Some(&b) = bytes.get(self.pos) {
                match b {
                    b'\\' => self.pos += 2,
                    b'"' => {
                        self.pos += 1;
                        return Ok(Field::String);
                    }
                    _ => self.pos += 1,
                }
            }
            self.pos = bytes.len();
            return Err(self.expected("a closing '\"' for the string field"));
        }
        let start = self.pos;
        let token = self.raw_token(b", \t");
        if token.is_empty() {
            return Err(self.expected("a field value"));
        }
        parse_field_value(token).map(Field::Number).ok_or(SyntaxError {
            pos: start,
            expected: "a field value: a float, an integer like 12i, an unsigned like 12u, a boolean or a quoted string",
        })
    }
}

/// Resolves a token with escapes; `raw` contains at least one backslash.
fn unescape(raw: &str, specials: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next) = chars.peek() {
                if next.is_ascii() && specials.contains(&(next as u8)) {
                    out.push(next);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// Numbers and booleans as line protocol writes them. Unsuffixed numbers are floats;
/// `nan` and `inf` are not line protocol.
fn parse_field_value(token: &str) -> Option<f64> {
    match token {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(0.0),
        _ => {}
    }
    if let Some(int) = token.strip_suffix('i') {
        return plain_integer(int, true)?
            .parse::<i64>()
            .ok()
            .map(|v| v as f64);
    }
    if let Some(uint) = token.strip_suffix('u') {
        return plain_integer(uint, false)?
            .parse::<u64>()
            .ok()
            .map(|v| v as f64);
    }
    let is_float_syntax = token.bytes().any(|b| b.is_ascii_digit())
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if is_float_syntax {
        token.parse::<f64>().ok()
    } else {
        None
    }
}

/// `text` if it is digits with an optional leading minus (Rust's parsers also take `+`).
fn plain_integer(text: &str, signed: bool) -> Option<&str> {
    let digits = if signed {
        text.strip_prefix('-').unwrap_or(text)
    } else {
        text
    };
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<ParsedLine<'_>, SyntaxError> {
        let mut p = ParsedLine::default();
        p.parse(line).map(|()| p)
    }

    #[test]
    fn escapes_in_every_position() {
        let p =
            parse(r#"water\ quality,sensor=wq\,1,site\=x=a\ b\\c ph\ v=7.1,note="a \"q\" b, c" 1"#)
                .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.measurement, "water quality");
        assert_eq!(
            p.tags,
            vec![
                ("sensor".into(), "wq,1".into()),
                ("site=x".into(), r"a b\\c".into())
            ]
        );
        assert_eq!(
            p.fields,
            vec![
                ("ph v".into(), Field::Number(7.1)),
                ("note".into(), Field::String)
            ]
        );
        assert_eq!(p.timestamp, Some("1"));
    }

    #[test]
    fn field_value_kinds() {
        assert_eq!(parse_field_value("12i"), Some(12.0));
        assert_eq!(parse_field_value("-12i"), Some(-12.0));
        assert_eq!(parse_field_value("12u"), Some(12.0));
        assert_eq!(parse_field_value("-12u"), None);
        assert_eq!(parse_field_value("+12i"), None);
        assert_eq!(parse_field_value("1.5e3"), Some(1500.0));
        assert_eq!(parse_field_value("TRUE"), Some(1.0));
        assert_eq!(parse_field_value("False"), Some(0.0));
        assert_eq!(parse_field_value("tRUE"), None);
        assert_eq!(parse_field_value("inf"), None);
        assert_eq!(parse_field_value("nan"), None);
        assert_eq!(parse_field_value("1.2.3"), None);
        assert_eq!(parse_field_value("i"), None);
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        let err = |line| parse(line).err().map(|e| (e.pos, e.expected));
        assert_eq!(err("m,t=1"), Some((5, "a space, then the fields")));
        assert_eq!(err("m,t f=1"), Some((3, "'=' after the tag key")));
        assert_eq!(err("m f"), Some((3, "'=' after the field key")));
        assert_eq!(err("m f="), Some((4, "a field value")));
        assert_eq!(
            err(r#"m f="open"#),
            Some((9, "a closing '\"' for the string field"))
        );
        assert_eq!(
            err("m f=1 2 3"),
            Some((8, "the end of the line after the timestamp"))
        );
        assert_eq!(err(",t=1 f=1"), Some((0, "a measurement name")));
    }

    #[test]
    fn backslash_before_an_ordinary_character_is_kept() {
        let p = parse(r"m,k=a\\ f=1,g\n=2").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.tags, vec![("k".into(), r"a\\".into())]);
        assert_eq!(p.fields[1].0, r"g\n");
        assert_eq!(
            parse(r"m,k=v\").err(),
            Some(SyntaxError {
                pos: 6,
                expected: "a space, then the fields"
            })
        );
    }
}
