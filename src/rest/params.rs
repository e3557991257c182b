//! Stripe-style request parameters.
//!
//! Stripe's API accepts `application/x-www-form-urlencoded` bodies (POST) and
//! query strings (GET) that encode nested objects and arrays with a bracket
//! syntax: `metadata[order_id]=6735`, `expand[]=customer`,
//! `items[0][price]=price_123`. Axum's stock extractors do not understand that
//! syntax, and Stripe rejects any parameter it does not recognise, so this
//! module does both jobs in one place:
//!
//! 1. [`parse`] turns the raw bytes into a tree of [`ParamValue`]s, rejecting
//!    malformed keys, conflicting assignments and oversized input.
//! 2. Handlers then pull typed values out of the resulting [`Params`] with the
//!    `take_*` methods and finally call [`Params::finish`], which reports the
//!    first key nobody took as [`ParamError::Unknown`].
//!
//! Every error carries the full Stripe-style path of the offending parameter
//! (for example `filter[applicability_scope][prices][0][id]`), which the REST
//! layer copies into the `param` field of its error response.
//!
//! # Representation
//!
//! A bracket segment always creates a map entry, even when it looks like an
//! index: `a[0]=x` is stored as a map with key `"0"`. This keeps metadata keys
//! that happen to be numeric (`metadata[0]=x`) intact, and
//! [`Params::take_list`] turns a map whose keys are all decimal indices into a
//! list ordered by index. A container that received at least one `[]` append
//! becomes a [`ParamValue::List`] directly.

use std::collections::BTreeMap;

use percent_encoding::percent_decode;

/// Maximum number of `key=value` pairs accepted in one request.
pub const MAX_PAIRS: usize = 1_000;

/// Maximum number of bracketed segments in one key (`a[1][2]…[8]`).
pub const MAX_DEPTH: usize = 8;

/// Why a request's parameters were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A parameter nobody asked for was present.
    #[error("Received unknown parameter: {0}")]
    Unknown(String),
    /// A required parameter was absent.
    #[error("Missing required param: {0}.")]
    Missing(String),
    /// The value is not a base-10 integer that fits an `i64`.
    #[error("Invalid integer: {value}")]
    InvalidInteger { param: String, value: String },
    /// The value is neither `true` nor `false`.
    #[error("Invalid boolean: {value}")]
    InvalidBoolean { param: String, value: String },
    /// The value has the wrong shape (a string where an object was expected,
    /// an object where an array was expected, and so on).
    #[error("Invalid {expected}")]
    InvalidType {
        param: String,
        expected: &'static str,
    },
    /// The encoded input itself could not be understood.
    #[error("{}", malformed_message(param, reason))]
    Malformed { param: String, reason: String },
    /// A name or value breaks the rule every string input obeys
    /// ([`crate::domain::text::check_input`]: no NUL, a maximum length).
    #[error("{message}")]
    Invalid { param: String, message: String },
}

fn malformed_message(param: &str, reason: &str) -> String {
    if param.is_empty() {
        format!("Invalid request parameters: {reason}")
    } else {
        format!("Invalid parameter {param}: {reason}")
    }
}

impl ParamError {
    /// The Stripe-style path of the offending parameter. Empty when the error
    /// concerns the request as a whole (for example too many pairs).
    pub fn param(&self) -> &str {
        match self {
            ParamError::Unknown(param) | ParamError::Missing(param) => param,
            ParamError::InvalidInteger { param, .. }
            | ParamError::InvalidBoolean { param, .. }
            | ParamError::InvalidType { param, .. }
            | ParamError::Malformed { param, .. }
            | ParamError::Invalid { param, .. } => param,
        }
    }

    /// The value for the `code` field of a Stripe error response.
    ///
    /// Stripe has no dedicated code for bad booleans, wrong shapes or
    /// undecodable input, so those map to the generic `parameter_invalid`.
    pub fn stripe_code(&self) -> &'static str {
        match self {
            ParamError::Unknown(_) => "parameter_unknown",
            ParamError::Missing(_) => "parameter_missing",
            ParamError::InvalidInteger { .. } => "parameter_invalid_integer",
            ParamError::InvalidBoolean { .. }
            | ParamError::InvalidType { .. }
            | ParamError::Malformed { .. }
            | ParamError::Invalid { .. } => "parameter_invalid",
        }
    }

    fn malformed(param: impl Into<String>, reason: impl Into<String>) -> Self {
        ParamError::Malformed {
            param: param.into(),
            reason: reason.into(),
        }
    }

    fn invalid_type(param: impl Into<String>, expected: &'static str) -> Self {
        ParamError::InvalidType {
            param: param.into(),
            expected,
        }
    }
}

/// Turns an optional value into a required one, reporting
/// [`ParamError::Missing`] with `param` when it is absent.
pub fn require<T>(value: Option<T>, param: &str) -> Result<T, ParamError> {
    value.ok_or_else(|| ParamError::Missing(param.to_owned()))
}

