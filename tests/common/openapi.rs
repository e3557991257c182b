//! Contract checks against Stripe's OpenAPI description.
//!
//! creditd's REST shim promises to answer with exactly the JSON shapes Stripe's API uses, so
//! that unmodified Stripe SDKs and clients work against it. Hand-written assertions in the
//! tests only cover the fields somebody thought of; this module checks *every* REST response
//! the tests receive against the response schema that Stripe publishes for that operation, so
//! the shim cannot silently drift from the contract (a renamed field, a missing required key, a
//! value outside an enum, a `null` where Stripe never sends one, ...).
//!
//! The contract is the subset of Stripe's OpenAPI 3.0 spec kept in
//! `<CARGO_MANIFEST_DIR>/../shared/stripe-contract/openapi-subset.json`; the environment variable
//! `CREDITD_STRIPE_OPENAPI` (a file path) overrides that location.
//!
//! OpenAPI 3.0 schemas are not quite JSON Schema, so they are converted once, on load, to
//! JSON Schema draft 2020-12:
//!
//! * `nullable: true` admits `null` (also next to `enum`, `anyOf`, `oneOf` and `$ref`);
//! * `$ref: "#/components/schemas/X"` becomes `#/$defs/X`; every compiled document carries all
//!   converted component schemas under `$defs`, so references (recursive ones included) resolve;
//! * references to schemas the subset leaves out (listed in its `x-omitted-refs`: `invoice`,
//!   `discount`, `bank_account`, ...) accept any JSON object, so an expanded out-of-scope
//!   resource is not rejected while everything in scope is fully checked;
//! * `x-*` extensions, `description`, `title`, `format` and other annotations are dropped,
//!   so Stripe's custom formats (`unix-time`, `currency`) never fail validation;
//! * `type`, `properties`, `required`, `additionalProperties` (only where the spec has it),
//!   `items`, `enum`, `maxLength`, `pattern`, `anyOf`, ... are kept exactly as written (even the
//!   odd `url` pattern `^/v1/billing/credit_grants` of the credit balance transaction list);
//! * a `oneOf` with an omitted branch becomes `anyOf`, since "any object" branches overlap;
//! * an `enum` marked `x-stripeBypassValidation: true` is dropped (Stripe sends values beyond
//!   it, such as the preview `alert_type=credit_balance_threshold`).
//!
//! Validators are compiled lazily, once per schema, and cached in the process-wide [`OpenApi`]
//! returned by [`OpenApi::get`].
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::{Map, Value, json};

/// Environment variable that overrides the location of the OpenAPI file.
pub const SPEC_PATH_ENV: &str = "CREDITD_STRIPE_OPENAPI";

/// The JSON Schema dialect every converted schema is compiled as.
const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Pretty-printed bodies in failure reports are cut after this many bytes.
const BODY_LIMIT: usize = 4096;
/// Single error messages (which quote the offending value) are cut after this many bytes.
const MESSAGE_LIMIT: usize = 400;
/// At most this many top-level validation errors are listed in one report.
const MAX_ERRORS: usize = 200;
/// How deep the alternatives of failed `anyOf`/`oneOf` keywords are explained.
const MAX_CONTEXT_DEPTH: usize = 3;

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Stripe's OpenAPI contract with compiled (and cached) response validators.
pub struct OpenApi {
    source: String,
    /// The OpenAPI document as read (request shapes, for generators of requests).
    document: Value,
    /// Converted `components.schemas`, placed under `$defs` of every compiled document.
    defs: Value,
    /// path template -> lower-case method -> response key ("200", "default", ...) -> schema.
    operations: BTreeMap<String, BTreeMap<String, BTreeMap<String, LazySchema>>>,
    components: BTreeMap<String, LazySchema>,
    templates: Vec<PathTemplate>,
    dangling_refs: BTreeSet<String>,
}

/// A converted schema plus its validator, compiled on first use.
struct LazySchema {
    schema: Value,
    validator: OnceLock<Result<Validator, String>>,
}

impl LazySchema {
    fn new(schema: Value) -> Self {
        Self {
            schema,
            validator: OnceLock::new(),
        }
    }

