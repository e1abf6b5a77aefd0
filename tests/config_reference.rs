//! `docs/config-reference.md` is generated from the config structs' doc comments, and this test
//! fails when it is stale.
//!
//! The generator walks the config types from `Config` (src/config/mod.rs) through the source
//! files with `syn`, so the reference can never list a key the gateway does not have, or miss
//! one it has: a field without a doc comment fails the test too. Defaults are not copied from
//! the source: they come from loading the built-in configuration through `citygate::config`,
//! with one minimal element of every array and table added, so each default is the value the
//! gateway really runs with.
//!
//! Regenerate with `scripts/gen-config-reference` (it runs this test with
//! `CITYGATE_WRITE_DOCS=1`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

const REFERENCE: &str = "docs/config-reference.md";

#[test]
fn config_reference_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let types = TypeIndex::load(&root.join("src"));
    let defaults = reference_defaults();
    let mut gen = Generator {
        types: &types,
        defaults: &defaults,
        out: String::new(),
        undocumented: Vec::new(),
    };
    let doc = gen.document();
    assert!(
        gen.undocumented.is_empty(),
        "every config key needs a doc comment (it is the config reference); missing on:\n  {}",
        gen.undocumented.join("\n  ")
    );
    let path = root.join(REFERENCE);
    if std::env::var_os("CITYGATE_WRITE_DOCS").is_some() {
        std::fs::write(&path, &doc).expect("write docs/config-reference.md");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != doc {
        let first_diff = current
            .lines()
            .zip(doc.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(doc.lines().count()));
        panic!(
            "{REFERENCE} is stale (first difference at line {}: now {:?}, generated {:?}).\n\
             Run scripts/gen-config-reference and commit the result.",
            first_diff + 1,
            current.lines().nth(first_diff).unwrap_or(""),
            doc.lines().nth(first_diff).unwrap_or(""),
        );
    }
}

/// The built-in configuration plus one minimal element of every array and table, as JSON.
/// Each element is named `reference` (or is element 0), which is where the generator looks
/// up the defaults of keys inside arrays and tables.
fn reference_defaults() -> Value {
    let overlay = r#"
[[mqtt]]
name = "reference"
url = "mqtts://127.0.0.1:8883"
tls = {}
[[mqtt.routes]]
topic = "city/{kind}/{sensor}"

[modbus.maps.reference]
[[modbus.maps.reference.registers]]
metric = "reference"
address = "40001"
[[modbus.devices]]
sensor = "reference-rtu"
kind = "reference"
address = "rtu:///dev/ttyUSB0"
map = "reference"
serial = {}

[[sinks.influxdb]]
url = "https://127.0.0.1:8086"
org = "city"
bucket = "citygate"
token_env = "CITYGATE_INFLUX_TOKEN"
tls = {}

[[alerts.webhooks]]
name = "reference"
url = "https://127.0.0.1:9000/hook"
secret_env = "CITYGATE_WEBHOOK_SECRET"
tls = {}

[alerts.mqtt]
tls = {}

[catalog.reference]
name = { en = "Reference" }
[catalog.reference.metrics.reference]
name = { en = "Reference" }
min = 0
max = 1
[[catalog.reference.rules]]
name = "reference"
metric = "reference"
above = 0.5
[[catalog.reference.rules.schedule]]
from = "22:00"
to = "06:00"
above = 0.4
[catalog.reference.profiles.reference]
[catalog.reference.overrides.reference]

[sensors.reference]
kind = "reference"
[sensors.reference.rules.reference]
[sensors.reference.metrics.reference]
"#;
    let config = citygate::config::load_with_env(
        &[citygate::config::Source::Text {
            name: "reference overlay".into(),
            toml: overlay.into(),
        }],
        Some(Default::default()),
    )
    .unwrap_or_else(|e| panic!("the reference overlay must load: {e}"));
    serde_json::to_value(&config).expect("config serializes")
}

/// Every struct and enum in src/, by name, with what the generator needs of it.
struct TypeIndex {
    /// By name, every definition with the file it is in: two modules may use one name
    /// (modbus's `Table` and the catalog's), and a field's type is looked up in its own file
    /// first.
    structs: BTreeMap<String, Vec<(PathBuf, StructDef)>>,
    enums: BTreeMap<String, Vec<(PathBuf, EnumDef)>>,
}

