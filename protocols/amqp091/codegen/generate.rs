//! The AMQP 0-9-1 code generator (STYLE §10): reads rabbitmq-codegen's spec JSON
//! (`codegen/amqp-rabbitmq-0.9.1.json`, a copy of `shared/specs/`) and returns the text of `src/generated.rs`:
//! constants, one struct per method, the `Method` enum with decode/encode, and the content
//! properties structs. Build-time only: run by `tests/generated.rs` (which compares the text to
//! the committed file, or rewrites it with `AMQP091_REGENERATE=1`) and by `codegen/main.rs`.
//! Deterministic: the same JSON always gives the same bytes.

use std::fmt::Write;

use crate::json::Json;

/// One field (method argument or content property), with its domain resolved to a type.
struct Field {
    spec_name: String,
    rust_name: String,
    kind: Kind,
    default: Option<Json>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Octet,
    Short,
    Long,
    LongLong,
    Timestamp,
    Bit,
    ShortStr,
    LongStr,
    Table,
}

struct MethodDef {
    class_name: String,
    class_id: u64,
    name: String,
    id: u64,
    synchronous: bool,
    content: bool,
    fields: Vec<Field>,
}

impl MethodDef {
    fn type_name(&self) -> String {
        format!("{}{}", pascal(&self.class_name), pascal(&self.name))
    }

    fn spec_name(&self) -> String {
        format!("{}.{}", self.class_name, self.name)
    }
}

struct ClassDef {
    name: String,
    id: u64,
    properties: Vec<Field>,
}

/// The generated Rust source for `spec_json`.
pub fn generate(spec_json: &str) -> Result<String, String> {
    let spec = Json::parse(spec_json)?;
    let domains = domains(&spec)?;
    let mut classes = Vec::new();
    let mut methods = Vec::new();
    for class in spec.get("classes").and_then(Json::as_array).ok_or("no classes")? {
        let class_name = string(class, "name")?;
        let class_id = number(class, "id")?;
        let properties = match class.get("properties").and_then(Json::as_array) {
            Some(props) => props.iter().map(|p| field(p, &domains)).collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        for method in class.get("methods").and_then(Json::as_array).ok_or("no methods")? {
            let arguments = method.get("arguments").and_then(Json::as_array).ok_or("no arguments")?;
            methods.push(MethodDef {
                class_name: class_name.clone(),
                class_id,
                name: string(method, "name")?,
                id: number(method, "id")?,
                synchronous: method.get("synchronous") == Some(&Json::Bool(true)),
                content: method.get("content") == Some(&Json::Bool(true)),
                fields: arguments.iter().map(|a| field(a, &domains)).collect::<Result<Vec<_>, _>>()?,
            });
        }
        classes.push(ClassDef { name: class_name, id: class_id, properties });
    }

    let mut out = String::new();
    header(&mut out, &spec)?;
    constants(&mut out, &spec)?;
    class_ids(&mut out, &classes);
    for method in &methods {
        method_struct(&mut out, method);
    }
    method_enum(&mut out, &methods);
    for class in classes.iter().filter(|c| !c.properties.is_empty()) {
        properties_struct(&mut out, class);
    }
    Ok(out)
}

fn domains(spec: &Json) -> Result<Vec<(String, String)>, String> {
    let mut domains = Vec::new();
    for domain in spec.get("domains").and_then(Json::as_array).ok_or("no domains")? {
        match domain.as_array() {
            Some([Json::String(name), Json::String(kind)]) => domains.push((name.clone(), kind.clone())),
            _ => return Err("malformed domain".to_owned()),
        }
    }
    Ok(domains)
}

fn field(def: &Json, domains: &[(String, String)]) -> Result<Field, String> {
    let spec_name = string(def, "name")?;
    let declared = def.get("type").or_else(|| def.get("domain")).and_then(Json::as_str).ok_or("field type")?;
    let resolved = domains.iter().find(|(name, _)| name == declared).map_or(declared, |(_, kind)| kind.as_str());
    let kind = match resolved {
        "octet" => Kind::Octet,
        "short" => Kind::Short,
        "long" => Kind::Long,
        "longlong" => Kind::LongLong,
        "timestamp" => Kind::Timestamp,
        "bit" => Kind::Bit,
        "shortstr" => Kind::ShortStr,
        "longstr" => Kind::LongStr,
        "table" => Kind::Table,
        other => return Err(format!("unknown type {other} of {spec_name}")),
    };
    let rust_name = match spec_name.as_str() {
        "type" => "kind".to_owned(),
        name => name.replace('-', "_"),
    };
    Ok(Field { spec_name, rust_name, kind, default: def.get("default-value").cloned() })
}

fn string(def: &Json, key: &str) -> Result<String, String> {
    def.get(key).and_then(Json::as_str).map(str::to_owned).ok_or_else(|| format!("missing {key}"))
}

fn number(def: &Json, key: &str) -> Result<u64, String> {
    def.get(key).and_then(Json::as_u64).ok_or_else(|| format!("missing {key}"))
}

fn pascal(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

fn upper(name: &str) -> String {
    name.replace('-', "_").to_ascii_uppercase()
}

impl Kind {
    fn rust_type(self) -> &'static str {
        match self {
            Kind::Octet => "u8",
            Kind::Short => "u16",
            Kind::Long => "u32",
            Kind::LongLong | Kind::Timestamp => "u64",
            Kind::Bit => "bool",
            Kind::ShortStr => "String",
            Kind::LongStr => "Bytes",
            Kind::Table => "FieldTable",
        }
    }

    fn spec_type(self) -> &'static str {
        match self {
            Kind::Octet => "octet",
            Kind::Short => "short",
            Kind::Long => "long",
            Kind::LongLong => "longlong",
            Kind::Timestamp => "timestamp",
            Kind::Bit => "bit",
            Kind::ShortStr => "shortstr",
            Kind::LongStr => "longstr",
            Kind::Table => "table",
        }
    }

    fn reader(self) -> &'static str {
        match self {
            Kind::Octet => "octet",
            Kind::Short => "short",
            Kind::Long => "long",
            Kind::LongLong | Kind::Timestamp => "longlong",
            Kind::Bit => "octet",
            Kind::ShortStr => "shortstr",
            Kind::LongStr => "longstr",
            Kind::Table => "table",
        }
    }

    /// The writer call for `value` (an expression of the field's type, by reference for
    /// strings and tables).
    fn writer(self, value: &str) -> String {
        match self {
            Kind::Octet => format!("put_octet(out, {value})"),
            Kind::Short => format!("put_short(out, {value})"),
            Kind::Long => format!("put_long(out, {value})"),
            Kind::LongLong | Kind::Timestamp => format!("put_longlong(out, {value})"),
            Kind::Bit => format!("put_octet(out, u8::from({value}))"),
            Kind::ShortStr => format!("put_shortstr(out, {value})"),
            Kind::LongStr => format!("put_longstr(out, {value})"),
            Kind::Table => format!("put_table(out, {value})"),
        }
    }

    fn by_ref(self) -> bool {
        matches!(self, Kind::ShortStr | Kind::LongStr | Kind::Table)
    }
}