    fn validator(&self, defs: &Value, what: &str) -> Result<&Validator, String> {
        self.validator
            .get_or_init(|| compile(&self.schema, defs, what))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl OpenApi {
    /// The contract, loaded once per test binary and shared by all tests.
    ///
    /// Panics if the OpenAPI file cannot be read or converted.
    pub fn get() -> &'static OpenApi {
        static SPEC: OnceLock<OpenApi> = OnceLock::new();
        SPEC.get_or_init(|| {
            let path = Self::default_path();
            Self::load(&path).unwrap_or_else(|e| panic!("{e}"))
        })
    }

    /// `$CREDITD_STRIPE_OPENAPI` if set, else `<CARGO_MANIFEST_DIR>/../shared/stripe-contract/openapi-subset.json`.
    pub fn default_path() -> PathBuf {
        match std::env::var_os(SPEC_PATH_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("shared")
                .join("stripe-contract")
                .join("openapi-subset.json"),
        }
    }

    /// Reads and converts an OpenAPI file (uncached; tests normally use [`OpenApi::get`]).
    pub fn load(path: &Path) -> Result<OpenApi, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read Stripe OpenAPI contract {} (set {SPEC_PATH_ENV} to override): {e}",
                path.display()
            )
        })?;
        let spec: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
        Self::from_spec(&spec, &path.display().to_string())
    }

    /// Converts an already parsed OpenAPI document; `source` names it in messages.
    pub fn from_spec(spec: &Value, source: &str) -> Result<OpenApi, String> {
        let empty = Map::new();
        let raw_components = spec
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut conv = Converter {
            components: raw_components,
            dangling: BTreeSet::new(),
        };

        let mut defs = Map::new();
        let mut components = BTreeMap::new();
        for (name, schema) in raw_components {
            let converted = conv.schema(schema, &format!("#/components/schemas/{name}"))?;
            defs.insert(name.clone(), converted);
            components.insert(
                name.clone(),
                LazySchema::new(json!({ "$ref": def_ref(name) })),
            );
        }

        let paths = spec
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("{source}: no `paths` object"))?;
        let mut operations = BTreeMap::new();
        let mut templates = Vec::new();
        for (template, item) in paths {
            let mut methods = BTreeMap::new();
            for method in HTTP_METHODS {
                let Some(op) = item.get(method) else { continue };
                let mut responses = BTreeMap::new();
                let raw_responses = op
                    .get("responses")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                for (code, response) in raw_responses {
                    let at = format!("paths.{template}.{method}.responses.{code}");
                    if response.get("$ref").is_some() {
                        return Err(format!("{at}: response $refs are not supported"));
                    }
                    // Responses without a JSON body have nothing to validate.
                    let Some(schema) = response.pointer("/content/application~1json/schema") else {
                        continue;
                    };
                    responses.insert(code.clone(), LazySchema::new(conv.schema(schema, &at)?));
                }
                methods.insert(method.to_string(), responses);
            }
            templates.push(PathTemplate::parse(template));
            operations.insert(template.clone(), methods);
        }

        Ok(OpenApi {
            source: source.to_string(),
            document: spec.clone(),
            defs: Value::Object(defs),
            operations,
            components,
            templates,
            dangling_refs: conv.dangling,
        })
    }

    /// Where the contract was loaded from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The unconverted OpenAPI document (parameters and request bodies are not converted).
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Every `(METHOD, path template)` pair in the contract, e.g. `("GET", "/v1/customers")`.
    pub fn operations(&self) -> Vec<(String, &str)> {
        self.operations
            .iter()
            .flat_map(|(template, methods)| {
                methods
                    .keys()
                    .map(move |m| (m.to_ascii_uppercase(), template.as_str()))
            })
            .collect()
    }

    /// Every path template in the contract, e.g. `"/v1/customers/{customer}"`.
    pub fn path_templates(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(|t| t.text.as_str())
    }

    /// Names of `components.schemas`.
    pub fn component_names(&self) -> impl Iterator<Item = &str> {
        self.components.keys().map(String::as_str)
    }

    /// Schemas that are referenced but absent from the subset (accepted as any JSON object).
    pub fn dangling_refs(&self) -> &BTreeSet<String> {
        &self.dangling_refs
    }

    /// Compiles every validator now; returns all compilation failures.
    pub fn compile_all(&self) -> Result<(), String> {
        let mut failures = Vec::new();
        for (name, lazy) in &self.components {
            if let Err(e) = lazy.validator(&self.defs, &format!("component {name:?}")) {
                failures.push(e);
            }
        }
        for (template, methods) in &self.operations {
            for (method, responses) in methods {
                for (code, lazy) in responses {
                    let what = format!("{} {template} response {code:?}", method.to_uppercase());
                    if let Err(e) = lazy.validator(&self.defs, &what) {
                        failures.push(e);
                    }
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n"))
        }
    }

    /// Validates a response body for an operation.
    ///
    /// `method` like `"GET"`/`"POST"`/`"DELETE"` (any case), `path_template` exactly as in the
    /// spec (e.g. `"/v1/customers/{customer}"`), `status` the HTTP status. A 2xx status uses the
    /// operation's `"200"` response (or the exact code, if the spec lists it); any other status
    /// uses `"default"` (Stripe's error envelope). The `Err` is a readable report naming the
    /// operation, every validation error with its instance path, and the (truncated) body.
    pub fn validate_response(
        &self,
        method: &str,
        path_template: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), String> {
        let method_upper = method.to_ascii_uppercase();
        let Some(methods) = self.operations.get(path_template) else {
            return Err(format!(
                "no path {path_template:?} in the Stripe OpenAPI contract ({}); known paths:\n  {}",
                self.source,
                self.path_templates().collect::<Vec<_>>().join("\n  ")
            ));
        };
        let Some(responses) = methods.get(&method.to_ascii_lowercase()) else {
            return Err(format!(
                "the Stripe OpenAPI contract has no operation {method_upper} {path_template} \
                 (methods for this path: {})",
                methods
                    .keys()
                    .map(|m| m.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let exact = status.to_string();
        let key = if responses.contains_key(&exact) {
            exact
        } else if (200..300).contains(&status) {
            "200".to_string()
        } else {
            "default".to_string()
        };
        let what = format!("{method_upper} {path_template} -> HTTP {status} (response {key:?})");
        let Some(lazy) = responses.get(&key) else {
            return Err(format!(
                "{what}: the contract declares no JSON response {key:?} for this operation \
                 (declared: {})",
                responses.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let validator = lazy.validator(&self.defs, &what)?;
        check(validator, &what, body)
    }

    /// Validates a body against a named component schema, e.g. `"customer"`, `"error"`.
    pub fn validate_component(&self, name: &str, body: &Value) -> Result<(), String> {
        let Some(lazy) = self.components.get(name) else {
            return Err(format!(
                "no component schema {name:?} in the Stripe OpenAPI contract; known: {}",
                self.component_names().collect::<Vec<_>>().join(", ")
            ));
        };
        let what = format!("component schema {name:?}");
        let validator = lazy.validator(&self.defs, &what)?;
        check(validator, &what, body)
    }

    /// The spec path template matching a concrete request path, e.g.
    /// `"/v1/customers/cus_123/balance_transactions"` ->
    /// `"/v1/customers/{customer}/balance_transactions"`.
    ///
    /// Query string and fragment are ignored, as is a leading `scheme://authority`. Literal
    /// segments win over parameters (`/v1/x/search` beats `/v1/x/{id}`). `None` if nothing matches.
    pub fn match_path(&self, concrete_path: &str) -> Option<&str> {
        let path = strip_to_path(concrete_path);
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        self.templates
            .iter()
            .filter_map(|t| t.score(&segments).map(|score| (score, t)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, t)| t.text.as_str())
    }

    /// [`match_path`](Self::match_path) + [`validate_response`](Self::validate_response),
    /// panicking with the report on failure.
    #[track_caller]
    pub fn assert_response(&self, method: &str, concrete_path: &str, status: u16, body: &Value) {
        let Some(template) = self.match_path(concrete_path) else {
            panic!(
                "no path template in the Stripe OpenAPI contract ({}) matches {method} {concrete_path:?}",
                self.source
            );
        };
        if let Err(report) = self.validate_response(method, template, status, body) {
            panic!("response to {method} {concrete_path} violates Stripe's contract\n{report}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation and reporting

fn compile(schema: &Value, defs: &Value, what: &str) -> Result<Validator, String> {
    let mut doc = match schema {
        Value::Object(m) => m.clone(),
        Value::Bool(true) => Map::new(),
        Value::Bool(false) => {
            let mut m = Map::new();
            m.insert("not".into(), json!({}));
            m
        }
        other => return Err(format!("{what}: schema is not an object: {other}")),
    };
    if doc.contains_key("$defs") || doc.contains_key("$schema") {
        return Err(format!("{what}: schema unexpectedly has $defs/$schema"));
    }
    doc.insert("$schema".into(), Value::String(DIALECT.into()));
    doc.insert("$defs".into(), defs.clone());
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(false)
        .build(&Value::Object(doc))
        .map_err(|e| format!("{what}: cannot compile the converted schema: {e}"))
}

fn check(validator: &Validator, what: &str, body: &Value) -> Result<(), String> {
    if validator.is_valid(body) {
        return Ok(());
    }
    let errors: Vec<_> = validator.iter_errors(body).collect();
    let mut report = format!(
        "Stripe OpenAPI contract violation: {what}\n{} validation error(s):\n",
        errors.len()
    );
    for (i, error) in errors.iter().take(MAX_ERRORS).enumerate() {
        let _ = write!(report, "{:>3}. ", i + 1);
        describe(&mut report, error, 0);
    }
    if errors.len() > MAX_ERRORS {
        let _ = writeln!(report, "     ... and {} more", errors.len() - MAX_ERRORS);
    }
    report.push_str("body:\n");
    report.push_str(&truncated_body(body));
    Err(report)
}

fn describe(out: &mut String, error: &jsonschema::ValidationError<'_>, depth: usize) {
    use jsonschema::error::ValidationErrorKind as K;
    let path = match error.instance_path.as_str() {
        "" => "(root)",
        p => p,
    };
    let _ = writeln!(
        out,
        "at {path}: {}   [schema {}]",
        truncate(&error.to_string(), MESSAGE_LIMIT),
        error.schema_path.as_str()
    );
    let context = match &error.kind {
        K::AnyOf { context } | K::OneOfNotValid { context } => context,
        _ => return,
    };
    let indent = "     ".repeat(depth + 1);
    if depth >= MAX_CONTEXT_DEPTH {
        let _ = writeln!(out, "{indent}(alternatives not shown: nested too deep)");
        return;
    }
    for (i, alternative) in context.iter().enumerate() {
        // The `{"type":"null"}` branch added for `nullable` only adds noise.
        if alternative.len() == 1 && is_null_type_error(&alternative[0]) {
            continue;
        }
        let _ = writeln!(out, "{indent}alternative #{i} fails with:");
        for e in alternative {
            let _ = write!(out, "{indent}  - ");
            describe(out, e, depth + 1);
        }
    }
}

fn is_null_type_error(error: &jsonschema::ValidationError<'_>) -> bool {
    matches!(
        &error.kind,
        jsonschema::error::ValidationErrorKind::Type {
            kind: jsonschema::error::TypeKind::Single(jsonschema::JsonType::Null)
        }
    )
}

fn truncated_body(body: &Value) -> String {
    let pretty = serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
    if pretty.len() <= BODY_LIMIT {
        return pretty;
    }
    format!(
        "{}\n... (truncated; {} bytes in total)",
        &pretty[..floor_char_boundary(&pretty, BODY_LIMIT)],
        pretty.len()
    )
}

fn truncate(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        s.to_string()
    } else {
        format!("{} ...", &s[..floor_char_boundary(s, limit)])
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

// ---------------------------------------------------------------------------------------------
// OpenAPI 3.0 schema -> JSON Schema 2020-12

const REF_PREFIX: &str = "#/components/schemas/";

/// Keys that carry no validation meaning for response bodies (besides `x-*`).
const DROPPED_KEYS: [&str; 12] = [
    "description",
    "title",
    "format",
    "example",
    "examples",
    "externalDocs",
    "deprecated",
    "readOnly",
    "writeOnly",
    "xml",
    "discriminator",
    "nullable",
];

struct Converter<'a> {
    components: &'a Map<String, Value>,
    dangling: BTreeSet<String>,
}

impl Converter<'_> {
    /// The converted `$ref` target, or `None` for a reference to an omitted schema.
    fn reference(&mut self, reference: &str, at: &str) -> Result<Option<Value>, String> {
        let Some(name) = reference.strip_prefix(REF_PREFIX) else {
            return Err(format!("{at}: unsupported $ref {reference:?}"));
        };
        let name = name.replace("~1", "/").replace("~0", "~");
        if self.components.contains_key(&name) {
            Ok(Some(json!({ "$ref": def_ref(&name) })))
        } else {
            self.dangling.insert(name);
            Ok(None)
        }
    }

    fn is_dangling(&self, schema: &Value) -> bool {
        schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(REF_PREFIX))
            .is_some_and(|name| {
                let name = name.replace("~1", "/").replace("~0", "~");
                !self.components.contains_key(&name)
            })
    }

    fn schemas(&mut self, list: &Value, at: &str) -> Result<Value, String> {
        let items = list
            .as_array()
            .ok_or_else(|| format!("{at}: expected an array of schemas"))?;
        let converted = items
            .iter()
            .enumerate()
            .map(|(i, s)| self.schema(s, &format!("{at}/{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Value::Array(converted))
    }

    fn schema(&mut self, schema: &Value, at: &str) -> Result<Value, String> {
        let obj = match schema {
            Value::Bool(_) => return Ok(schema.clone()),
            Value::Object(obj) => obj,
            other => return Err(format!("{at}: a schema must be an object, got {other}")),
        };
        let nullable = obj.get("nullable") == Some(&Value::Bool(true));

        if let Some(reference) = obj.get("$ref") {
            // OpenAPI 3.0 ignores the siblings of `$ref`; `nullable` is honoured anyway.
            let reference = reference
                .as_str()
                .ok_or_else(|| format!("{at}: $ref must be a string"))?;
            return Ok(match self.reference(reference, at)? {
                Some(target) if nullable => json!({ "anyOf": [target, { "type": "null" }] }),
                Some(target) => target,
                None if nullable => json!({ "type": ["object", "null"] }),
                None => json!({ "type": "object" }),
            });
        }

        let mut out = Map::new();
        // An enum Stripe marks `x-stripeBypassValidation` is open: values beyond the listed ones
        // occur (a preview `alert_type` such as `credit_balance_threshold`).
        let open_enum = obj.get("x-stripeBypassValidation") == Some(&Value::Bool(true));
        for (key, value) in obj {
            if key.starts_with("x-")
                || DROPPED_KEYS.contains(&key.as_str())
                || (open_enum && key == "enum")
            {
                continue;
            }
            let sub = format!("{at}/{key}");
            let converted = match key.as_str() {
                "properties" => {
                    let props = value
                        .as_object()
                        .ok_or_else(|| format!("{sub}: expected an object"))?;
                    let mut converted = Map::new();
                    for (name, prop) in props {
                        converted
                            .insert(name.clone(), self.schema(prop, &format!("{sub}/{name}"))?);
                    }
                    Value::Object(converted)
                }
                "additionalProperties" | "items" | "not" => self.schema(value, &sub)?,
                "anyOf" | "allOf" => self.schemas(value, &sub)?,
                "oneOf" => {
                    let converted = self.schemas(value, &sub)?;
                    // Omitted schemas all become "any object", which would make several
                    // branches match at once; `anyOf` keeps the intent.
                    let has_dangling = value
                        .as_array()
                        .is_some_and(|alts| alts.iter().any(|a| self.is_dangling(a)));
                    if has_dangling {
                        if obj.contains_key("anyOf") {
                            return Err(format!("{at}: cannot relax oneOf next to anyOf"));
                        }
                        out.insert("anyOf".into(), converted);
                        continue;
                    }
                    converted
                }
                _ => value.clone(),
            };
            out.insert(key.clone(), converted);
        }

        // OpenAPI 3.0 (draft 4 style) boolean exclusiveMinimum/exclusiveMaximum.
        for (exclusive, bound) in [
            ("exclusiveMinimum", "minimum"),
            ("exclusiveMaximum", "maximum"),
        ] {
            if let Some(Value::Bool(flag)) = out.get(exclusive).cloned() {
                out.remove(exclusive);
                if flag && let Some(limit) = out.remove(bound) {
                    out.insert(exclusive.into(), limit);
                }
            }
        }

        if nullable {
            return Ok(make_nullable(out));
        }
        Ok(Value::Object(out))
    }
}

/// Makes a converted (non-`$ref`) schema also accept `null`.
fn make_nullable(mut out: Map<String, Value>) -> Value {
    const COMPOSITE: [&str; 5] = ["anyOf", "oneOf", "allOf", "not", "$ref"];
    if out.is_empty() {
        return Value::Object(out);
    }
    let composite = COMPOSITE.iter().any(|k| out.contains_key(*k));
    if !composite && out.contains_key("type") {
        let types = match out.remove("type") {
            Some(Value::String(t)) => vec![Value::String(t)],
            Some(Value::Array(ts)) => ts,
            Some(other) => vec![other],
            None => Vec::new(),
        };
        let mut types = types;
        if !types.iter().any(|t| t == "null") {
            types.push(Value::String("null".into()));
        }
        out.insert("type".into(), Value::Array(types));
        if let Some(Value::Array(options)) = out.get_mut("enum")
            && !options.contains(&Value::Null)
        {
            options.push(Value::Null);
        }
        return Value::Object(out);
    }
    if out.len() == 1
        && let Some(Value::Array(alternatives)) = out.get_mut("anyOf")
    {
        alternatives.push(json!({ "type": "null" }));
        return Value::Object(out);
    }
    json!({ "anyOf": [Value::Object(out), { "type": "null" }] })
}

/// `#/$defs/<name>` with the name escaped as a JSON pointer token inside a URI fragment.
fn def_ref(name: &str) -> String {
    let token = name.replace('~', "~0").replace('/', "~1");
    let mut encoded = String::with_capacity(token.len());
    for byte in token.bytes() {
        let c = byte as char;
        if c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c) {
            encoded.push(c);
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    format!("#/$defs/{encoded}")
}

// ---------------------------------------------------------------------------------------------
// Path templates

struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

enum Segment {
    Literal(String),
    /// `{name}`, possibly with literal text around it (`{id}.json`).
    Param {
        prefix: String,
        suffix: String,
    },
}

impl PathTemplate {
    fn parse(text: &str) -> Self {
        let segments = text
            .trim_start_matches('/')
            .split('/')
            .map(|seg| match (seg.find('{'), seg.rfind('}')) {
                (Some(open), Some(close)) if open < close => Segment::Param {
                    prefix: seg[..open].to_string(),
                    suffix: seg[close + 1..].to_string(),
                },
                _ => Segment::Literal(seg.to_string()),
            })
            .collect();
        Self {
            text: text.to_string(),
            segments,
        }
    }

    /// Per-segment specificity (2 literal, 1 affixed parameter, 0 bare parameter), or `None`.
    fn score(&self, concrete: &[&str]) -> Option<Vec<u8>> {
        if concrete.len() != self.segments.len() {
            return None;
        }
        self.segments
            .iter()
            .zip(concrete)
            .map(|(segment, value)| match segment {
                Segment::Literal(l) => (l == value).then_some(2),
                Segment::Param { prefix, suffix } => {
                    let ok = value.len() > prefix.len() + suffix.len()
                        && value.starts_with(prefix.as_str())
                        && value.ends_with(suffix.as_str());
                    ok.then_some(u8::from(!prefix.is_empty() || !suffix.is_empty()))
                }
            })
            .collect()
    }
}

/// Drops `scheme://authority`, the query string and the fragment.
fn strip_to_path(s: &str) -> &str {
    let s = match s.find("://") {
        Some(i) => {
            let rest = &s[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => s,
    };
    let end = s.find(['?', '#']).unwrap_or(s.len());
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::OpenApi;

    #[test]
    fn openapi_contract_loads_and_every_template_matches_itself() {
        let spec = OpenApi::get();
        for template in spec.path_templates() {
            assert_eq!(spec.match_path(template), Some(template));
        }
    }
}