/// One node of the parameter tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// A leaf value, already percent-decoded.
    Str(String),
    /// A nested object (`a[b]=…`, or `a[0]=…` before it is read as a list).
    Map(Params),
    /// A list built from `a[]=…` appends, in order.
    List(Vec<ParamValue>),
}

impl ParamValue {
    /// Reads this value as a nested object whose parameter path is `path`,
    /// e.g. for the elements of `prices[0][id]=…` returned by
    /// [`Params::take_list`]. The returned [`Params`] must be finished by the
    /// caller.
    pub fn into_params(self, path: String) -> Result<Params, ParamError> {
        match self {
            ParamValue::Map(mut params) => {
                params.path = path;
                Ok(params)
            }
            ParamValue::Str(_) | ParamValue::List(_) => {
                Err(ParamError::invalid_type(path, "object"))
            }
        }
    }

    /// Reads this value as a string; `path` is used for the error.
    pub fn into_str(self, path: &str) -> Result<String, ParamError> {
        match self {
            ParamValue::Str(value) => Ok(value),
            ParamValue::Map(_) | ParamValue::List(_) => {
                Err(ParamError::invalid_type(path, "string"))
            }
        }
    }

    /// Reads this value as a list: either a `[]`-built list or a map whose
    /// keys are all decimal indices (ordered by index). `path` is used for
    /// the error.
    pub fn into_list(self, path: &str) -> Result<Vec<ParamValue>, ParamError> {
        match self {
            ParamValue::List(items) => Ok(items),
            ParamValue::Map(params) => indexed_values(params.entries)
                .ok_or_else(|| ParamError::invalid_type(path, "array")),
            ParamValue::Str(_) => Err(ParamError::invalid_type(path, "array")),
        }
    }
}

/// The value of a parameter that may be an object or the empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOrEmpty {
    /// `key[sub]=…`: the nested object, to be finished by the caller.
    Map(Params),
    /// `key=`: Stripe's way of saying "clear this object".
    Empty,
}

/// The value of a string-to-string object such as `metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMapOrEmpty {
    /// `metadata[k]=v` pairs, sorted by key.
    Map(Vec<(String, String)>),
    /// `metadata=`: clear the whole object.
    Empty,
}

/// A map of parameters, either the whole request or a nested object, that
/// tracks which keys a handler has consumed.
///
/// Every `take_*` method removes the key it reads; [`Params::finish`] then
/// fails with [`ParamError::Unknown`] if anything is left over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// Stripe-style path of this map; empty for the top level.
    path: String,
    entries: BTreeMap<String, ParamValue>,
}

impl Params {
    /// The Stripe-style path of this map (`""` at the top level,
    /// `filter[applicability_scope]` for a nested object).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full path of `key` inside this map, as used in error messages.
    pub fn param_path(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    /// Whether no keys are left to take.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is present and not yet taken.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Removes and returns the raw value of `key`, whatever its shape.
    pub fn take(&mut self, key: &str) -> Option<ParamValue> {
        self.entries.remove(key)
    }

    /// Takes `key` as a string.
    pub fn take_str(&mut self, key: &str) -> Result<Option<String>, ParamError> {
        let param = self.param_path(key);
        self.take(key)
            .map(|value| value.into_str(&param))
            .transpose()
    }

    /// Takes `key` as a base-10 `i64`: an optional `-` followed by ASCII
    /// digits only.
    pub fn take_i64(&mut self, key: &str) -> Result<Option<i64>, ParamError> {
        let Some(value) = self.take_scalar(key, "integer")? else {
            return Ok(None);
        };
        integer(&self.param_path(key), value).map(Some)
    }

    /// Takes `key` as a boolean: exactly `true` or `false`.
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, ParamError> {
        let Some(value) = self.take_scalar(key, "boolean")? else {
            return Ok(None);
        };
        match value.as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(ParamError::InvalidBoolean {
                param: self.param_path(key),
                value,
            }),
        }
    }

    /// Takes `key` as a nested object, or [`MapOrEmpty::Empty`] for `key=`.
    ///
    /// The returned child [`Params`] knows its own path and **must be
    /// finished by the caller** with [`Params::finish`]; unknown keys inside
    /// it are not reported otherwise.
    pub fn take_map(&mut self, key: &str) -> Result<Option<MapOrEmpty>, ParamError> {
        let param = self.param_path(key);
        match self.take(key) {
            None => Ok(None),
            Some(ParamValue::Str(value)) if value.is_empty() => Ok(Some(MapOrEmpty::Empty)),
            Some(value) => value
                .into_params(param)
                .map(|map| Some(MapOrEmpty::Map(map))),
        }
    }

    /// Takes `key` as a list: `key[]=…` appends or `key[0]=…` indices (which
    /// may be sparse or out of order; elements come back in index order).
    /// Elements are returned as-is; see [`ParamValue::into_params`] and
    /// [`ParamValue::into_str`]. Their paths are `key[0]`, `key[1]`, ….
    pub fn take_list(&mut self, key: &str) -> Result<Option<Vec<ParamValue>>, ParamError> {
        let param = self.param_path(key);
        self.take(key)
            .map(|value| value.into_list(&param))
            .transpose()
    }