impl Field {
    /// The default value expression, or `None` when it is the type's zero value.
    fn default_expr(&self) -> Option<String> {
        match (&self.default, self.kind) {
            (Some(Json::Number(n)), _) if *n != 0.0 => Some(format!("{}", *n as u64)),
            (Some(Json::Bool(true)), Kind::Bit) => Some("true".to_owned()),
            (Some(Json::String(s)), Kind::ShortStr) if !s.is_empty() => Some(format!("{s:?}.to_owned()")),
            (Some(Json::String(s)), Kind::LongStr) if !s.is_empty() => Some(format!("Bytes::from_static(b{s:?})")),
            _ => None,
        }
    }

    fn zero_expr(&self) -> &'static str {
        match self.kind {
            Kind::Bit => "false",
            Kind::ShortStr => "String::new()",
            Kind::LongStr => "Bytes::new()",
            Kind::Table => "FieldTable::new()",
            _ => "0",
        }
    }
}

fn header(out: &mut String, spec: &Json) -> Result<(), String> {
    let major = number(spec, "major-version")?;
    let minor = number(spec, "minor-version")?;
    let revision = number(spec, "revision")?;
    writeln!(out, "//! GENERATED by `protocols/amqp091/codegen` from `codegen/amqp-rabbitmq-0.9.1.json`").ok();
    writeln!(out, "//! (AMQP {major}-{minor}-{revision} with RabbitMQ's extensions; the spec data is").ok();
    writeln!(out, "//! Copyright (C) 2008-2020 VMware, Inc. or its affiliates, MIT licensed). Do not edit:").ok();
    writeln!(
        out,
        "//! change the generator and run `AMQP091_REGENERATE=1 cargo test -p ferry-amqp091 --test generated`."
    )
    .ok();
    writeln!(out, "//!").ok();
    writeln!(out, "//! Owns the protocol constants, one struct per method with typed fields, the [`Method`] enum").ok();
    writeln!(out, "//! (decode from a method frame payload, encode into the caller's buffer) and the content").ok();
    writeln!(out, "//! properties. Pure data; every read is bounds-checked against the frame payload, so nothing").ok();
    writeln!(out, "//! is allocated beyond the frame and peer bytes never panic.").ok();
    writeln!(out).ok();
    writeln!(out, "use bytes::Bytes;").ok();
    writeln!(out).ok();
    writeln!(out, "use crate::error::DecodeError;").ok();
    writeln!(out, "use crate::table::FieldTable;").ok();
    writeln!(out, "use crate::wire::{{Reader, put_long, put_longlong, put_longstr, put_octet, put_short, put_shortstr, put_table}};").ok();
    writeln!(out).ok();
    writeln!(out, "/// The protocol header a 0-9-1 client sends first.").ok();
    writeln!(out, "pub const PROTOCOL_HEADER: &[u8; 8] = b\"AMQP\\x00\\x{major:02x}\\x{minor:02x}\\x{revision:02x}\";")
        .ok();
    writeln!(out, "/// `connection.start` version-major / version-minor.").ok();
    writeln!(out, "pub const VERSION_MAJOR: u8 = {major};").ok();
    writeln!(out, "pub const VERSION_MINOR: u8 = {minor};").ok();
    writeln!(out, "/// The IANA port.").ok();
    writeln!(out, "pub const PORT: u16 = {};", number(spec, "port")?).ok();
    writeln!(out).ok();
    Ok(())
}

