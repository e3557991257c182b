//! Every string in every gRPC request obeys the rule for string inputs
//! ([`crate::domain::text::check_input`]: no NUL, a maximum length), checked once for all methods
//! in [`super::context`], the first thing each handler calls.
//!
//! prost messages have no reflection, so the check reads the request's own encoding with the
//! schema from the compiled descriptor set: each length-delimited field the schema calls a
//! `string` is checked under its parameter path (`page[starting_after]`, `metadata[key]`,
//! `applicability_config[scope][prices][0][id]`, the shape the domain's errors use), and each
//! nested message is walked the same way.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

use crate::domain::text::{check_input, check_param_name};
use crate::error::{Error, Result};

/// The proto package every request message lives in.
const PACKAGE: &str = "creditd.v1";

enum FieldKind {
    Text,
    Message(String),
    Other,
}

struct Field {
    name: String,
    kind: FieldKind,
    repeated: bool,
}

struct Schema {
    /// Fully qualified message name (`.creditd.v1.X`) -> its fields by number.
    messages: HashMap<String, MessageSchema>,
}

struct MessageSchema {
    fields: HashMap<u32, Field>,
    map_entry: bool,
}

#[allow(
    clippy::expect_used,
    reason = "the descriptor set is compiled into the binary by build.rs and every gRPC test decodes it"
)]
fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let set = FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("the compiled descriptor set decodes");
        let mut messages = HashMap::new();
        for file in &set.file {
            let prefix = format!(".{}", file.package());
            for message in &file.message_type {
                add_message(&mut messages, &prefix, message);
            }
        }
        Schema { messages }
    })
}

fn add_message(
    messages: &mut HashMap<String, MessageSchema>,
    prefix: &str,
    message: &DescriptorProto,
) {
    let full_name = format!("{prefix}.{}", message.name());
    let fields = message
        .field
        .iter()
        .map(|field| {
            let kind = match field.r#type() {
                Type::String => FieldKind::Text,
                Type::Message => FieldKind::Message(field.type_name().to_string()),
                _ => FieldKind::Other,
            };
            let entry = Field {
                name: field.name().to_string(),
                kind,
                repeated: field.label() == Label::Repeated,
            };
            (field.number() as u32, entry)
        })
        .collect();
    let map_entry = message
        .options
        .as_ref()
        .is_some_and(|options| options.map_entry());
    for nested in &message.nested_type {
        add_message(messages, &full_name, nested);
    }
    messages.insert(full_name, MessageSchema { fields, map_entry });
}

/// The descriptor name of a generated message type (`creditd::grpc::proto::X` -> `.creditd.v1.X`).
fn message_name<T>() -> String {
    let rust_name = std::any::type_name::<T>();
    let short = rust_name.rsplit("::").next().unwrap_or(rust_name);
    format!(".{PACKAGE}.{short}")
}

/// Checks every string in `message` (a request of this crate's gRPC API).
pub fn check_message<T: Message>(message: &T) -> Result<()> {
    let name = message_name::<T>();
    if !schema().messages.contains_key(&name) {
        // Not one of ours (a health or reflection request): nothing to check.
        return Ok(());
    }
    check_encoded(&name, &message.encode_to_vec())
}

/// Checks the strings in an encoded message of type `name` (`.creditd.v1.X`).
pub fn check_encoded(name: &str, bytes: &[u8]) -> Result<()> {
    walk(name, bytes, "", 0)
}

/// Nesting deeper than this is refused rather than followed (our messages nest three deep).
const MAX_NESTING: usize = 16;