    /// Takes `key` as a list of strings; a non-string element is reported as
    /// [`ParamError::InvalidType`] with the element's path (`key[i]`).
    pub fn take_str_list(&mut self, key: &str) -> Result<Option<Vec<String>>, ParamError> {
        let Some(items) = self.take_list(key)? else {
            return Ok(None);
        };
        let param = self.param_path(key);
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| item.into_str(&join_path(&param, &index.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Takes `key` as a string-to-string object such as `metadata`, or
    /// [`StringMapOrEmpty::Empty`] for `key=`. A nested object or list under
    /// one of its keys is reported with that key's path (`metadata[k]`).
    pub fn take_string_map(&mut self, key: &str) -> Result<Option<StringMapOrEmpty>, ParamError> {
        let Some(map) = self.take_map(key)? else {
            return Ok(None);
        };
        let params = match map {
            MapOrEmpty::Empty => return Ok(Some(StringMapOrEmpty::Empty)),
            MapOrEmpty::Map(params) => params,
        };
        let path = params.path;
        params
            .entries
            .into_iter()
            .map(|(name, value)| {
                let value = value.into_str(&join_path(&path, &name))?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|pairs| Some(StringMapOrEmpty::Map(pairs)))
    }

    /// Succeeds only if every key has been taken; otherwise reports the
    /// first leftover key (in sorted order) as [`ParamError::Unknown`] with
    /// its full path. Child maps from [`Params::take_map`] need their own
    /// call.
    pub fn finish(self) -> Result<(), ParamError> {
        match self.entries.keys().next() {
            None => Ok(()),
            Some(key) => Err(ParamError::Unknown(join_path(&self.path, key))),
        }
    }

    /// Takes `key`, requiring a string; `expected` names the wanted type in
    /// the error when the value is an object or list.
    fn take_scalar(
        &mut self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<String>, ParamError> {
        match self.take(key) {
            None => Ok(None),
            Some(ParamValue::Str(value)) => Ok(Some(value)),
            Some(_) => Err(ParamError::invalid_type(self.param_path(key), expected)),
        }
    }
}

/// `join_path("", "a") == "a"`, `join_path("a[b]", "c") == "a[b][c]"`.
fn join_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}[{key}]")
    }
}

/// Reads a leaf value (of the parameter at path `param`) as a Stripe integer.
pub fn integer(param: &str, value: String) -> Result<i64, ParamError> {
    match parse_i64(&value) {
        Some(number) => Ok(number),
        None => Err(ParamError::InvalidInteger {
            param: param.to_owned(),
            value,
        }),
    }
}

/// Parses a Stripe integer: optional `-`, then one or more ASCII digits.
fn parse_i64(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Reads a map key as a list index: canonical decimal (`0`, `7`, `12`, but
/// not `07`, `-1` or `+1`) that fits a `usize`.
fn parse_index(key: &str) -> Option<usize> {
    let canonical = key == "0" || !key.starts_with('0');
    if key.is_empty() || !canonical || !key.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

/// The values of a map whose keys are all indices, in index order; `None` if
/// any key is not an index.
fn indexed_values(entries: BTreeMap<String, ParamValue>) -> Option<Vec<ParamValue>> {
    let mut indexed = entries
        .into_iter()
        .map(|(key, value)| parse_index(&key).map(|index| (index, value)))
        .collect::<Option<Vec<_>>>()?;
    indexed.sort_by_key(|(index, _)| *index);
    Some(indexed.into_iter().map(|(_, value)| value).collect())
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses a form-encoded body or query string into a [`Params`] tree.
///
/// Pairs are separated by `&`; the first `=` separates key from value (a pair
/// without `=` has an empty value); empty pairs are skipped. Keys and values
/// are percent-decoded as UTF-8 with `+` meaning space, and only then is the
/// key split into its bracket path, so `metadata%5Bk%5D` equals `metadata[k]`.
///
/// Rejected as [`ParamError::Malformed`]: invalid UTF-8, malformed keys
/// (`a]b`, `a[b`, `a[b]c`, `[a]`), the same leaf given twice, a key used both
/// as a value and as an object or list, more than [`MAX_PAIRS`] pairs and
/// more than [`MAX_DEPTH`] bracketed segments in one key.
pub fn parse(raw: &[u8]) -> Result<Params, ParamError> {
    let mut root = Container::default();
    let pairs = raw
        .split(|&byte| byte == b'&')
        .filter(|pair| !pair.is_empty());
    for (count, pair) in pairs.enumerate() {
        if count >= MAX_PAIRS {
            return Err(ParamError::malformed(
                "",
                format!("more than {MAX_PAIRS} parameters"),
            ));
        }
        let (raw_key, raw_value) = split_pair(pair);
        let key = decode(raw_key)
            .map_err(|()| ParamError::malformed(decode_lossy(raw_key), "key is not valid UTF-8"))?;
        let value = decode(raw_value)
            .map_err(|()| ParamError::malformed(key.clone(), "value is not valid UTF-8"))?;
        crate::domain::text::check_input(&key, &value).map_err(|error| ParamError::Invalid {
            param: error.param.unwrap_or_default(),
            message: error.message,
        })?;
        let segments = split_key(&key)?;
        root.insert(&segments, value, &key)?;
    }
    Ok(root.into_params(String::new()))
}

/// Splits `key=value` on the first `=`; no `=` means an empty value.
fn split_pair(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|&byte| byte == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &[]),
    }
}

/// Form-decodes one component: `+` is a space, `%XX` is a byte, and the
/// result must be UTF-8.
fn decode(component: &[u8]) -> Result<String, ()> {
    let spaced = plus_to_space(component);
    percent_decode(&spaced)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| ())
}

/// Like [`decode`] but never fails; used to name a key in an error.
fn decode_lossy(component: &[u8]) -> String {
    percent_decode(&plus_to_space(component))
        .decode_utf8_lossy()
        .into_owned()
}

fn plus_to_space(component: &[u8]) -> Vec<u8> {
    component
        .iter()
        .map(|&byte| if byte == b'+' { b' ' } else { byte })
        .collect()
}

/// One step of a decoded key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `name` or `[name]`.
    Key(String),
    /// `[]`: append a new element.
    Append,
}

/// Splits `a[b][][c]` into `Key(a), Key(b), Append, Key(c)`.
fn split_key(key: &str) -> Result<Vec<Segment>, ParamError> {
    let malformed = |reason: &str| ParamError::malformed(key, reason);
    let (name, mut rest) = match key.find('[') {
        Some(at) => key.split_at(at),
        None => (key, ""),
    };
    if name.is_empty() {
        return Err(malformed("parameter name is empty"));
    }
    if name.contains(']') {
        return Err(malformed("unbalanced brackets"));
    }
    let mut segments = vec![Segment::Key(name.to_owned())];
    while !rest.is_empty() {
        let inner = rest
            .strip_prefix('[')
            .ok_or_else(|| malformed("unexpected text after `]`"))?;
        let close = inner
            .find(']')
            .ok_or_else(|| malformed("unbalanced brackets"))?;
        let segment = &inner[..close];
        if segment.contains('[') {
            return Err(malformed("unbalanced brackets"));
        }
        if segments.len() > MAX_DEPTH {
            return Err(malformed(&format!(
                "nested more than {MAX_DEPTH} levels deep"
            )));
        }
        segments.push(if segment.is_empty() {
            Segment::Append
        } else {
            Segment::Key(segment.to_owned())
        });
        rest = &inner[close + 1..];
    }
    Ok(segments)
}

/// A node of the tree while it is being built.
#[derive(Debug)]
enum Node {
    Str(String),
    Container(Container),
}

/// An object or list under construction. Every element is stored under a
/// string key; `is_list` records that `[]` was used on it, which also means
/// all its keys are indices.
#[derive(Debug, Default)]
struct Container {
    entries: BTreeMap<String, Node>,
    is_list: bool,
}

impl Container {
    /// Stores `value` at `segments` below this container; `key` is the full
    /// decoded key, for errors.
    fn insert(&mut self, segments: &[Segment], value: String, key: &str) -> Result<(), ParamError> {
        let Some((last, parents)) = segments.split_last() else {
            return Err(ParamError::malformed(key, "parameter name is empty"));
        };
        let mut container = self;
        for segment in parents {
            let slot = container.slot(segment, key)?;
            let node = container
                .entries
                .entry(slot)
                .or_insert_with(|| Node::Container(Container::default()));
            container = match node {
                Node::Container(child) => child,
                Node::Str(_) => return Err(conflict(key)),
            };
        }
        let slot = container.slot(last, key)?;
        match container.entries.get(&slot) {
            Some(Node::Str(_)) => Err(ParamError::malformed(key, "duplicate parameter")),
            Some(Node::Container(_)) => Err(conflict(key)),
            None => {
                container.entries.insert(slot, Node::Str(value));
                Ok(())
            }
        }
    }

    /// The entry key `segment` refers to in this container. `[]` picks the
    /// index after the highest one present and turns the container into a
    /// list; a named key is refused once the container is a list.
    fn slot(&mut self, segment: &Segment, key: &str) -> Result<String, ParamError> {
        match segment {
            Segment::Key(name) => {
                if self.is_list && parse_index(name).is_none() {
                    return Err(list_map_conflict(key));
                }
                Ok(name.clone())
            }
            Segment::Append => {
                let next = self.next_index().ok_or_else(|| list_map_conflict(key))?;
                self.is_list = true;
                Ok(next.to_string())
            }
        }
    }

    /// One past the highest index key, or `None` if some key is not an index
    /// (or the index would overflow).
    fn next_index(&self) -> Option<usize> {
        self.entries
            .keys()
            .map(|key| parse_index(key))
            .try_fold(0usize, |next, index| Some(next.max(index?.checked_add(1)?)))
    }

    /// Converts the finished container into the public tree, giving nested
    /// maps their Stripe-style paths.
    fn into_value(self, path: String) -> ParamValue {
        if self.is_list {
            let items = self
                .into_indexed()
                .into_iter()
                .enumerate()
                .map(|(position, node)| node.into_value(join_path(&path, &position.to_string())))
                .collect();
            ParamValue::List(items)
        } else {
            ParamValue::Map(self.into_params(path))
        }
    }

    fn into_params(self, path: String) -> Params {
        let entries = self
            .entries
            .into_iter()
            .map(|(key, node)| {
                let value = node.into_value(join_path(&path, &key));
                (key, value)
            })
            .collect();
        Params { path, entries }
    }

    /// The elements of a list container in index order.
    fn into_indexed(self) -> Vec<Node> {
        let mut indexed: Vec<(usize, Node)> = self
            .entries
            .into_iter()
            .filter_map(|(key, node)| parse_index(&key).map(|index| (index, node)))
            .collect();
        indexed.sort_by_key(|(index, _)| *index);
        indexed.into_iter().map(|(_, node)| node).collect()
    }
}

impl Node {
    fn into_value(self, path: String) -> ParamValue {
        match self {
            Node::Str(value) => ParamValue::Str(value),
            Node::Container(container) => container.into_value(path),
        }
    }
}

fn conflict(key: &str) -> ParamError {
    ParamError::malformed(
        key,
        "parameter is used both as a value and as an object or array",
    )
}

fn list_map_conflict(key: &str) -> ParamError {
    ParamError::malformed(key, "parameter is used both as an array and as an object")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Params {
        match parse(raw.as_bytes()) {
            Ok(params) => params,
            Err(error) => panic!("parse({raw:?}) failed: {error:?}"),
        }
    }

    fn malformed_param(raw: &str) -> String {
        match parse(raw.as_bytes()) {
            Err(ParamError::Malformed { param, .. }) => param,
            other => panic!("parse({raw:?}) should be Malformed, got {other:?}"),
        }
    }

    fn metadata(raw: &str) -> Option<StringMapOrEmpty> {
        let mut params = parsed(raw);
        let value = params.take_string_map("metadata").expect("metadata");
        params.finish().expect("finish");
        value
    }

    fn pairs(list: &[(&str, &str)]) -> StringMapOrEmpty {
        StringMapOrEmpty::Map(
            list.iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        )
    }

    fn strings(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|item| item.to_string()).collect())
    }

