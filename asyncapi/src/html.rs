//! A readable HTML page of an AsyncAPI document, rendered on the server.
//!
//! The one decision to know: the page is plain HTML with inline CSS and no script,
//! rendered from the same `serde_json::Value` that is served as YAML and JSON, so
//! it needs nothing from the internet (the AsyncAPI web components would) and can
//! never disagree with the document. Every text from the document is escaped.

use std::fmt::Write;

use serde_json::{Map, Value};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;\
line-height:1.45;color:#1b1f24}h1{margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.3rem;\
margin-top:2.5rem}section.card{border:1px solid #d0d7de;border-radius:6px;padding:.4rem 1rem;margin:1rem 0}\
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;\
vertical-align:top}th{background:#f6f8fa}code{background:#f6f8fa;padding:0 .2rem;border-radius:3px}\
pre{background:#f6f8fa;padding:.6rem;overflow:auto;border-radius:6px}.tag{display:inline-block;border-radius:1rem;\
padding:0 .5rem;font-size:.8rem;background:#ddf4ff;margin-left:.4rem}.send{background:#fff8c5}\
.receive{background:#dafbe1}.muted{color:#57606a}p.desc{white-space:pre-line}";

/// The HTML page of `document`, linking to `/asyncapi.yaml` and `/asyncapi.json`.
pub fn page(document: &Value) -> String {
    let empty = Map::new();
    let info = object(document, "info").unwrap_or(&empty);
    let title = text(info, "title");
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}: AsyncAPI</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>{t}</h1>\n<p class=\"muted\">AsyncAPI {a} &middot; version {v} &middot; \
         <a href=\"/asyncapi.yaml\">asyncapi.yaml</a> &middot; <a href=\"/asyncapi.json\">asyncapi.json</a></p>\n",
        t = escape(title),
        a = escape(document.get("asyncapi").and_then(Value::as_str).unwrap_or_default()),
        v = escape(text(info, "version")),
    );
    paragraph(&mut out, text(info, "description"));

    out.push_str("<h2 id=\"servers\">Servers</h2>\n<table>\n<tr><th>name</th><th>host</th><th>protocol</th><th>description</th></tr>\n");
    for (name, server) in entries(document, "servers") {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td>{} {}</td><td>{}</td></tr>",
            escape(name),
            escape(str_at(server, "host")),
            escape(str_at(server, "protocol")),
            escape(str_at(server, "protocolVersion")),
            inline_markdown(str_at(server, "description")),
        );
    }
    out.push_str("</table>\n");

    out.push_str("<h2 id=\"channels\">Channels</h2>\n");
    for (id, channel) in entries(document, "channels") {
        let _ = writeln!(
            out,
            "<section class=\"card\" id=\"channel-{}\">\n<h3><code>{}</code></h3>",
            escape(id),
            escape(str_at(channel, "address"))
        );
        paragraph(&mut out, str_at(channel, "description"));
        if let Some(queue) = channel.pointer("/bindings/amqp/queue") {
            let _ = writeln!(out, "<p class=\"muted\">AMQP queue: <code>{}</code></p>", escape(&compact(queue)));
        }
        let messages: Vec<String> = entries(channel, "messages").map(|(_, m)| message_link(m)).collect();
        let _ = writeln!(out, "<p>Messages: {}</p>", messages.join(", "));
        out.push_str("<ul>\n");
        for (op_id, operation) in entries(document, "operations") {
            if operation.pointer("/channel/$ref").and_then(Value::as_str) != Some(&format!("#/channels/{id}")) {
                continue;
            }
            operation_item(&mut out, op_id, operation);
        }
        out.push_str("</ul>\n</section>\n");
    }

    out.push_str("<h2 id=\"messages\">Messages</h2>\n");
    for (name, message) in components(document, "messages") {
        message_section(&mut out, document, name, message);
    }

    out.push_str("<h2 id=\"schemas\">Schemas</h2>\n");
    for (name, schema) in components(document, "schemas") {
        let _ =
            writeln!(out, "<section class=\"card\" id=\"schema-{n}\">\n<h3><code>{n}</code></h3>", n = escape(name));
        paragraph(&mut out, str_at(schema, "description"));
        schema_table(&mut out, schema);
        let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
        let _ = writeln!(
            out,
            "<details><summary>JSON Schema</summary><pre>{}</pre></details>\n</section>",
            escape(&pretty)
        );
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn operation_item(out: &mut String, id: &str, operation: &Value) {
    let action = str_at(operation, "action");
    let _ = write!(
        out,
        "<li><span class=\"tag {a}\">{a}</span> <strong>{t}</strong> <span class=\"muted\">({id})</span>: {s}",
        a = escape(action),
        t = escape(str_at(operation, "title")),
        id = escape(id),
        s = escape(str_at(operation, "summary")),
    );
    for message in operation.get("messages").and_then(Value::as_array).into_iter().flatten() {
        let _ = write!(out, "<br>message: {}", message_link(message));
    }
    if let Some(reply) = operation.get("reply") {
        let _ = write!(out, "<br>reply to <code>{}</code>:", escape(str_at(&reply["address"], "location")));
        for message in reply.get("messages").and_then(Value::as_array).into_iter().flatten() {
            let _ = write!(out, " {}", message_link(message));
        }
    }
    let description = str_at(operation, "description");
    if !description.is_empty() {
        let _ = write!(out, "<br><span class=\"muted\">{}</span>", inline_markdown(description));
    }
    out.push_str("</li>\n");
}

/// A link to the message of a `#/channels/<c>/messages/<m>` reference.
fn message_link(reference: &Value) -> String {
    let target = str_at(reference, "$ref");
    let name = target.rsplit('/').next().unwrap_or_default();
    format!("<a href=\"#message-{n}\"><code>{n}</code></a>", n = escape(name))
}

fn message_section(out: &mut String, document: &Value, name: &str, message: &Value) {
    let tags: Vec<&str> =
        message.get("tags").and_then(Value::as_array).into_iter().flatten().map(|t| str_at(t, "name")).collect();
    let _ = writeln!(
        out,
        "<section class=\"card\" id=\"message-{n}\">\n<h3>{t}{tags}</h3>\n<p><code>{n}</code> &middot; <code>{ct}</code></p>\n<p><em>{s}</em></p>",
        n = escape(name),
        t = escape(str_at(message, "title")),
        tags = tags.iter().map(|t| format!("<span class=\"tag\">{}</span>", escape(t))).collect::<String>(),
        ct = escape(str_at(message, "contentType")),
        s = escape(str_at(message, "summary")),
    );
    paragraph(out, str_at(message, "description"));
    for (label, key) in [("Headers (AMQP properties and headers)", "headers"), ("Payload", "payload")] {
        let reference = message.pointer(&format!("/{key}/$ref")).and_then(Value::as_str).unwrap_or_default();
        let schema_name = reference.rsplit('/').next().unwrap_or_default();
        let _ =
            writeln!(out, "<h4>{label}: <a href=\"#schema-{n}\"><code>{n}</code></a></h4>", n = escape(schema_name));
        if let Some(schema) = resolve(document, reference) {
            schema_table(out, schema);
        }
    }
    out.push_str("</section>\n");
}

/// The fields of an object schema as a table (name, type, required, description).
fn schema_table(out: &mut String, schema: &Value) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            let list: Vec<String> = values.iter().map(|v| format!("<code>{}</code>", escape(&compact(v)))).collect();
            let _ = writeln!(out, "<p>One of: {}</p>", list.join(", "));
        }
        return;
    };
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    out.push_str("<table>\n<tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>\n");
    for (field, property) in properties {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"desc\">{}</td></tr>",
            escape(field),
            type_of(property),
            if required.contains(&field.as_str()) { "yes" } else { "" },
            inline_markdown(str_at(property, "description")),
        );
    }
    out.push_str("</table>\n");
}