fn constants(out: &mut String, spec: &Json) -> Result<(), String> {
    let mut errors = Vec::new();
    for constant in spec.get("constants").and_then(Json::as_array).ok_or("no constants")? {
        let name = string(constant, "name")?;
        let value = number(constant, "value")?;
        let class = constant.get("class").and_then(Json::as_str);
        let ty = match (name.as_str(), class) {
            (_, Some(_)) => "u16",
            ("FRAME-MIN-SIZE", _) => "u32",
            (n, _) if n.starts_with("FRAME-") => "u8",
            _ => "u16",
        };
        match class {
            Some(class) => {
                writeln!(out, "/// Reply code `{name}` ({class}).").ok();
                errors.push((name.clone(), class == "hard-error"));
            }
            None => {
                writeln!(out, "/// `{name}`.").ok();
            }
        }
        writeln!(out, "pub const {}: {ty} = {value};", upper(&name)).ok();
    }
    writeln!(out).ok();
    writeln!(out, "/// The spec name of a reply code (`NOT_ALLOWED`), as RabbitMQ prefixes reply texts.").ok();
    writeln!(out, "pub fn reply_code_name(code: u16) -> Option<&'static str> {{").ok();
    writeln!(out, "    match code {{").ok();
    writeln!(out, "        REPLY_SUCCESS => Some(\"REPLY_SUCCESS\"),").ok();
    for (name, _) in &errors {
        writeln!(out, "        {} => Some(\"{}\"),", upper(name), upper(name)).ok();
    }
    writeln!(out, "        _ => None,").ok();
    writeln!(out, "    }}").ok();
    writeln!(out, "}}").ok();
    writeln!(out).ok();
    writeln!(out, "/// True for reply codes that close the connection (hard errors), false for channel errors.").ok();
    writeln!(out, "pub fn is_hard_error(code: u16) -> bool {{").ok();
    let hard: Vec<String> = errors.iter().filter(|(_, hard)| *hard).map(|(name, _)| upper(name)).collect();
    writeln!(out, "    matches!(code, {})", hard.join(" | ")).ok();
    writeln!(out, "}}").ok();
    writeln!(out).ok();
    Ok(())
}

fn class_ids(out: &mut String, classes: &[ClassDef]) {
    writeln!(out, "/// Class ids.").ok();
    writeln!(out, "pub mod class_id {{").ok();
    for class in classes {
        writeln!(out, "    pub const {}: u16 = {};", upper(&class.name), class.id).ok();
    }
    writeln!(out, "}}").ok();
    writeln!(out).ok();
}

/// Groups consecutive bit fields into octets (at most 8 per octet), per the spec's bit rules.
enum Slot<'a> {
    Plain(&'a Field),
    Bits(Vec<&'a Field>),
}

fn slots(fields: &[Field]) -> Vec<Slot<'_>> {
    let mut slots: Vec<Slot<'_>> = Vec::new();
    for field in fields {
        match (field.kind, slots.last_mut()) {
            (Kind::Bit, Some(Slot::Bits(bits))) if bits.len() < 8 => bits.push(field),
            (Kind::Bit, _) => slots.push(Slot::Bits(vec![field])),
            _ => slots.push(Slot::Plain(field)),
        }
    }
    slots
}