    #[test]
    fn empty_input_is_empty_params() {
        let params = parsed("");
        assert!(params.is_empty());
        assert_eq!(params.path(), "");
        assert_eq!(params.finish(), Ok(()));
        assert!(parsed("&&").is_empty());
    }

    #[test]
    fn simple_pairs_and_empty_pairs_are_skipped() {
        let mut params = parsed("a=1&&b=2&c&d=x=y");
        assert!(params.contains("a"));
        assert!(!params.contains("z"));
        assert_eq!(params.take_str("a"), Ok(Some("1".into())));
        assert_eq!(params.take_str("b"), Ok(Some("2".into())));
        assert_eq!(params.take_str("c"), Ok(Some(String::new())));
        assert_eq!(params.take_str("d"), Ok(Some("x=y".into())));
        assert_eq!(params.take_str("missing"), Ok(None));
        assert!(!params.contains("a"));
        assert_eq!(params.finish(), Ok(()));
    }

    #[test]
    fn raw_and_encoded_brackets_are_equivalent() {
        let expected = Some(pairs(&[("k", "v")]));
        assert_eq!(metadata("metadata[k]=v"), expected);
        assert_eq!(metadata("metadata%5Bk%5D=v"), expected);
        assert_eq!(metadata("metadata%5bk%5d=v"), expected);
    }

