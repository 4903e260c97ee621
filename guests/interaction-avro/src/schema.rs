//! Avro schemas in their JSON form (Avro specification 1.11), parsed into an
//! arena of types.
//!
//! Types refer to each other by [`TypeId`], an index into the arena, so
//! recursive schemas (a record with a field of its own type) need no
//! reference counting: a named type is given its id before its body is
//! parsed, and references by name resolve to that id.
//!
//! Logical types (`timestamp-millis`, `decimal`, ...) are read as their
//! underlying type, as the specification asks of implementations that do not
//! know them; the interaction record needs none of them.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

/// A type's index in its [`Schema`].
pub type TypeId = usize;

/// One Avro type.
#[derive(Debug, Clone)]
pub enum Type {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record(Record),
    Enum(Enum),
    Fixed(Fixed),
    Array(TypeId),
    Map(TypeId),
    Union(Vec<TypeId>),
}

/// The name of a named type (record, enum, fixed).
#[derive(Debug, Clone)]
pub struct Name {
    /// The full name: `namespace.name`, or `name` in the null namespace.
    pub full: String,
    /// Alternative full names, for matching against other schemas.
    pub aliases: Vec<String>,
}

impl Name {
    /// The name without its namespace; schema resolution matches records,
    /// enums and fixed types by this.
    pub fn unqualified(&self) -> &str {
        unqualified(&self.full)
    }

    /// Whether a writer's type of name `writer` may be read as this type:
    /// same unqualified name, or one of this type's aliases.
    pub fn accepts(&self, writer: &Name) -> bool {
        let w = writer.unqualified();
        self.unqualified() == w || self.aliases.iter().any(|a| unqualified(a) == w)
    }
}

fn unqualified(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}

#[derive(Debug, Clone)]
pub struct Record {
    pub name: Name,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub aliases: Vec<String>,
    pub ty: TypeId,
    /// The default as written in the schema; checked against the type only
    /// when it is used (a reader field the writer lacks).
    pub default: Option<Json>,
}

#[derive(Debug, Clone)]
pub struct Enum {
    pub name: Name,
    pub symbols: Vec<String>,
    /// Index of the symbol that stands for writer symbols the reader does
    /// not know.
    pub default: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Fixed {
    pub name: Name,
    pub size: usize,
}

/// A parsed schema: its types and the root type.
#[derive(Debug, Clone)]
pub struct Schema {
    types: Vec<Type>,
    root: TypeId,
}

/// The primitive type names, at fixed ids 0..8 of every schema, so that each
/// mention of `"string"` does not add a type to the arena.
const PRIMITIVES: [(&str, Type); 8] = [
    ("null", Type::Null),
    ("boolean", Type::Boolean),
    ("int", Type::Int),
    ("long", Type::Long),
    ("float", Type::Float),
    ("double", Type::Double),
    ("bytes", Type::Bytes),
    ("string", Type::String),
];

fn primitive(name: &str) -> Option<TypeId> {
    PRIMITIVES.iter().position(|(n, _)| *n == name)
}

impl Schema {
    /// Parses a schema from its JSON text.
    pub fn parse(text: &str) -> Result<Schema, String> {
        let json: Json = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        Schema::from_json(&json)
    }

    /// Parses a schema from JSON already parsed.
    pub fn from_json(json: &Json) -> Result<Schema, String> {
        let mut p = Parser {
            types: PRIMITIVES.iter().map(|(_, t)| t.clone()).collect(),
            names: HashMap::new(),
        };
        let root = p.parse(json, "").map_err(|e| e.to_string())?;
        Ok(Schema { types: p.types, root })
    }

    pub fn root(&self) -> TypeId {
        self.root
    }

    pub fn get(&self, id: TypeId) -> &Type {
        // Ids only come from this schema's parser, so they are in range;
        // `Null` keeps this total without a panic path.
        self.types.get(id).unwrap_or(&Type::Null)
    }