fn method_struct(out: &mut String, method: &MethodDef) {
    let ty = method.type_name();
    let mut traits = Vec::new();
    if method.synchronous {
        traits.push("synchronous");
    }
    if method.content {
        traits.push("carries content");
    }
    let traits = if traits.is_empty() { String::new() } else { format!("; {}", traits.join(", ")) };
    writeln!(out, "/// `{}` (class {}, method {}{traits}).", method.spec_name(), method.class_id, method.id).ok();
    let derive_default = method.fields.iter().all(|f| f.default_expr().is_none());
    let derives = if derive_default { "Debug, Clone, PartialEq, Default" } else { "Debug, Clone, PartialEq" };
    writeln!(out, "#[derive({derives})]").ok();
    writeln!(out, "pub struct {ty} {{").ok();
    for field in &method.fields {
        writeln!(out, "    /// `{}` ({}).", field.spec_name, field.kind.spec_type()).ok();
        writeln!(out, "    pub {}: {},", field.rust_name, field.kind.rust_type()).ok();
    }
    writeln!(out, "}}").ok();
    writeln!(out).ok();

    if !derive_default {
        writeln!(out, "impl Default for {ty} {{").ok();
        writeln!(out, "    fn default() -> Self {{").ok();
        writeln!(out, "        {ty} {{").ok();
        for field in &method.fields {
            let value = field.default_expr().unwrap_or_else(|| field.zero_expr().to_owned());
            writeln!(out, "            {}: {value},", field.rust_name).ok();
        }
        writeln!(out, "        }}").ok();
        writeln!(out, "    }}").ok();
        writeln!(out, "}}").ok();
        writeln!(out).ok();
    }

    writeln!(out, "impl {ty} {{").ok();
    writeln!(out, "    pub const CLASS_ID: u16 = {};", method.class_id).ok();
    writeln!(out, "    pub const METHOD_ID: u16 = {};", method.id).ok();
    writeln!(out).ok();
    decode_args(out, method);
    writeln!(out).ok();
    encode_args(out, method);
    writeln!(out, "}}").ok();
    writeln!(out).ok();
    writeln!(out, "impl From<{ty}> for Method {{").ok();
    writeln!(out, "    fn from(method: {ty}) -> Method {{").ok();
    writeln!(out, "        Method::{ty}(method)").ok();
    writeln!(out, "    }}").ok();
    writeln!(out, "}}").ok();
    writeln!(out).ok();
}

fn decode_args(out: &mut String, method: &MethodDef) {
    let ty = method.type_name();
    let reader = if method.fields.is_empty() { "_r" } else { "r" };
    writeln!(out, "    /// Reads the arguments (after class and method id) of a method frame payload.").ok();
    writeln!(out, "    pub(crate) fn decode_args({reader}: &mut Reader<'_>) -> Result<{ty}, DecodeError> {{").ok();
    let mut bit_group = 0;
    for slot in slots(&method.fields) {
        match slot {
            Slot::Plain(field) => {
                writeln!(out, "        let {} = r.{}()?;", field.rust_name, field.kind.reader()).ok();
            }
            Slot::Bits(bits) => {
                writeln!(out, "        let bits{bit_group} = r.octet()?;").ok();
                for (i, field) in bits.iter().enumerate() {
                    writeln!(out, "        let {} = (bits{bit_group} & 0x{:02x}) != 0;", field.rust_name, 1u8 << i)
                        .ok();
                }
                bit_group += 1;
            }
        }
    }
    let names: Vec<&str> = method.fields.iter().map(|f| f.rust_name.as_str()).collect();
    if names.is_empty() {
        writeln!(out, "        Ok({ty} {{}})").ok();
    } else {
        writeln!(out, "        Ok({ty} {{ {} }})", names.join(", ")).ok();
    }
    writeln!(out, "    }}").ok();
}