    #[test]
    fn plus_and_percent_20_are_spaces() {
        let mut params = parsed("name=Jenny+Rosen&description=a%20b&my+key=1&x=%2B");
        assert_eq!(params.take_str("name"), Ok(Some("Jenny Rosen".into())));
        assert_eq!(params.take_str("description"), Ok(Some("a b".into())));
        assert_eq!(params.take_str("my key"), Ok(Some("1".into())));
        assert_eq!(params.take_str("x"), Ok(Some("+".into())));
        assert_eq!(params.finish(), Ok(()));
    }

    #[test]
    fn percent_decoding_handles_utf8_and_rejects_invalid() {
        let mut params = parsed("metadata[caf%C3%A9]=%E2%9C%93");
        assert_eq!(
            params.take_string_map("metadata"),
            Ok(Some(pairs(&[("café", "✓")])))
        );
        assert_eq!(malformed_param("a=%FF"), "a");
        assert_eq!(malformed_param("%FF=1"), "\u{FFFD}");
    }

    #[test]
    fn appended_and_indexed_lists_agree() {
        for raw in [
            "expand[]=a&expand[]=b",
            "expand[0]=a&expand[1]=b",
            "expand%5B%5D=a&expand%5B%5D=b",
        ] {
            let mut params = parsed(raw);
            assert_eq!(
                params.take_str_list("expand"),
                Ok(strings(&["a", "b"])),
                "{raw}"
            );
            assert_eq!(params.finish(), Ok(()));
        }
    }