/// A short HTML description of a property's type, linking to referenced schemas.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return format!("<a href=\"#schema-{n}\"><code>{n}</code></a>", n = escape(name));
    }
    let kind = str_at(schema, "type");
    if kind == "array" {
        return format!("array of {}", type_of(&schema["items"]));
    }
    let mut out = format!("<code>{}</code>", escape(kind));
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        let _ = write!(out, " ({})", escape(format));
    }
    if let Some(constant) = schema.get("const") {
        let _ = write!(out, " = <code>{}</code>", escape(&compact(constant)));
    }
    out
}

fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    document.pointer(reference.strip_prefix('#')?)
}

fn paragraph(out: &mut String, text: &str) {
    if !text.is_empty() {
        let _ = writeln!(out, "<p class=\"desc\">{}</p>", inline_markdown(text));
    }
}

/// Escapes `text` and renders the two inline marks the descriptions use:
/// `` `code` `` and `**strong**`.
fn inline_markdown(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(text).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            for (j, piece) in part.split("**").enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<strong>{piece}</strong>");
                } else {
                    out.push_str(piece);
                }
            }
        }
    }
    out
}

fn object<'a>(value: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    value.get(key).and_then(Value::as_object)
}

fn entries<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = (&'a str, &'a Value)> {
    object(value, key).into_iter().flatten().map(|(k, v)| (k.as_str(), v))
}

fn components<'a>(document: &'a Value, key: &str) -> impl Iterator<Item = (&'a str, &'a Value)> {
    document
        .get("components")
        .and_then(|c| c.get(key))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v))
}

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    html_escape::encode_safe(text).into_owned()
}