fn walk(name: &str, mut bytes: &[u8], path: &str, depth: usize) -> Result<()> {
    let Some(message) = schema().messages.get(name) else {
        return Ok(());
    };
    if depth > MAX_NESTING {
        return Err(malformed());
    }
    let mut seen: HashMap<u32, usize> = HashMap::new();
    while !bytes.is_empty() {
        let tag = read_varint(&mut bytes)?;
        let number = (tag >> 3) as u32;
        match tag & 7 {
            0 => {
                read_varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..).ok_or_else(malformed)?,
            5 => bytes = bytes.get(4..).ok_or_else(malformed)?,
            2 => {
                let len = usize::try_from(read_varint(&mut bytes)?).map_err(|_| malformed())?;
                let (value, rest) = bytes.split_at_checked(len).ok_or_else(malformed)?;
                bytes = rest;
                let Some(field) = message.fields.get(&number) else {
                    continue;
                };
                let index = seen.entry(number).or_default();
                let mut field_path = join(path, &field.name);
                if field.repeated && !is_map(&field.kind) {
                    field_path = format!("{field_path}[{index}]");
                }
                *index += 1;
                match &field.kind {
                    FieldKind::Text => {
                        let text = std::str::from_utf8(value).map_err(|_| malformed())?;
                        check_input(&field_path, text)?;
                    }
                    FieldKind::Message(_) if is_map(&field.kind) => {
                        check_map_entry(value, &field_path)?;
                    }
                    FieldKind::Message(type_name) => {
                        walk(type_name, value, &field_path, depth + 1)?
                    }
                    FieldKind::Other => {}
                }
            }
            _ => return Err(malformed()),
        }
    }
    Ok(())
}

fn is_map(kind: &FieldKind) -> bool {
    match kind {
        FieldKind::Message(type_name) => schema()
            .messages
            .get(type_name)
            .is_some_and(|message| message.map_entry),
        _ => false,
    }
}

/// A `map<string, string>` entry: the key is a parameter name (`metadata[key]`), the value is
/// checked under it.
fn check_map_entry(mut bytes: &[u8], path: &str) -> Result<()> {
    let (mut key, mut value) = (String::new(), None::<String>);
    while !bytes.is_empty() {
        let tag = read_varint(&mut bytes)?;
        match tag & 7 {
            0 => {
                read_varint(&mut bytes)?;
                continue;
            }
            1 => {
                bytes = bytes.get(8..).ok_or_else(malformed)?;
                continue;
            }
            5 => {
                bytes = bytes.get(4..).ok_or_else(malformed)?;
                continue;
            }
            2 => {}
            _ => return Err(malformed()),
        }
        let len = usize::try_from(read_varint(&mut bytes)?).map_err(|_| malformed())?;
        let (field, rest) = bytes.split_at_checked(len).ok_or_else(malformed)?;
        bytes = rest;
        // A map with non-string values has no text to check there.
        let Ok(text) = std::str::from_utf8(field).map(str::to_string) else {
            continue;
        };
        match tag >> 3 {
            1 => key = text,
            2 => value = Some(text),
            _ => {}
        }
    }
    let param = format!("{path}[{key}]");
    check_param_name(&param)?;
    check_input(&param, value.as_deref().unwrap_or_default())
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}[{name}]")
    }
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or_else(malformed)?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed())
}

/// Only reachable with bytes prost did not encode itself (tests feed raw bytes).
fn malformed() -> Error {
    Error::new(
        crate::error::ErrorKind::InvalidRequest,
        "The request message could not be read.",
    )
    .with_code("parameter_invalid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::proto;

    #[test]
    fn every_request_type_of_the_api_is_known() {
        let set = FileDescriptorSet::decode(super::super::FILE_DESCRIPTOR_SET).unwrap();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    assert!(
                        schema().messages.contains_key(method.input_type()),
                        "{}",
                        method.input_type()
                    );
                }
            }
        }
        assert_eq!(
            message_name::<proto::CreateCustomerRequest>(),
            ".creditd.v1.CreateCustomerRequest"
        );
    }

    #[test]
    fn nul_anywhere_is_refused_with_its_path() {
        let message = proto::CreateCustomerRequest {
            name: Some("a\0b".into()),
            ..Default::default()
        };
        let error = check_message(&message).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("name"));
        let message = proto::CreateCustomerRequest {
            metadata: [("order".to_string(), "1\0".to_string())].into(),
            ..Default::default()
        };
        let error = check_message(&message).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("metadata[order]"));
        let message = proto::ApplyCreditsRequest {
            invoice: "in_1".into(),
            invoice_line_item: "x".repeat(900_000),
            ..Default::default()
        };
        let error = check_message(&message).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("invoice_line_item"));
        let ok = proto::CreateCustomerRequest {
            name: Some("Ada".into()),
            metadata: [("order".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        assert!(check_message(&ok).is_ok());
    }
}