fn encode_args(out: &mut String, method: &MethodDef) {
    let writer = if method.fields.is_empty() { "_out" } else { "out" };
    writeln!(out, "    /// Appends the arguments (after class and method id) to `out`.").ok();
    writeln!(out, "    pub(crate) fn encode_args(&self, {writer}: &mut Vec<u8>) {{").ok();
    for slot in slots(&method.fields) {
        match slot {
            Slot::Plain(field) => {
                let value = if field.kind.by_ref() {
                    format!("&self.{}", field.rust_name)
                } else {
                    format!("self.{}", field.rust_name)
                };
                writeln!(out, "        {};", field.kind.writer(&value)).ok();
            }
            Slot::Bits(bits) => {
                let parts: Vec<String> = bits
                    .iter()
                    .enumerate()
                    .map(|(i, f)| match i {
                        0 => format!("u8::from(self.{})", f.rust_name),
                        _ => format!("(u8::from(self.{}) << {i})", f.rust_name),
                    })
                    .collect();
                writeln!(out, "        put_octet(out, {});", parts.join(" | ")).ok();
            }
        }
    }
    writeln!(out, "    }}").ok();
}

fn method_enum(out: &mut String, methods: &[MethodDef]) {
    writeln!(out, "/// Every method of every class.").ok();
    writeln!(out, "#[derive(Debug, Clone, PartialEq)]").ok();
    writeln!(out, "pub enum Method {{").ok();
    for method in methods {
        writeln!(out, "    {ty}({ty}),", ty = method.type_name()).ok();
    }
    writeln!(out, "}}").ok();
    writeln!(out).ok();

    writeln!(out, "/// The spec name (`basic.publish`) of a class and method id pair, if the spec defines it.").ok();
    writeln!(out, "pub fn method_name(class_id: u16, method_id: u16) -> Option<&'static str> {{").ok();
    writeln!(out, "    match (class_id, method_id) {{").ok();
    for method in methods {
        writeln!(out, "        ({}, {}) => Some(\"{}\"),", method.class_id, method.id, method.spec_name()).ok();
    }
    writeln!(out, "        _ => None,").ok();
    writeln!(out, "    }}").ok();
    writeln!(out, "}}").ok();
    writeln!(out).ok();

    writeln!(out, "impl Method {{").ok();
    let accessor = |out: &mut String, name: &str, ret: &str, value: &dyn Fn(&MethodDef) -> String| {
        writeln!(out, "    pub fn {name}(&self) -> {ret} {{").ok();
        writeln!(out, "        match self {{").ok();
        for method in methods {
            writeln!(out, "            Method::{}(_) => {},", method.type_name(), value(method)).ok();
        }
        writeln!(out, "        }}").ok();
        writeln!(out, "    }}").ok();
        writeln!(out).ok();
    };
    accessor(out, "class_id", "u16", &|m| m.class_id.to_string());
    accessor(out, "method_id", "u16", &|m| m.id.to_string());
    accessor(out, "name", "&'static str", &|m| format!("\"{}\"", m.spec_name()));
    let predicate = |out: &mut String, doc: &str, name: &str, pick: &dyn Fn(&MethodDef) -> bool| {
        let variants: Vec<String> =
            methods.iter().filter(|m| pick(m)).map(|m| format!("Method::{}(_)", m.type_name())).collect();
        writeln!(out, "    /// {doc}").ok();
        writeln!(out, "    pub fn {name}(&self) -> bool {{").ok();
        writeln!(out, "        matches!(self, {})", variants.join(" | ")).ok();
        writeln!(out, "    }}").ok();
        writeln!(out).ok();
    };
    predicate(out, "True for methods followed by a content header and body.", "has_content", &|m| m.content);
    predicate(out, "True for methods that expect a reply method.", "is_synchronous", &|m| m.synchronous);

    writeln!(out, "    /// Decodes a method frame payload (class id, method id, arguments). Trailing bytes are").ok();
    writeln!(out, "    /// an error; so is any read past the payload.").ok();
    writeln!(out, "    pub fn decode(payload: &[u8]) -> Result<Method, DecodeError> {{").ok();
    writeln!(out, "        let mut r = Reader::new(payload);").ok();
    writeln!(out, "        let class_id = r.short()?;").ok();
    writeln!(out, "        let method_id = r.short()?;").ok();
    writeln!(out, "        let method = match (class_id, method_id) {{").ok();
    for method in methods {
        writeln!(
            out,
            "            ({}, {}) => Method::{ty}({ty}::decode_args(&mut r)?),",
            method.class_id,
            method.id,
            ty = method.type_name()
        )
        .ok();
    }
    writeln!(out, "            _ => return Err(DecodeError::UnknownMethod {{ class_id, method_id }}),").ok();
    writeln!(out, "        }};").ok();
    writeln!(out, "        r.finish()?;").ok();
    writeln!(out, "        Ok(method)").ok();
    writeln!(out, "    }}").ok();
    writeln!(out).ok();
    writeln!(out, "    /// Appends the method frame payload (class id, method id, arguments) to `out`.").ok();
    writeln!(out, "    pub fn encode(&self, out: &mut Vec<u8>) {{").ok();
    writeln!(out, "        put_short(out, self.class_id());").ok();
    writeln!(out, "        put_short(out, self.method_id());").ok();
    writeln!(out, "        match self {{").ok();
    for method in methods {
        writeln!(out, "            Method::{}(m) => m.encode_args(out),", method.type_name()).ok();
    }
    writeln!(out, "        }}").ok();
    writeln!(out, "    }}").ok();
    writeln!(out, "}}").ok();
    writeln!(out).ok();
}