    /// A short description for error messages: `long`, `record a.B`,
    /// `union [null, string]`, `array<int>`.
    pub fn describe(&self, id: TypeId) -> String {
        match self.get(id) {
            Type::Record(r) => format!("record {}", r.name.full),
            Type::Enum(e) => format!("enum {}", e.name.full),
            Type::Fixed(f) => format!("fixed {} ({} bytes)", f.name.full, f.size),
            Type::Array(t) => format!("array<{}>", self.describe(*t)),
            Type::Map(t) => format!("map<{}>", self.describe(*t)),
            Type::Union(ts) => {
                let branches: Vec<String> = ts.iter().map(|t| self.describe(*t)).collect();
                format!("union [{}]", branches.join(", "))
            }
            _ => PRIMITIVES.get(id).map_or("?", |(n, _)| n).to_string(),
        }
    }
}

/// A parse error with the JSON path where it happened.
struct ParseError {
    /// Where, innermost first (errors are built on the way out): ``record
    /// `a.B` ``, ``field `x` ``, `union branch 1`, ...
    path: Vec<String>,
    message: String,
}

impl ParseError {
    fn new(message: impl Into<String>) -> Self {
        ParseError {
            path: Vec::new(),
            message: message.into(),
        }
    }

    fn at(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for segment in self.path.iter().rev() {
            write!(f, "{segment}, ")?;
        }
        f.write_str(&self.message)
    }
}

struct Parser {
    types: Vec<Type>,
    /// Named types defined so far, by full name.
    names: HashMap<String, TypeId>,
}

impl Parser {
    fn parse(&mut self, json: &Json, namespace: &str) -> Result<TypeId, ParseError> {
        match json {
            Json::String(name) => self.reference(name, namespace),
            Json::Array(branches) => self.union(branches, namespace),
            Json::Object(obj) => self.object(obj, namespace),
            other => Err(ParseError::new(format!(
                "a schema is a type name, an object or an array (a union), not {other}"
            ))),
        }
    }

    /// A type named by a string: a primitive or a named type defined before.
    fn reference(&self, name: &str, namespace: &str) -> Result<TypeId, ParseError> {
        if let Some(id) = primitive(name) {
            return Ok(id);
        }
        // An unqualified reference means the enclosing namespace first; the
        // null namespace is tried next, as the Java implementation does.
        let qualified = (!name.contains('.') && !namespace.is_empty()).then(|| format!("{namespace}.{name}"));
        qualified
            .and_then(|q| self.names.get(&q))
            .or_else(|| self.names.get(name))
            .copied()
            .ok_or_else(|| ParseError::new(format!("unknown type `{name}`")))
    }

    fn push(&mut self, ty: Type) -> TypeId {
        self.types.push(ty);
        self.types.len() - 1
    }

    fn union(&mut self, branches: &[Json], namespace: &str) -> Result<TypeId, ParseError> {
        if branches.is_empty() {
            return Err(ParseError::new("a union needs at least one branch"));
        }
        let mut ids = Vec::with_capacity(branches.len());
        let mut seen: Vec<String> = Vec::new();
        for (i, b) in branches.iter().enumerate() {
            let id = self
                .parse(b, namespace)
                .map_err(|e| e.at(format!("union branch {i}")))?;
            // Unnamed kinds may appear once per union, named types once per
            // name; a union may not hold a union directly.
            let key = match self.types.get(id) {
                Some(Type::Union(_)) => {
                    return Err(
                        ParseError::new("a union may not contain a union").at(format!("union branch {i}"))
                    );
                }
                Some(Type::Array(_)) => "array".to_string(),
                Some(Type::Map(_)) => "map".to_string(),
                _ => match PRIMITIVES.get(id) {
                    Some((name, _)) => name.to_string(),
                    // A named type, possibly one whose body is still being
                    // parsed (a recursive reference): its name is in `names`.
                    None => self
                        .names
                        .iter()
                        .find(|(_, v)| **v == id)
                        .map_or_else(|| format!("#{id}"), |(k, _)| k.clone()),
                },
            };
            if seen.contains(&key) {
                return Err(ParseError::new(format!("the union has two `{key}` branches")));
            }
            seen.push(key);
            ids.push(id);
        }
        Ok(self.push(Type::Union(ids)))
    }

