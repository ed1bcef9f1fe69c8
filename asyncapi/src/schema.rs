//! JSON Schemas of protobuf messages, for the `components.schemas` of a document.
//!
//! The one decision to know: the payloads on the wire are binary protobuf, and
//! these schemas describe their **proto3 JSON mapping** (what `grpcurl`, `buf curl`
//! and every protobuf library print): lowerCamelCase field names, 64-bit integers
//! as decimal strings, enums as their value names, `bytes` as base64. Every
//! message and enum is its own schema named by its full protobuf name, referenced
//! with `$ref`, so a type shared by several messages is described once.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::Error;

/// Where the schemas live in a document.
pub const SCHEMAS_PATH: &str = "#/components/schemas/";

/// The schemas of `roots` and of every message and enum they reach, by full name.
pub fn schemas(pool: &DescriptorPool, roots: &[&str]) -> Result<BTreeMap<String, Value>, Error> {
    let mut todo: Vec<String> = roots.iter().map(|r| (*r).to_owned()).collect();
    let mut seen = BTreeSet::new();
    let mut out = BTreeMap::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(message) = pool.get_message_by_name(&name) {
            if well_known(&name).is_some() {
                continue;
            }
            out.insert(name, message_schema(&message, &mut todo));
        } else if let Some(enumeration) = pool.get_enum_by_name(&name) {
            out.insert(name, enum_schema(&enumeration));
        } else {
            return Err(Error::UnknownType(name));
        }
    }
    Ok(out)
}

/// The `$ref` to the schema of `full_name`.
pub fn reference(full_name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMAS_PATH}{full_name}") })
}

fn message_schema(message: &MessageDescriptor, todo: &mut Vec<String>) -> Value {
    let mut properties = Map::new();
    for field in message.fields() {
        let mut schema = field_schema(&field, todo);
        let mut notes = Vec::new();
        if let Some(comment) = comments::leading(message.parent_file_descriptor_proto(), field.path()) {
            notes.push(comment);
        }
        if field.json_name() != field.name() {
            notes.push(format!(
                "Proto field `{}` = {} (either name is accepted in JSON).",
                field.name(),
                field.number()
            ));
        } else {
            notes.push(format!("Proto field `{}` = {}.", field.name(), field.number()));
        }
        if let Value::Object(map) = &mut schema {
            map.insert("description".into(), Value::String(notes.join("\n\n")));
        }
        properties.insert(field.json_name().to_owned(), schema);
    }
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("title".into(), json!(message.name()));
    let mut description = comments::leading(message.parent_file_descriptor_proto(), message.path()).unwrap_or_default();
    let mut choices = Vec::new();
    for oneof in message.oneofs().filter(|o| !o.is_synthetic()) {
        let fields: Vec<String> = oneof.fields().map(|f| f.json_name().to_owned()).collect();
        let listed = fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ");
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!("Oneof `{}`: exactly one of {listed} is set.", oneof.name()));
        choices.push(fields);
    }
    if !description.is_empty() {
        schema.insert("description".into(), Value::String(description));
    }
    schema.insert("properties".into(), Value::Object(properties));
    match choices.as_slice() {
        [] => {}
        [fields] => {
            schema.insert("oneOf".into(), one_of(fields));
        }
        several => {
            let all: Vec<Value> = several.iter().map(|fields| json!({ "oneOf": one_of(fields) })).collect();
            schema.insert("allOf".into(), Value::Array(all));
        }
    }
    Value::Object(schema)
}

fn one_of(fields: &[String]) -> Value {
    Value::Array(fields.iter().map(|f| json!({ "required": [f] })).collect())
}

fn enum_schema(enumeration: &EnumDescriptor) -> Value {
    let names: Vec<String> = enumeration.values().map(|v| v.name().to_owned()).collect();
    let mut description = comments::leading(enumeration.parent_file_descriptor_proto(), enumeration.path())
        .map(|c| format!("{c}\n\n"))
        .unwrap_or_default();
    let values: Vec<String> = enumeration
        .values()
        .map(|v| match comments::leading(enumeration.parent_file_descriptor_proto(), v.path()) {
            Some(comment) => format!("- `{}` ({}): {}", v.name(), v.number(), comment.replace('\n', " ")),
            None => format!("- `{}` ({})", v.name(), v.number()),
        })
        .collect();
    description.push_str("Values:\n");
    description.push_str(&values.join("\n"));
    json!({
        "type": "string",
        "title": enumeration.name(),
        "description": description,
        "enum": names,
    })
}

fn field_schema(field: &FieldDescriptor, todo: &mut Vec<String>) -> Value {
    if field.is_map() {
        // A map is a repeated entry message of `key` and `value`; JSON keys are strings.
        let value = match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field(),
            _ => return json!({ "type": "object" }),
        };
        return json!({ "type": "object", "additionalProperties": kind_schema(&value.kind(), todo) });
    }
    let single = kind_schema(&field.kind(), todo);
    if field.cardinality() == Cardinality::Repeated { json!({ "type": "array", "items": single }) } else { single }
}

fn kind_schema(kind: &Kind, todo: &mut Vec<String>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({ "type": "number" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({ "type": "integer", "format": "int32" }),
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "uint32", "minimum": 0, "maximum": u32::MAX })
        }
        // proto3 JSON writes 64-bit integers as strings (JavaScript numbers lose
        // precision above 2^53); parsers accept numbers too.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]+$" })
        }
        Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]+$" }),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        Kind::Enum(enumeration) => {
            todo.push(enumeration.full_name().to_owned());
            reference(enumeration.full_name())
        }
        Kind::Message(message) => match well_known(message.full_name()) {
            Some(schema) => schema,
            None => {
                todo.push(message.full_name().to_owned());
                reference(message.full_name())
            }
        },
    }
}

/// The JSON mapping of the well-known types that have a special one.
fn well_known(full_name: &str) -> Option<Value> {
    Some(match full_name {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$" }),
        "google.protobuf.Empty" => json!({ "type": "object" }),
        _ => return None,
    })
}

/// Comments from the source info of a file (protox keeps it in the descriptor set).
pub mod comments {
    use prost_types::FileDescriptorProto;

    /// The leading comment of the element at `path`, trimmed, with its lines joined
    /// back as written; `None` when there is none.
    pub fn leading(file: &FileDescriptorProto, path: &[i32]) -> Option<String> {
        let info = file.source_code_info.as_ref()?;
        let location = info.location.iter().find(|l| l.path == path)?;
        let text = location.leading_comments.as_deref()?;
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let joined = lines.join("\n").trim().to_owned();
        (!joined.is_empty()).then_some(joined)
    }
}