    #[test]
    fn indexed_lists_are_ordered_by_index() {
        let mut params = parsed("expand[1]=b&expand[0]=a");
        assert_eq!(params.take_str_list("expand"), Ok(strings(&["a", "b"])));

        let mut params = parsed("x[10]=c&x[2]=b&x[0]=a");
        assert_eq!(params.take_str_list("x"), Ok(strings(&["a", "b", "c"])));

        let mut params = parsed("x[7]=b&x[3]=a");
        assert_eq!(params.take_str_list("x"), Ok(strings(&["a", "b"])));
    }

    #[test]
    fn mixing_append_and_index_appends_after_highest() {
        let mut params = parsed("x[1]=a&x[]=b&x[0]=z");
        assert_eq!(params.take_str_list("x"), Ok(strings(&["z", "a", "b"])));
        assert_eq!(malformed_param("x[]=a&x[0]=b"), "x[0]");
    }

    #[test]
    fn append_with_more_segments_creates_new_elements() {
        let mut params = parsed("prices[][id]=x&prices[][id]=y&prices[][amount]=5");
        let items = params.take_list("prices").expect("list").expect("present");
        assert_eq!(items.len(), 3);
        let mut ids = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let mut element = item.into_params(format!("prices[{index}]")).expect("map");
            ids.push(element.take_str("id").expect("id"));
            if index == 2 {
                assert_eq!(element.take_i64("amount"), Ok(Some(5)));
            }
            element.finish().expect("finish");
        }
        assert_eq!(ids, vec![Some("x".into()), Some("y".into()), None]);
    }

    #[test]
    fn nested_list_of_maps_navigation() {
        let mut params = parsed(
            "filter[applicability_scope][prices][0][id]=p1\
             &filter[applicability_scope][prices][1][id]=p2",
        );
        let Some(MapOrEmpty::Map(mut filter)) = params.take_map("filter").expect("filter") else {
            panic!("filter should be a map");
        };
        assert_eq!(filter.path(), "filter");
        let Some(MapOrEmpty::Map(mut scope)) =
            filter.take_map("applicability_scope").expect("scope")
        else {
            panic!("scope should be a map");
        };
        assert_eq!(scope.path(), "filter[applicability_scope]");
        let prices = scope.take_list("prices").expect("prices").expect("present");
        let mut ids = Vec::new();
        for (index, item) in prices.into_iter().enumerate() {
            let path = format!("{}[{index}]", scope.param_path("prices"));
            assert_eq!(
                path,
                format!("filter[applicability_scope][prices][{index}]")
            );
            let mut price = item.into_params(path.clone()).expect("price map");
            assert_eq!(price.path(), path);
            ids.push(price.take_str("id").expect("id").expect("present"));
            price.finish().expect("price finish");
        }
        assert_eq!(ids, vec!["p1", "p2"]);
        scope.finish().expect("scope finish");
        filter.finish().expect("filter finish");
        params.finish().expect("params finish");
    }

    #[test]
    fn nested_error_paths_are_full() {
        let mut params = parsed("filter[applicability_scope][prices][0][id][x]=p1");
        let Some(MapOrEmpty::Map(mut filter)) = params.take_map("filter").expect("filter") else {
            panic!("filter should be a map");
        };
        let Some(MapOrEmpty::Map(mut scope)) =
            filter.take_map("applicability_scope").expect("scope")
        else {
            panic!("scope should be a map");
        };
        let mut prices = scope.take_list("prices").expect("prices").expect("present");
        let mut price = prices
            .remove(0)
            .into_params(scope.param_path("prices") + "[0]")
            .expect("price");
        let error = price.take_str("id").expect_err("id is a map");
        assert_eq!(error.param(), "filter[applicability_scope][prices][0][id]");
        assert_eq!(
            error,
            ParamError::InvalidType {
                param: "filter[applicability_scope][prices][0][id]".into(),
                expected: "string",
            }
        );
    }

    #[test]
    fn metadata_variants() {
        assert_eq!(metadata("metadata="), Some(StringMapOrEmpty::Empty));
        assert_eq!(metadata("metadata[k]="), Some(pairs(&[("k", "")])));
        assert_eq!(
            metadata("metadata[b]=2&metadata[a]=1"),
            Some(pairs(&[("a", "1"), ("b", "2")]))
        );
        assert_eq!(metadata("metadata[0]=x"), Some(pairs(&[("0", "x")])));
        assert_eq!(metadata(""), None);

        let mut params = parsed("metadata[k][deep]=v");
        assert_eq!(
            params.take_string_map("metadata"),
            Err(ParamError::InvalidType {
                param: "metadata[k]".into(),
                expected: "string",
            })
        );
        let mut params = parsed("metadata[k][]=v");
        assert_eq!(
            params
                .take_string_map("metadata")
                .map_err(|error| error.param().to_owned()),
            Err("metadata[k]".into())
        );
        let mut params = parsed("metadata=oops");
        assert_eq!(
            params.take_string_map("metadata"),
            Err(ParamError::InvalidType {
                param: "metadata".into(),
                expected: "object",
            })
        );
    }

    #[test]
    fn take_map_shapes() {
        let mut params = parsed("a=&b=x&c[]=1");
        assert_eq!(params.take_map("a"), Ok(Some(MapOrEmpty::Empty)));
        assert_eq!(
            params.take_map("b"),
            Err(ParamError::InvalidType {
                param: "b".into(),
                expected: "object",
            })
        );
        assert_eq!(
            params
                .take_map("c")
                .map_err(|error| error.param().to_owned()),
            Err("c".into())
        );
        assert_eq!(params.take_map("d"), Ok(None));
    }

    #[test]
    fn take_list_shapes() {
        let mut params = parsed("a=x&b[foo]=1&c[01]=1");
        assert_eq!(
            params.take_list("a"),
            Err(ParamError::InvalidType {
                param: "a".into(),
                expected: "array",
            })
        );
        assert_eq!(
            params
                .take_list("b")
                .map_err(|error| error.param().to_owned()),
            Err("b".into())
        );
        assert!(params.take_list("c").is_err());
        assert_eq!(params.take_list("d"), Ok(None));

        let mut params = parsed("lines[0][id]=a&lines[1]=b");
        assert_eq!(
            params.take_str_list("lines"),
            Err(ParamError::InvalidType {
                param: "lines[0]".into(),
                expected: "string",
            })
        );
    }

    #[test]
    fn unknown_keys_report_full_path() {
        let params = parsed("zeta=1&alpha=2");
        assert_eq!(params.finish(), Err(ParamError::Unknown("alpha".into())));

        let mut params = parsed("filter[known]=1&filter[foo]=2");
        let Some(MapOrEmpty::Map(mut filter)) = params.take_map("filter").expect("filter") else {
            panic!("filter should be a map");
        };
        assert_eq!(filter.take_str("known"), Ok(Some("1".into())));
        let error = filter.finish().expect_err("foo is unknown");
        assert_eq!(error, ParamError::Unknown("filter[foo]".into()));
        assert_eq!(error.to_string(), "Received unknown parameter: filter[foo]");
        assert_eq!(error.stripe_code(), "parameter_unknown");
        assert_eq!(params.finish(), Ok(()));
    }

    #[test]
    fn duplicate_scalar_is_malformed() {
        match parse(b"a=1&a=2") {
            Err(ParamError::Malformed { param, reason }) => {
                assert_eq!(param, "a");
                assert!(reason.contains("duplicate"), "{reason}");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        assert_eq!(malformed_param("m[k]=1&m%5Bk%5D=2"), "m[k]");
        assert_eq!(malformed_param("x[0]=a&x[0]=b"), "x[0]");
    }

    #[test]
    fn scalar_and_container_conflicts_are_malformed() {
        assert_eq!(malformed_param("a=1&a[b]=2"), "a[b]");
        assert_eq!(malformed_param("a[b]=2&a=1"), "a");
        assert_eq!(malformed_param("a[]=1&a=2"), "a");
        assert_eq!(malformed_param("a=1&a[]=2"), "a[]");
        assert_eq!(malformed_param("a[b]=1&a[b][c]=2"), "a[b][c]");
        assert_eq!(malformed_param("a[]=1&a[b]=2"), "a[b]");
        assert_eq!(malformed_param("a[b]=1&a[]=2"), "a[]");
    }

    #[test]
    fn malformed_keys() {
        for key in [
            "a]b", "a[b", "a[b]c", "[a]", "a[[b]]", "a[b]]", "a]", "a[b][", "%5Ba%5D",
        ] {
            let raw = format!("{key}=1");
            let expected = key.replace("%5B", "[").replace("%5D", "]");
            assert_eq!(malformed_param(&raw), expected, "{key}");
        }
        assert_eq!(malformed_param("=1"), "");
    }

    #[test]
    fn integer_edge_cases() {
        let mut params =
            parsed("a=42&b=-7&c=0&d=-0&e=9223372036854775807&f=-9223372036854775808&g=007");
        assert_eq!(params.take_i64("a"), Ok(Some(42)));
        assert_eq!(params.take_i64("b"), Ok(Some(-7)));
        assert_eq!(params.take_i64("c"), Ok(Some(0)));
        assert_eq!(params.take_i64("d"), Ok(Some(0)));
        assert_eq!(params.take_i64("e"), Ok(Some(i64::MAX)));
        assert_eq!(params.take_i64("f"), Ok(Some(i64::MIN)));
        assert_eq!(params.take_i64("g"), Ok(Some(7)));
        assert_eq!(params.take_i64("h"), Ok(None));
        assert_eq!(params.finish(), Ok(()));

        for bad in [
            "1.5",
            "abc",
            " 1",
            "1 ",
            "+1",
            "-",
            "",
            "--1",
            "1e3",
            "0x10",
            "99999999999999999999",
            "9223372036854775808",
            "-9223372036854775809",
            "١",
        ] {
            let mut params = Params::default();
            params
                .entries
                .insert("n".into(), ParamValue::Str(bad.into()));
            let error = params.take_i64("n").expect_err(bad);
            assert_eq!(
                error,
                ParamError::InvalidInteger {
                    param: "n".into(),
                    value: bad.into(),
                }
            );
            assert_eq!(error.stripe_code(), "parameter_invalid_integer");
        }

        let mut params = parsed("amount[x]=1");
        assert_eq!(
            params.take_i64("amount"),
            Err(ParamError::InvalidType {
                param: "amount".into(),
                expected: "integer",
            })
        );
    }

    #[test]
    fn booleans() {
        let mut params = parsed("a=true&b=false&c=True&d=1&e=");
        assert_eq!(params.take_bool("a"), Ok(Some(true)));
        assert_eq!(params.take_bool("b"), Ok(Some(false)));
        for key in ["c", "d", "e"] {
            let error = params.take_bool(key).expect_err(key);
            assert!(matches!(error, ParamError::InvalidBoolean { .. }), "{key}");
            assert_eq!(error.param(), key);
        }
        assert_eq!(params.take_bool("z"), Ok(None));
        assert_eq!(
            parsed("a=maybe")
                .take_bool("a")
                .map_err(|error| error.to_string()),
            Err("Invalid boolean: maybe".into())
        );
    }

    #[test]
    fn pair_limit() {
        let at_limit: Vec<String> = (0..MAX_PAIRS).map(|index| format!("k{index}=v")).collect();
        let params = parse(at_limit.join("&").as_bytes()).expect("at limit");
        assert!(params.contains("k999"));

        let over: Vec<String> = (0..=MAX_PAIRS).map(|index| format!("k{index}=v")).collect();
        match parse(over.join("&").as_bytes()) {
            Err(error @ ParamError::Malformed { .. }) => assert_eq!(error.param(), ""),
            other => panic!("expected Malformed, got {other:?}"),
        }

        let mut list = vec!["x[]=1"; MAX_PAIRS].join("&");
        list.push_str("&&&");
        let mut params = parse(list.as_bytes()).expect("empty pairs do not count");
        assert_eq!(
            params
                .take_list("x")
                .map(|items| items.map(|items| items.len())),
            Ok(Some(MAX_PAIRS))
        );
    }

    #[test]
    fn depth_limit() {
        let deep = format!("a{}=1", "[x]".repeat(MAX_DEPTH));
        assert!(parse(deep.as_bytes()).is_ok());
        let too_deep = format!("a{}=1", "[x]".repeat(MAX_DEPTH + 1));
        let key = too_deep.trim_end_matches("=1").to_owned();
        assert_eq!(malformed_param(&too_deep), key);
        let too_deep_lists = format!("a{}=1", "[]".repeat(MAX_DEPTH + 1));
        assert!(parse(too_deep_lists.as_bytes()).is_err());
    }

    #[test]
    fn nested_lists() {
        let mut params = parsed("m[0][]=a&m[0][]=b&m[1][0]=c");
        let rows = params.take_list("m").expect("m").expect("present");
        let rows: Vec<Vec<ParamValue>> = rows
            .into_iter()
            .enumerate()
            .map(|(index, row)| row.into_list(&format!("m[{index}]")).expect("row"))
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![ParamValue::Str("a".into()), ParamValue::Str("b".into())],
                vec![ParamValue::Str("c".into())],
            ]
        );
    }

    #[test]
    fn require_and_messages() {
        assert_eq!(require(Some(3), "amount"), Ok(3));
        let error = require::<i64>(None, "amount").expect_err("missing");
        assert_eq!(error, ParamError::Missing("amount".into()));
        assert_eq!(error.to_string(), "Missing required param: amount.");
        assert_eq!(error.stripe_code(), "parameter_missing");
        assert_eq!(error.param(), "amount");

        let invalid = ParamError::InvalidInteger {
            param: "amount".into(),
            value: "abc".into(),
        };
        assert_eq!(invalid.to_string(), "Invalid integer: abc");
        let wrong = ParamError::InvalidType {
            param: "expand".into(),
            expected: "array",
        };
        assert_eq!(wrong.to_string(), "Invalid array");
        assert_eq!(wrong.stripe_code(), "parameter_invalid");
        let malformed = ParamError::Malformed {
            param: "a[".into(),
            reason: "unbalanced brackets".into(),
        };
        assert_eq!(malformed.stripe_code(), "parameter_invalid");
        assert!(malformed.to_string().contains("a["));
        assert!(malformed.to_string().contains("unbalanced brackets"));
    }

    #[test]
    fn list_element_paths_from_parse() {
        let params = parsed("items[][price]=p&items[][price]=q");
        let expected = Params {
            path: String::new(),
            entries: BTreeMap::from([(
                "items".to_owned(),
                ParamValue::List(vec![
                    ParamValue::Map(Params {
                        path: "items[0]".into(),
                        entries: BTreeMap::from([(
                            "price".to_owned(),
                            ParamValue::Str("p".into()),
                        )]),
                    }),
                    ParamValue::Map(Params {
                        path: "items[1]".into(),
                        entries: BTreeMap::from([(
                            "price".to_owned(),
                            ParamValue::Str("q".into()),
                        )]),
                    }),
                ]),
            )]),
        };
        assert_eq!(params, expected);
    }
}