    fn object(&mut self, obj: &Map<String, Json>, namespace: &str) -> Result<TypeId, ParseError> {
        let ty = match obj.get("type") {
            Some(Json::String(t)) => t.as_str(),
            // `{"type": {...}}` or `{"type": [...]}`: a schema wrapped in an
            // object, as field types are.
            Some(nested @ (Json::Object(_) | Json::Array(_))) => {
                return self.parse(nested, namespace).map_err(|e| e.at("`type`"));
            }
            Some(_) => return Err(ParseError::new("`type` must be a string, an object or an array")),
            None => return Err(ParseError::new("a schema object needs a `type`")),
        };
        match ty {
            "record" | "error" => self.record(obj, namespace),
            "enum" => self.enumeration(obj, namespace),
            "fixed" => self.fixed(obj, namespace),
            "array" => {
                let items = obj
                    .get("items")
                    .ok_or_else(|| ParseError::new("an array needs `items`"))?;
                let items = self.parse(items, namespace).map_err(|e| e.at("array items"))?;
                Ok(self.push(Type::Array(items)))
            }
            "map" => {
                let values = obj
                    .get("values")
                    .ok_or_else(|| ParseError::new("a map needs `values`"))?;
                let values = self.parse(values, namespace).map_err(|e| e.at("map values"))?;
                Ok(self.push(Type::Map(values)))
            }
            // A primitive (possibly with a logical type), or a named type
            // referred to in object form.
            other => self.reference(other, namespace),
        }
    }