struct StructDef {
    file: PathBuf,
    doc: String,
    derives_deserialize: bool,
    fields: Vec<FieldDef>,
}

struct FieldDef {
    key: String,
    doc: String,
    ty: syn::Type,
    has_default: bool,
}

struct EnumDef {
    doc: String,
    /// Unit variants as written in config, with their docs; None when some variant carries
    /// data or the enum is deserialized by hand (then the enum's own doc describes it).
    values: Option<Vec<(String, String)>>,
}

impl TypeIndex {
    fn load(src: &Path) -> TypeIndex {
        let mut index = TypeIndex {
            structs: BTreeMap::new(),
            enums: BTreeMap::new(),
        };
        for file in rust_files(src) {
            let text = std::fs::read_to_string(&file).expect("read source");
            let parsed = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
            for item in parsed.items {
                match item {
                    syn::Item::Struct(s) => {
                        let def = struct_def(&s, &file);
                        index
                            .structs
                            .entry(s.ident.to_string())
                            .or_default()
                            .push((file.clone(), def));
                    }
                    syn::Item::Enum(e) => {
                        index
                            .enums
                            .entry(e.ident.to_string())
                            .or_default()
                            .push((file.clone(), enum_def(&e)));
                    }
                    _ => {}
                }
            }
        }
        index
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

fn doc_of(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs {
        if !a.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &a.meta {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
            {
                lines.push(s.value().trim().to_string());
            }
        }
    }
    lines.join(" ").trim().to_string()
}

/// The serde attributes the reference cares about.
#[derive(Default)]
struct SerdeAttrs {
    rename: Option<String>,
    rename_all: Option<String>,
    default: bool,
}

fn serde_attrs(attrs: &[syn::Attribute]) -> SerdeAttrs {
    let mut out = SerdeAttrs::default();
    for a in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = a.parse_nested_meta(|m| {
            if m.path.is_ident("rename") {
                out.rename = Some(m.value()?.parse::<syn::LitStr>()?.value());
            } else if m.path.is_ident("rename_all") {
                out.rename_all = Some(m.value()?.parse::<syn::LitStr>()?.value());
            } else if m.path.is_ident("default") {
                out.default = true;
                if m.input.peek(syn::Token![=]) {
                    m.value()?.parse::<syn::LitStr>()?;
                }
            } else if m.input.peek(syn::Token![=]) {
                m.value()?.parse::<syn::Expr>()?;
            }
            Ok(())
        });
    }
    out
}

fn derives(attrs: &[syn::Attribute], name: &str) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| {
            let mut found = false;
            let _ = a.parse_nested_meta(|m| {
                found |= m.path.segments.last().is_some_and(|s| s.ident == name);
                Ok(())
            });
            found
        })
}