fn properties_struct(out: &mut String, class: &ClassDef) {
    let ty = format!("{}Properties", pascal(&class.name));
    let count = class.properties.len();
    writeln!(
        out,
        "/// The {count} content header properties of class `{}` (id {}), each present or absent",
        class.name, class.id
    )
    .ok();
    writeln!(out, "/// per its bit in the property flags (bit 15 first; bit 0 continues the flags).").ok();
    writeln!(out, "#[derive(Debug, Clone, PartialEq, Default)]").ok();
    writeln!(out, "pub struct {ty} {{").ok();
    for field in &class.properties {
        writeln!(out, "    /// `{}` ({}).", field.spec_name, field.kind.spec_type()).ok();
        writeln!(out, "    pub {}: Option<{}>,", field.rust_name, field.kind.rust_type()).ok();
    }
    writeln!(out, "}}").ok();
    writeln!(out).ok();
    writeln!(out, "impl {ty} {{").ok();
    writeln!(out, "    pub const CLASS_ID: u16 = {};", class.id).ok();
    writeln!(out, "    /// Flag bits no property of this class uses (bit 0 is the continuation bit).").ok();
    let used: u32 = (0..count).map(|i| 1u32 << (15 - i)).sum();
    writeln!(out, "    pub const UNUSED_FLAGS: u16 = 0x{:04x};", !used & 0xffff & !1).ok();
    writeln!(out).ok();
    writeln!(out, "    /// The property flags word of these properties.").ok();
    writeln!(out, "    pub fn flags(&self) -> u16 {{").ok();
    writeln!(out, "        let mut flags = 0;").ok();
    for (i, field) in class.properties.iter().enumerate() {
        writeln!(out, "        if self.{}.is_some() {{", field.rust_name).ok();
        writeln!(out, "            flags |= 1 << {};", 15 - i).ok();
        writeln!(out, "        }}").ok();
    }
    writeln!(out, "        flags").ok();
    writeln!(out, "    }}").ok();
    writeln!(out).ok();
    writeln!(out, "    /// Reads the properties that `flags` marks present into `p`, in place (a large struct:").ok();
    writeln!(out, "    /// decoded into the box it lives in, it is not copied on its way there).").ok();
    writeln!(
        out,
        "    pub(crate) fn decode_into(flags: u16, r: &mut Reader<'_>, p: &mut {ty}) -> Result<(), DecodeError> {{"
    )
    .ok();
    for (i, field) in class.properties.iter().enumerate() {
        writeln!(out, "        if flags & (1 << {}) != 0 {{", 15 - i).ok();
        if field.kind == Kind::Bit {
            writeln!(out, "            p.{} = Some(true);", field.rust_name).ok();
        } else {
            writeln!(out, "            p.{} = Some(r.{}()?);", field.rust_name, field.kind.reader()).ok();
        }
        writeln!(out, "        }}").ok();
    }
    writeln!(out, "        Ok(())").ok();
    writeln!(out, "    }}").ok();
    writeln!(out).ok();
    writeln!(out, "    /// Appends the flags word and the present properties to `out`.").ok();
    writeln!(out, "    pub fn encode(&self, out: &mut Vec<u8>) {{").ok();
    writeln!(out, "        put_short(out, self.flags());").ok();
    for field in &class.properties {
        if field.kind == Kind::Bit {
            continue;
        }
        let value = if field.kind.by_ref() { "value" } else { "*value" };
        writeln!(out, "        if let Some(value) = &self.{} {{", field.rust_name).ok();
        writeln!(out, "            {};", field.kind.writer(value)).ok();
        writeln!(out, "        }}").ok();
    }
    writeln!(out, "    }}").ok();
    writeln!(out, "}}").ok();
}