    /// Reads `name`, `namespace` and `aliases` of a named type, checks the
    /// name is new and reserves its id (so the body may refer to it).
    /// Returns the id and the namespace the body's names are relative to.
    fn name(
        &mut self,
        obj: &Map<String, Json>,
        namespace: &str,
    ) -> Result<(TypeId, Name, String), ParseError> {
        let Some(Json::String(name)) = obj.get("name") else {
            return Err(ParseError::new("a named type needs a string `name`"));
        };
        let ns = match obj.get("namespace") {
            None | Some(Json::Null) => namespace.to_string(),
            Some(Json::String(ns)) => ns.clone(),
            Some(_) => return Err(ParseError::new("`namespace` must be a string")),
        };
        let full = qualify(name, &ns);
        check_full_name(&full)?;
        if primitive(&full).is_some() {
            return Err(ParseError::new(format!(
                "`{full}` is a primitive type and cannot be redefined"
            )));
        }
        if self.names.contains_key(&full) {
            return Err(ParseError::new(format!("the type `{full}` is defined twice")));
        }
        let own_ns = full
            .rsplit_once('.')
            .map_or(String::new(), |(ns, _)| ns.to_string());
        let aliases = strings(obj, "aliases")?
            .into_iter()
            .map(|a| {
                let a = qualify(&a, &own_ns);
                check_full_name(&a).map(|()| a)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let id = self.push(Type::Null);
        self.names.insert(full.clone(), id);
        Ok((id, Name { full, aliases }, own_ns))
    }

    fn record(&mut self, obj: &Map<String, Json>, namespace: &str) -> Result<TypeId, ParseError> {
        let (id, name, ns) = self.name(obj, namespace)?;
        let at = format!("record `{}`", name.full);
        let Some(Json::Array(list)) = obj.get("fields") else {
            return Err(ParseError::new("a record needs a `fields` array").at(at));
        };
        let mut fields: Vec<Field> = Vec::with_capacity(list.len());
        for (i, f) in list.iter().enumerate() {
            let field = self.field(f, i, &ns).map_err(|e| e.at(at.clone()))?;
            if fields.iter().any(|g| g.name == field.name) {
                return Err(ParseError::new(format!("field `{}` is defined twice", field.name)).at(at));
            }
            fields.push(field);
        }
        if let Some(slot) = self.types.get_mut(id) {
            *slot = Type::Record(Record { name, fields });
        }
        Ok(id)
    }

    fn field(&mut self, json: &Json, index: usize, namespace: &str) -> Result<Field, ParseError> {
        let Json::Object(obj) = json else {
            return Err(ParseError::new("a field is an object").at(format!("field {index}")));
        };
        let Some(Json::String(name)) = obj.get("name") else {
            return Err(ParseError::new("a field needs a string `name`").at(format!("field {index}")));
        };
        let at = || format!("field `{name}`");
        check_name(name).map_err(|e| e.at(at()))?;
        let ty = obj
            .get("type")
            .ok_or_else(|| ParseError::new("a field needs a `type`").at(at()))?;
        let ty = self.parse(ty, namespace).map_err(|e| e.at(at()))?;
        let aliases = strings(obj, "aliases").map_err(|e| e.at(at()))?;
        for a in &aliases {
            check_name(a).map_err(|e| e.at(at()))?;
        }
        Ok(Field {
            name: name.clone(),
            aliases,
            ty,
            default: obj.get("default").cloned(),
        })
    }

    fn enumeration(&mut self, obj: &Map<String, Json>, namespace: &str) -> Result<TypeId, ParseError> {
        let (id, name, _) = self.name(obj, namespace)?;
        let at = format!("enum `{}`", name.full);
        if !matches!(obj.get("symbols"), Some(Json::Array(_))) {
            return Err(ParseError::new("an enum needs a `symbols` array").at(at));
        }
        let symbols = strings(obj, "symbols").map_err(|e| e.at(at.clone()))?;
        for (i, s) in symbols.iter().enumerate() {
            check_name(s).map_err(|e| e.at(at.clone()))?;
            if symbols[..i].contains(s) {
                return Err(ParseError::new(format!("symbol `{s}` appears twice")).at(at));
            }
        }
        let default = match obj.get("default") {
            None | Some(Json::Null) => None,
            Some(Json::String(d)) => match symbols.iter().position(|s| s == d) {
                Some(i) => u32::try_from(i).ok(),
                None => return Err(ParseError::new(format!("the default `{d}` is not a symbol")).at(at)),
            },
            Some(_) => return Err(ParseError::new("an enum's default must be a symbol").at(at)),
        };
        if let Some(slot) = self.types.get_mut(id) {
            *slot = Type::Enum(Enum {
                name,
                symbols,
                default,
            });
        }
        Ok(id)
    }

    fn fixed(&mut self, obj: &Map<String, Json>, namespace: &str) -> Result<TypeId, ParseError> {
        let (id, name, _) = self.name(obj, namespace)?;
        let size = obj
            .get("size")
            .and_then(Json::as_u64)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| {
                ParseError::new("a fixed type needs a non-negative integer `size`")
                    .at(format!("fixed `{}`", name.full))
            })?;
        if let Some(slot) = self.types.get_mut(id) {
            *slot = Type::Fixed(Fixed { name, size });
        }
        Ok(id)
    }
}

fn qualify(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the specification's rule for names.
fn check_name(name: &str) -> Result<(), ParseError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ParseError::new(format!("`{name}` is not a valid Avro name")))
    }
}

fn check_full_name(full: &str) -> Result<(), ParseError> {
    full.split('.')
        .try_for_each(check_name)
        .map_err(|_| ParseError::new(format!("`{full}` is not a valid Avro name")))
}

/// An optional array of strings (`aliases`, `symbols`).
fn strings(obj: &Map<String, Json>, key: &str) -> Result<Vec<String>, ParseError> {
    match obj.get(key) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|i| match i {
                Json::String(s) => Ok(s.clone()),
                _ => Err(ParseError::new(format!("`{key}` must hold strings only"))),
            })
            .collect(),
        Some(_) => Err(ParseError::new(format!("`{key}` must be an array of strings"))),
    }
}
