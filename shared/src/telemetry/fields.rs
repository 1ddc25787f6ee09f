//! `tracing` fields recorded once as text, for the ECS lines.
//!
//! A span's fields are needed by every line written inside it, but most spans see no line at
//! all. So they are not kept as a map of owned keys and values (some thirty allocations for a
//! query span, and as many clones for each line): each value is copied once, when it is
//! recorded, into one buffer per span, as JSON for numbers and booleans and as plain text for
//! strings, which are escaped only if a line takes them. A line copies those bytes.

use std::error::Error;
use std::fmt;
use std::io::Write as _;
use std::ops::Range;

use tracing::field::{Field, Visit};

/// A recorded value.
#[derive(Debug, Clone, Copy)]
pub(super) enum FieldValue<'a> {
    /// JSON, ready to copy.
    Json(&'a [u8]),
    /// A string still to quote and escape.
    Str(&'a str),
}

/// Fields as text: each field's name, whether it is a string, and where its value sits in one
/// buffer.
#[derive(Debug, Default)]
pub(super) struct JsonFields {
    text: String,
    fields: Vec<(&'static str, Range<usize>, bool)>,
}

impl JsonFields {
    /// Room for `fields` fields of a typical size.
    pub(super) fn with_capacity(fields: usize) -> Self {
        Self {
            text: String::with_capacity(fields * 32),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Forgets every field, keeping the memory.
    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.fields.clear();
    }

    /// Each field's name and value, in the order first recorded.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&'static str, FieldValue<'_>)> {
        self.fields.iter().map(|(name, range, is_str)| {
            let text = &self.text[range.clone()];
            let value = if *is_str {
                FieldValue::Str(text)
            } else {
                FieldValue::Json(text.as_bytes())
            };
            (*name, value)
        })
    }

    /// Records `name` with the text `write` appends. A name recorded again takes its new value
    /// (the old text stays unused in the buffer: fields are rarely recorded twice).
    fn put(&mut self, name: &'static str, is_str: bool, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        let range = start..self.text.len();
        match self.fields.iter_mut().find(|(known, ..)| *known == name) {
            Some(known) => *known = (name, range, is_str),
            None => self.fields.push((name, range, is_str)),
        }
    }

    /// Records a field under its own (ECS) name. Fields that only steer the OpenTelemetry
    /// layer (`otel.*`) are left out.
    fn field(&mut self, field: &Field, is_str: bool, write: impl FnOnce(&mut String)) {
        if !field.name().starts_with("otel.") {
            self.put(field.name(), is_str, write);
        }
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, true, |text| text.push_str(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, false, |text| {
            let _ = fmt::Write::write_fmt(text, format_args!("{value}"));
        });
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, false, |text| {
            let _ = fmt::Write::write_fmt(text, format_args!("{value}"));
        });
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, false, |text| {
            text.push_str(if value { "true" } else { "false" });
        });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json writes what JSON can hold: `null` for NaN and the infinities.
        self.field(field, false, |text| {
            text.push_str(&serde_json::to_string(&value).unwrap_or_default());
        });
    }
    /// `error = &err as &dyn Error` becomes ECS `error.message`, with its cause chain.
    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        let name = match field.name() {
            "error" => "error.message",
            name => name,
        };
        let message = super::error_chain(value);
        self.put(name, true, |text| text.push_str(&message));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, true, |text| {
            let _ = fmt::Write::write_fmt(text, format_args!("{value:?}"));
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