fn struct_def(s: &syn::ItemStruct, file: &Path) -> StructDef {
    let container = serde_attrs(&s.attrs);
    let fields = match &s.fields {
        syn::Fields::Named(named) => named
            .named
            .iter()
            .filter_map(|f| {
                let name = f.ident.as_ref()?.to_string();
                let attrs = serde_attrs(&f.attrs);
                Some(FieldDef {
                    key: attrs.rename.unwrap_or(name),
                    doc: doc_of(&f.attrs),
                    ty: f.ty.clone(),
                    has_default: attrs.default || container.default,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    StructDef {
        file: file.to_path_buf(),
        doc: doc_of(&s.attrs),
        derives_deserialize: derives(&s.attrs, "Deserialize"),
        fields,
    }
}

fn enum_def(e: &syn::ItemEnum) -> EnumDef {
    let all_unit = e
        .variants
        .iter()
        .all(|v| matches!(v.fields, syn::Fields::Unit));
    let rename_all = serde_attrs(&e.attrs).rename_all;
    let values = (all_unit && derives(&e.attrs, "Deserialize")).then(|| {
        e.variants
            .iter()
            .map(|v| {
                let name =
                    serde_attrs(&v.attrs)
                        .rename
                        .unwrap_or_else(|| match rename_all.as_deref() {
                            Some("snake_case") => snake_case(&v.ident.to_string()),
                            Some("lowercase") => v.ident.to_string().to_lowercase(),
                            _ => v.ident.to_string(),
                        });
                (name, doc_of(&v.attrs))
            })
            .collect()
    });
    EnumDef {
        doc: doc_of(&e.attrs),
        values,
    }
}

fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// What a field's Rust type means in a config file.
enum Shape {
    /// A value written in place, with its type described.
    Leaf(String),
    /// A table with keys of its own (a struct).
    Table(String),
    /// An array of tables, `[[path]]`.
    Array(String),
    /// A table of tables keyed by a name the user picks, `[path.<name>]`.
    Map(String),
}

fn generic_args(seg: &syn::PathSegment) -> Vec<&syn::Type> {
    match &seg.arguments {
        syn::PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn last_segment(ty: &syn::Type) -> Option<&syn::PathSegment> {
    match ty {
        syn::Type::Path(p) => p.path.segments.last(),
        _ => None,
    }
}

/// The definition named `name` as seen from `file`: the one in that file, else the only one.
fn lookup<'a, T>(defs: Option<&'a Vec<(PathBuf, T)>>, name: &str, file: &Path) -> Option<&'a T> {
    let defs = defs?;
    if let Some((_, d)) = defs.iter().find(|(f, _)| f == file) {
        return Some(d);
    }
    match defs.as_slice() {
        [(_, d)] => Some(d),
        [] => None,
        _ => panic!(
            "{name} is defined in several files ({}); the reference generator cannot tell which \
             one {} means: give the config type a name of its own",
            defs.iter()
                .map(|(f, _)| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            file.display()
        ),
    }
}

impl TypeIndex {
    fn struct_named(&self, name: &str, file: &Path) -> Option<&StructDef> {
        lookup(self.structs.get(name), name, file)
    }

    fn enum_named(&self, name: &str, file: &Path) -> Option<&EnumDef> {
        lookup(self.enums.get(name), name, file)
    }

    /// The shape of `ty` (a field's type in `file`), and whether it is optional (an `Option`).
    fn shape(&self, ty: &syn::Type, file: &Path) -> (Shape, bool) {
        let Some(seg) = last_segment(ty) else {
            return (Shape::Leaf(type_text(ty)), false);
        };
        let name = seg.ident.to_string();
        let args = generic_args(seg);
        match (name.as_str(), args.as_slice()) {
            ("Option", [inner]) => (self.shape(inner, file).0, true),
            ("Vec", [inner]) => match self.shape(inner, file).0 {
                Shape::Table(s) => (Shape::Array(s), false),
                Shape::Leaf(t) => (Shape::Leaf(format!("array of {t}")), false),
                _ => (Shape::Leaf(type_text(ty)), false),
            },
            ("BTreeMap" | "HashMap", [_, inner]) => match self.shape(inner, file).0 {
                Shape::Table(s) => (Shape::Map(s), false),
                Shape::Leaf(t) => (Shape::Leaf(format!("table of {t}")), false),
                _ => (Shape::Leaf(type_text(ty)), false),
            },
            _ => (self.named_shape(&name, file), false),
        }
    }

    fn named_shape(&self, name: &str, file: &Path) -> Shape {
        let primitive = match name {
            "String" => Some("string"),
            "PathBuf" => Some("path"),
            "SocketAddr" => Some("address (`host:port`)"),
            "bool" => Some("boolean"),
            "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => Some("integer"),
            "f32" | "f64" => Some("number"),
            "Dur" => Some("duration (`\"500ms\"`, `\"30s\"`, `\"2h 30m\"`)"),
            _ => None,
        };
        if let Some(p) = primitive {
            return Shape::Leaf(p.to_string());
        }
        // A type defined in the field's own file wins over one of the same name elsewhere,
        // whether struct or enum (modbus's `Table` enum, the catalog's `Table` struct).
        let local_enum = self
            .enums
            .get(name)
            .is_some_and(|d| d.iter().any(|(f, _)| f == file));
        if let Some(s) = self.struct_named(name, file).filter(|_| !local_enum) {
            if s.derives_deserialize {
                return Shape::Table(s.file.display().to_string() + "#" + name);
            }
            return Shape::Leaf(format!("{} ({})", name_words(name), first_sentence(&s.doc)));
        }
        if let Some(e) = self.enum_named(name, file) {
            return Shape::Leaf(match &e.values {
                Some(values) => values
                    .iter()
                    .map(|(v, _)| format!("`\"{v}\"`"))
                    .collect::<Vec<_>>()
                    .join(" \\| "),
                None => format!("{} ({})", name_words(name), first_sentence(&e.doc)),
            });
        }
        panic!("config type {name} is not a known struct, enum or primitive: teach the reference generator about it");
    }
}

fn first_sentence(doc: &str) -> &str {
    doc.find(". ").map_or(doc, |i| &doc[..=i])
}

fn name_words(name: &str) -> String {
    snake_case(name).replace('_', " ")
}

fn type_text(ty: &syn::Type) -> String {
    match last_segment(ty) {
        Some(seg) => seg.ident.to_string(),
        None => "value".to_string(),
    }
}

/// The placeholder for the user-chosen key of a table of tables.
fn map_placeholder(key: &str) -> &'static str {
    match key {
        "catalog" => "<kind>",
        "sensors" => "<sensor>",
        "metrics" => "<metric>",
        "rules" | "overrides" => "<rule>",
        "profiles" => "<profile>",
        "maps" => "<map>",
        _ => "<name>",
    }
}

struct Generator<'a> {
    types: &'a TypeIndex,
    defaults: &'a Value,
    out: String,
    undocumented: Vec<String>,
}

/// Where a table sits: its dotted path for people, its JSON pointer into the defaults, and
/// whether it is an element of an array or of a table of tables (whose keys without a serde
/// default must be given).
#[derive(Clone)]
struct Place {
    path: String,
    pointer: String,
    in_element: bool,
}

impl Place {
    fn child(&self, key: &str) -> Place {
        Place {
            path: if self.path.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", self.path)
            },
            pointer: format!("{}/{key}", self.pointer),
            in_element: self.in_element,
        }
    }
}

impl Generator<'_> {
    fn document(&mut self) -> String {
        self.out.push_str(
            "# Configuration reference\n\n\
             <!-- Generated from the doc comments of the config structs by\n     \
             scripts/gen-config-reference; the test `config_reference` fails when it is stale.\n     \
             Do not edit by hand. -->\n\n\
             Every key citygate reads, with its type, its default and what it means. The defaults are\n\
             the built-in configuration (`config/citygate.toml` and `config/catalog/*.toml`, embedded in\n\
             the binary); a file given with `-c` and environment variables `CITYGATE__SECTION__KEY`\n\
             override them (see the README's \"Configuration\"). An unknown key is an error.\n\n\
             - `a.b[]` is an array of tables, written `[[a.b]]`; an array in your file replaces the\n  \
             built-in one whole.\n\
             - `a.<name>` is a table of tables whose keys you choose, written `[a.<name>]`; tables\n  \
             merge with the built-in ones.\n\
             - *required* marks a key an element must have; \"unset\" means the key is optional and\n  \
             has no value unless you give one.\n\
             - The sensor kinds of the built-in catalog (`catalog.<kind>`) are listed by\n  \
             `citygate catalog`; their values are in `config/catalog/*.toml`.\n",
        );
        let root = Place {
            path: String::new(),
            pointer: String::new(),
            in_element: false,
        };
        let config_rs = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/mod.rs");
        self.table(&format!("{}#Config", config_rs.display()), &root, "");
        std::mem::take(&mut self.out)
    }

    /// Writes the section of the struct `type_key` ("file#Name") at `place`, then the
    /// sections of the tables inside it.
    fn table(&mut self, type_key: &str, place: &Place, field_doc: &str) {
        let (file, type_name) = type_key.rsplit_once('#').expect("file#Name");
        let def = self
            .types
            .struct_named(type_name, Path::new(file))
            .expect("a struct the shape came from");
        let mut rows = String::new();
        let mut nested = Vec::new();
        for f in &def.fields {
            let key_path = place.child(&f.key);
            if f.doc.is_empty() {
                self.undocumented
                    .push(format!("{} ({type_name}.{})", key_path.path, f.key));
            }
            let (shape, optional) = self.types.shape(&f.ty, &def.file);
            let (ty, default) = match &shape {
                Shape::Leaf(t) => (t.clone(), self.default_of(&key_path, f, optional)),
                Shape::Table(s) => {
                    // An optional table (`tls`) is like an element: its keys' defaults are the
                    // ones it gets when written, and the reference overlay writes one.
                    let table = Place {
                        in_element: key_path.in_element || optional,
                        ..key_path.clone()
                    };
                    nested.push((s.clone(), table, f.doc.clone()));
                    (
                        format!(
                            "table, see [`{}`](#{})",
                            key_path.path,
                            anchor(&key_path.path)
                        ),
                        String::new(),
                    )
                }
                Shape::Array(s) => {
                    let element = Place {
                        path: format!("{}[]", key_path.path),
                        pointer: format!("{}/0", key_path.pointer),
                        in_element: true,
                    };
                    let ty = format!(
                        "array of tables, see [`{}`](#{})",
                        element.path,
                        anchor(&element.path)
                    );
                    nested.push((s.clone(), element, f.doc.clone()));
                    (ty, String::new())
                }
                Shape::Map(s) => {
                    let element = Place {
                        path: format!("{}.{}", key_path.path, map_placeholder(&f.key)),
                        pointer: format!("{}/reference", key_path.pointer),
                        in_element: true,
                    };
                    let ty = format!(
                        "tables by name, see [`{}`](#{})",
                        element.path,
                        anchor(&element.path)
                    );
                    nested.push((s.clone(), element, f.doc.clone()));
                    (ty, String::new())
                }
            };
            let _ = writeln!(
                rows,
                "| `{}` | {} | {} | {} |",
                f.key,
                ty,
                default,
                cell(&self.meaning(f, &shape, &def.file))
            );
        }
        if !place.path.is_empty() {
            let _ = writeln!(self.out, "\n## `{}`\n", place.path);
            // The field's doc and the struct's say much the same; the longer says more.
            let intro = if field_doc.len() > def.doc.len() {
                field_doc
            } else {
                &def.doc
            };
            if !intro.is_empty() {
                let _ = writeln!(self.out, "{}\n", plain_doc(intro));
            }
        } else {
            self.out.push_str("\n## Top level\n\n");
        }
        self.out
            .push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
        self.out.push_str(&rows);
        for (ty, p, doc) in nested {
            self.table(&ty, &p, &doc);
        }
    }

    fn meaning(&self, f: &FieldDef, shape: &Shape, file: &Path) -> String {
        let mut text = plain_doc(&f.doc);
        // Enum values with their own docs are explained after the field's doc.
        if let (Shape::Leaf(_), Some(seg)) = (shape, last_segment(&f.ty)) {
            let name = match generic_args(seg).as_slice() {
                [inner] if seg.ident == "Option" => {
                    last_segment(inner).map(|s| s.ident.to_string())
                }
                _ => Some(seg.ident.to_string()),
            };
            if let Some(values) = name
                .and_then(|n| self.types.enum_named(&n, file))
                .and_then(|e| e.values.as_ref())
            {
                for (v, doc) in values.iter().filter(|(_, d)| !d.is_empty()) {
                    let _ = write!(text, " `{v}`: {}", plain_doc(doc));
                }
            }
        }
        text
    }

    fn default_of(&self, place: &Place, f: &FieldDef, optional: bool) -> String {
        if place.in_element {
            if optional {
                // The overlay may have set it to build a valid element; that is no default.
                return "unset".to_string();
            }
            if !f.has_default {
                return "*required*".to_string();
            }
        }
        match self.defaults.pointer(&place.pointer) {
            None | Some(Value::Null) => "unset".to_string(),
            Some(Value::String(s)) => format!("`\"{}\"`", s.replace('|', "\\|")),
            Some(Value::Array(a)) if a.is_empty() => "`[]`".to_string(),
            Some(Value::Object(o)) if o.is_empty() => "`{}`".to_string(),
            Some(v) => format!("`{}`", v.to_string().replace('|', "\\|")),
        }
    }
}

/// A doc comment without rustdoc's intra-doc link brackets (`[`Foo::bar`]`).
fn plain_doc(doc: &str) -> String {
    doc.replace("[`", "`").replace("`]", "`")
}

/// A table cell: no line breaks, no unescaped pipes.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// GitHub's heading anchor for a heading that is just `path` in backticks.
fn anchor(path: &str) -> String {
    path.chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}
