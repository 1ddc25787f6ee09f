//! `tracing` fields recorded once as JSON text, for the ECS lines.
//!
//! A span's fields are needed by every line written inside it, but most spans see no line at
//! all. So they are not kept as a map of owned keys and values (some thirty allocations for a
//! query span, and as many clones for each line): each value is written as JSON once, when it
//! is recorded, into one buffer per span, and a line copies those bytes.

use std::error::Error;
use std::fmt;
use std::io::Write as _;
use std::ops::Range;

use tracing::field::{Field, Visit};

/// Fields as JSON: each field's name and where its value's JSON sits in one buffer.
#[derive(Debug, Default)]
pub(super) struct JsonFields {
    json: Vec<u8>,
    fields: Vec<(&'static str, Range<usize>)>,
}

impl JsonFields {
    /// Room for `fields` fields of a typical size.
    pub(super) fn with_capacity(fields: usize) -> Self {
        Self {
            json: Vec::with_capacity(fields * 24),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Forgets every field, keeping the memory.
    pub(super) fn clear(&mut self) {
        self.json.clear();
        self.fields.clear();
    }

    /// Each field's name and value as JSON, in the order first recorded.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.fields
            .iter()
            .map(|(name, range)| (*name, &self.json[range.clone()]))
    }

    /// Records `name` with the JSON that `write` appends. A name recorded again takes its new
    /// value (the old bytes stay unused in the buffer: fields are rarely recorded twice).
    fn put(&mut self, name: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.json.len();
        write(&mut self.json);
        let range = start..self.json.len();
        match self.fields.iter_mut().find(|(known, _)| *known == name) {
            Some((_, known)) => *known = range,
            None => self.fields.push((name, range)),
        }
    }

    /// Records a field under its own (ECS) name. Fields that only steer the OpenTelemetry
    /// layer (`otel.*`) are left out.
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut Vec<u8>)) {
        if !field.name().starts_with("otel.") {
            self.put(field.name(), write);
        }
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |json| write_str(json, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |json| {
            let _ = write!(json, "{value}");
        });
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |json| {
            let _ = write!(json, "{value}");
        });
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |json| {
            json.extend_from_slice(if value { b"true" } else { b"false" });
        });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json writes what JSON can hold: `null` for NaN and the infinities.
        self.field(field, |json| {
            let _ = serde_json::to_writer(json, &value);
        });
    }
    /// `error = &err as &dyn Error` becomes ECS `error.message`, with its cause chain.
    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        let name = match field.name() {
            "error" => "error.message",
            name => name,
        };
        let message = super::error_chain(value);
        self.put(name, |json| write_str(json, &message));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |json| {
            json.push(b'"');
            let _ = fmt::write(&mut Escaping(json), format_args!("{value:?}"));
            json.push(b'"');
        });
    }
}

/// Appends `value` as a JSON string.
pub(super) fn write_str(json: &mut Vec<u8>, value: &str) {
    json.push(b'"');
    escape(json, value);
    json.push(b'"');
}

/// Appends `text` escaped for the inside of a JSON string: quotes, backslashes and control
/// characters; everything else, UTF-8 included, as it is.
fn escape(json: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let needs_escape = |byte: u8| byte < 0x20 || byte == b'"' || byte == b'\\';
    // Most values need no escape at all. Without an early exit this scan compiles to vector
    // instructions, several times faster than looking at one byte at a time below.
    if !bytes
        .iter()
        .fold(false, |found, &byte| found | needs_escape(byte))
    {
        json.extend_from_slice(bytes);
        return;
    }
    let mut plain = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        json.extend_from_slice(&bytes[plain..i]);
        if escaped.is_empty() {
            let _ = write!(json, "\\u{byte:04x}");
        } else {
            json.extend_from_slice(escaped);
        }
        plain = i + 1;
    }
    json.extend_from_slice(&bytes[plain..]);
}

/// A `fmt::Write` that escapes what it is given into a JSON string's inside.
pub(super) struct Escaping<'a>(pub(super) &'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape(self.0, text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json_would_have_them() {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
        let mut json = Vec::new();
        write_str(&mut json, text);
        let parsed: String = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed, text);
    }
}
