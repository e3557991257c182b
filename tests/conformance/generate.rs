//! Request generation from the contract: proptest strategies built from each operation's
//! parameter schemas (query parameters, form-encoded bodies, path IDs).
//!
//! Most values are plausible (enum members, IDs of objects that exist, sensible amounts and
//! times) so requests get past validation and reach the ledger; the rest are what a careless or
//! hostile client sends: boundary values, wrong shapes, missing required and unknown
//! parameters, deeply nested brackets, huge numbers, empty strings, unicode and broken
//! percent-encodings. IDs and times are drawn as references ([`Leaf::Id`], [`Leaf::Time`]) and
//! resolved when the request is sent, against the objects that exist at that moment.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;
use serde_json::Value as Json;

/// Real objects whose IDs the generator can put in paths and parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pool {
    Customer,
    CustomerTransaction,
    CreditGrant,
    CreditTransaction,
    TestClock,
}

impl Pool {
    pub const ALL: [Pool; 5] = [
        Pool::Customer,
        Pool::CustomerTransaction,
        Pool::CreditGrant,
        Pool::CreditTransaction,
        Pool::TestClock,
    ];

    /// The pool of objects whose `object` field is `object`.
    pub fn of_object(object: &str) -> Option<Pool> {
        Some(match object {
            "customer" => Pool::Customer,
            "customer_balance_transaction" => Pool::CustomerTransaction,
            "billing.credit_grant" => Pool::CreditGrant,
            "billing.credit_balance_transaction" => Pool::CreditTransaction,
            "test_helpers.test_clock" => Pool::TestClock,
            _ => return None,
        })
    }

    /// An ID of the right shape that names nothing.
    pub fn missing_id(self) -> &'static str {
        match self {
            Pool::Customer => "cus_0000000000000000",
            Pool::CustomerTransaction => "cbtxn_0000000000000000",
            Pool::CreditGrant => "credgr_0000000000000000",
            Pool::CreditTransaction => "credbtxn_0000000000000000",
            Pool::TestClock => "clock_0000000000000000",
        }
    }
}

/// One scalar of a request, resolved to text when sent.
#[derive(Debug, Clone)]
pub enum Leaf {
    /// Form-encoded when sent.
    Text(String),
    /// The `pick`-th (modulo) ID of a pool; a missing ID when the pool is empty.
    Id(Pool, u32),
    /// The server's current time plus this many seconds.
    Time(i64),
    /// Already encoded, sent verbatim (broken percent-encodings, non-UTF-8 bytes).
    Raw(&'static str),
}

/// A parameter value: Stripe's bracket syntax encodes maps and lists.
#[derive(Debug, Clone)]
pub enum Param {
    Leaf(Leaf),
    Map(Vec<(String, Param)>),
    List(Vec<Param>),
}

/// A path segment that is a parameter.
#[derive(Debug, Clone)]
pub enum Segment {
    /// A real ID from the pool the parameter names (a missing one if the pool is empty).
    Real(u32),
    /// A real ID of another kind of object.
    Foreign(Pool, u32),
    /// Already encoded text.
    Garbage(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    TestKey,
    LiveKey,
    Missing,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Form,
    Json,
    Missing,
}

/// One generated request, before IDs and times are resolved.
#[derive(Debug, Clone)]
pub struct Case {
    pub operation: usize,
    /// Whether the case may carry invalid values (otherwise everything is plausible).
    pub fuzz: bool,
    pub segments: Vec<Segment>,
    /// For a transaction under a customer: put the transaction's own customer in the path.
    pub consistent_parent: bool,
    pub params: Vec<(String, Param)>,
    /// Already encoded `key=value` pieces appended to the query or body.
    pub extras: Vec<String>,
    /// Lists as `a[0]=x` (Stripe's SDKs) rather than `a[]=x`.
    pub indexed_lists: bool,
    /// Brackets in keys sent unencoded (`a[b]`) rather than as `a%5Bb%5D`.
    pub raw_brackets: bool,
    pub auth: Auth,
    pub idempotency_key: Option<String>,
    pub content_type: ContentType,
}

/// An operation of the contract, as the generator sees it.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: String,
    pub template: String,
    /// The pool each path parameter names, in path order (`None`: no pool, e.g. events).
    pub path_pools: Vec<Option<Pool>>,
    /// The pool of the objects the operation is about (`starting_after` and friends).
    pub subject: Option<Pool>,
    /// Query parameters (GET, DELETE) or body fields (POST): name, schema, required.
    fields: Vec<(String, Json, bool)>,
}

impl Operation {
    /// Every GET, POST and DELETE operation of the OpenAPI document.
    pub fn all(document: &Json) -> Vec<Operation> {
        let mut operations = Vec::new();
        let paths = document["paths"].as_object().expect("paths");
        for (template, item) in paths {
            for method in ["get", "post", "delete"] {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let mut fields = Vec::new();
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["in"] == "query" {
                        fields.push((
                            parameter["name"].as_str().expect("name").to_string(),
                            parameter["schema"].clone(),
                            parameter["required"] == true,
                        ));
                    }
                }
                if method == "post" {
                    let body = operation
                        .pointer("/requestBody/content/application~1x-www-form-urlencoded/schema");
                    if let Some(body) = body {
                        fields.extend(object_fields(body));
                    }
                }
                let segments: Vec<&str> = template.trim_start_matches('/').split('/').collect();
                let path_pools = segments
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.starts_with('{'))
                    .map(|(i, s)| path_pool(s, segments[i - 1]))
                    .collect();
                let subject = segments
                    .iter()
                    .rev()
                    .find(|s| !s.starts_with('{') && !is_verb(s))
                    .and_then(|s| collection_pool(s));
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    template: template.clone(),
                    path_pools,
                    subject,
                    fields,
                });
            }
        }
        operations
    }

    /// Requests for this operation: `fuzz` mixes in everything a client should not send;
    /// without it, every value is plausible and every required parameter present.
    fn strategy(&self, index: usize, fuzz: bool) -> BoxedStrategy<Case> {
        let ctx = Context {
            subject: self.subject,
            fuzz,
        };
        let segments: Vec<BoxedStrategy<Segment>> = self
            .path_pools
            .iter()
            .map(|pool| segment(*pool, fuzz))
            .collect();
        let params = fields(&self.fields, &ctx, 0, true);
        let is_post = self.method == "POST";
        (
            segments,
            any::<bool>(),
            params,
            extras(fuzz),
            (any::<bool>(), any::<bool>()),
            auth(fuzz),
            idempotency_key(is_post),
            content_type(is_post, fuzz),
        )
            .prop_map(
                move |(
                    segments,
                    consistent_parent,
                    params,
                    extras,
                    (indexed_lists, raw_brackets),
                    auth,
                    idempotency_key,
                    content_type,
                )| Case {
                    operation: index,
                    fuzz,
                    segments,
                    consistent_parent,
                    params,
                    extras,
                    indexed_lists,
                    raw_brackets,
                    auth,
                    idempotency_key,
                    content_type,
                },
            )
            .boxed()
    }
}

/// Requests for any of `operations`, each operation equally likely; half of them fuzzed.
pub fn cases(operations: &[Operation]) -> impl Strategy<Value = Case> {
    Union::new(
        operations
            .iter()
            .enumerate()
            .flat_map(|(index, operation)| {
                [
                    operation.strategy(index, false),
                    operation.strategy(index, true),
                ]
            }),
    )
}

fn is_verb(segment: &str) -> bool {
    matches!(
        segment,
        "expire" | "void" | "advance" | "activate" | "archive" | "deactivate"
    )
}

fn collection_pool(segment: &str) -> Option<Pool> {
    Some(match segment {
        "customers" => Pool::Customer,
        "balance_transactions" => Pool::CustomerTransaction,
        "credit_grants" => Pool::CreditGrant,
        "credit_balance_transactions" => Pool::CreditTransaction,
        "test_clocks" => Pool::TestClock,
        _ => return None,
    })
}

fn path_pool(parameter: &str, previous: &str) -> Option<Pool> {
    match parameter {
        "{customer}" => Some(Pool::Customer),
        "{transaction}" => Some(Pool::CustomerTransaction),
        "{test_clock}" => Some(Pool::TestClock),
        _ => collection_pool(previous),
    }
}

fn object_fields(schema: &Json) -> Vec<(String, Json, bool)> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect();
    schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, schema)| {
            (
                name.clone(),
                schema.clone(),
                required.contains(&name.as_str()),
            )
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Context {
    subject: Option<Pool>,
    fuzz: bool,
}

/// Deeper than this, schemas are not followed (Stripe's request schemas are shallow).
const MAX_DEPTH: u32 = 6;

fn text(s: impl Into<String>) -> Param {
    Param::Leaf(Leaf::Text(s.into()))
}

/// Some of the fields (required ones usually), plus unknown ones at times.
fn fields(
    fields: &[(String, Json, bool)],
    ctx: &Context,
    depth: u32,
    top: bool,
) -> BoxedStrategy<Vec<(String, Param)>> {
    let chosen: Vec<BoxedStrategy<Option<(String, Param)>>> = fields
        .iter()
        .map(|(name, schema, required)| {
            let name = name.clone();
            // About two optional fields per request, however many the operation has; nested
            // objects (an amount, a scope) are worth filling.
            let optional = if top {
                (2.0 / fields.len() as f64).min(0.3)
            } else {
                0.5
            };
            let probability = match (*required, ctx.fuzz, name.as_str()) {
                (true, false, _) => 1.0,
                (true, true, _) => 0.9,
                // Stripe makes `customer` optional next to `customer_account`, which creditd
                // does not support: without it, most billing requests could not succeed.
                (false, false, "customer") => 0.9,
                (false, _, _) => optional,
            };
            maybe(
                probability,
                value(schema, &name, ctx, depth).prop_map(move |v| (name.clone(), v)),
            )
        })
        .collect();
    let unknown_probability = match (ctx.fuzz, top) {
        (false, _) => 0.0,
        (true, true) => 0.15,
        (true, false) => 0.05,
    };
    let entries = (chosen, maybe(unknown_probability, unknown_field()))
        .prop_map(|(chosen, unknown)| chosen.into_iter().flatten().chain(unknown).collect());
    if top || ctx.fuzz || fields.is_empty() {
        return entries.boxed();
    }
    // An empty nested object encodes to nothing, which is the object left out.
    entries
        .prop_filter("a nested object has a field", |entries: &Vec<_>| {
            !entries.is_empty()
        })
        .boxed()
}

/// `Some` with `probability` (0 and 1 included, which proptest's `weighted` refuses).
fn maybe<T: std::fmt::Debug + Clone + 'static>(
    probability: f64,
    strategy: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    if probability <= 0.0 {
        Just(None).boxed()
    } else if probability >= 1.0 {
        strategy.prop_map(Some).boxed()
    } else {
        proptest::option::weighted(probability, strategy).boxed()
    }
}

fn unknown_field() -> impl Strategy<Value = (String, Param)> {
    (
        select(vec![
            "unknown_param".to_string(),
            "ünknown".to_string(),
            "id".to_string(),
            "object".to_string(),
            "livemode".to_string(),
            "deleted".to_string(),
            "x".repeat(300),
        ]),
        prop_oneof![
            Just(text("1")),
            Just(Param::Map(vec![("a".into(), text("b"))]))
        ],
    )
}

/// A value for `schema`: usually valid, sometimes a boundary value or the wrong shape.
fn value(schema: &Json, name: &str, ctx: &Context, depth: u32) -> BoxedStrategy<Param> {
    if depth > MAX_DEPTH {
        return Just(text("x")).boxed();
    }
    if !ctx.fuzz {
        return valid(schema, name, ctx, depth);
    }
    prop_oneof![
        6 => valid(schema, name, ctx, depth),
        2 => boundary(schema),
        1 => wrong_shape(schema),
    ]
    .boxed()
}

fn valid(schema: &Json, name: &str, ctx: &Context, depth: u32) -> BoxedStrategy<Param> {
    for combinator in ["anyOf", "oneOf"] {
        if let Some(branches) = schema[combinator].as_array() {
            return Union::new(
                branches
                    .iter()
                    .map(|branch| valid(branch, name, ctx, depth))
                    .collect::<Vec<_>>(),
            )
            .boxed();
        }
    }
    if let Some(options) = schema["enum"].as_array() {
        let options: Vec<String> = options
            .iter()
            .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
            .collect();
        return select(options).prop_map(text).boxed();
    }
    match schema["type"].as_str() {
        Some("object") => {
            let properties = object_fields(schema);
            if properties.is_empty() {
                map_entries(&schema["additionalProperties"], ctx, depth)
            } else {
                fields(&properties, ctx, depth + 1, false)
                    .prop_map(Param::Map)
                    .boxed()
            }
        }
        Some("array") => {
            let item = value(&schema["items"], name, ctx, depth + 1);
            proptest::collection::vec(item, 0..4)
                .prop_map(Param::List)
                .boxed()
        }
        Some("integer") => integer(name),
        Some("boolean") => select(vec!["true", "false"]).prop_map(text).boxed(),
        _ => match (name, ctx.subject) {
            // Pagination cursors: usually an object of the listed kind.
            ("starting_after" | "ending_before", Some(subject)) => prop_oneof![
                4 => id(subject),
                1 => string(name, schema["maxLength"].as_u64(), ctx.fuzz),
            ]
            .boxed(),
            _ => string(name, schema["maxLength"].as_u64(), ctx.fuzz),
        },
    }
}

/// Metadata-like maps: a few entries, keys of every length around Stripe's limit of 40.
fn map_entries(values: &Json, ctx: &Context, depth: u32) -> BoxedStrategy<Param> {
    let key = prop_oneof![
        4 => word(1, 12),
        1 => select(vec![
            "x".repeat(40),
            "x".repeat(41),
            "clé 🎉".to_string(),
            String::new(),
        ]),
    ];
    let item = if values.is_object() {
        value(values, "value", ctx, depth + 1)
    } else {
        string("value", None, ctx.fuzz)
    };
    proptest::collection::vec((key, item), 0..4)
        .prop_map(Param::Map)
        .boxed()
}

fn word(min: usize, max: usize) -> BoxedStrategy<String> {
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-."
        .chars()
        .collect();
    proptest::collection::vec(select(alphabet), min..=max)
        .prop_map(String::from_iter)
        .boxed()
}

fn id(pool: Pool) -> BoxedStrategy<Param> {
    any::<u32>()
        .prop_map(move |pick| Param::Leaf(Leaf::Id(pool, pick)))
        .boxed()
}

/// A plausible string, chosen by the parameter's name where that says what it holds.
fn string(name: &str, max_length: Option<u64>, fuzz: bool) -> BoxedStrategy<Param> {
    let plain = word(1, max_length.map_or(20, |m| m.clamp(1, 20) as usize)).prop_map(text);
    let hinted: Option<BoxedStrategy<Param>> = match name {
        "customer" => Some(id(Pool::Customer)),
        "test_clock" => Some(id(Pool::TestClock)),
        "credit_grant" => Some(id(Pool::CreditGrant)),
        "currency" if !fuzz => Some(select(vec!["usd", "eur"]).prop_map(text).boxed()),
        "currency" => Some(
            select(vec!["usd", "eur", "jpy", "USD", "xxx", "us"])
                .prop_map(text)
                .boxed(),
        ),
        "email" => Some(
            select(vec!["a@example.com", "b@example.org", "not-an-email"])
                .prop_map(text)
                .boxed(),
        ),
        "invoice" => Some(word(1, 12).prop_map(|w| text(format!("in_{w}"))).boxed()),
        "id" => Some(word(1, 12).prop_map(|w| text(format!("price_{w}"))).boxed()),
        "url" => Some(
            select(vec![
                "https://example.com/hook",
                "http://localhost/",
                "not a url",
            ])
            .prop_map(text)
            .boxed(),
        ),
        "expand" if !fuzz => Some(
            select(vec!["customer", "data.customer"])
                .prop_map(text)
                .boxed(),
        ),
        "expand" => Some(
            select(vec![
                "customer",
                "data.customer",
                "test_clock",
                "data",
                "invoice",
                "customer.test_clock",
                "a.b.c.d.e",
            ])
            .prop_map(text)
            .boxed(),
        ),
        _ => None,
    };
    match hinted {
        Some(hinted) => prop_oneof![5 => hinted, 1 => plain].boxed(),
        None => plain.boxed(),
    }
}

/// A plausible integer, chosen by the parameter's name.
fn integer(name: &str) -> BoxedStrategy<Param> {
    match name {
        "limit" => (1i64..=100).prop_map(|n| text(n.to_string())).boxed(),
        "priority" => (0i64..=100).prop_map(|n| text(n.to_string())).boxed(),
        "amount" | "value" | "balance" => (-100_000i64..100_000)
            .prop_map(|n| text(n.to_string()))
            .boxed(),
        "effective_at" | "expires_at" | "frozen_time" | "created" | "gt" | "gte" | "lt" | "lte" => {
            (-40 * 86_400i64..400 * 86_400)
                .prop_map(|offset| Param::Leaf(Leaf::Time(offset)))
                .boxed()
        }
        _ => (0i64..1_000).prop_map(|n| text(n.to_string())).boxed(),
    }
}

/// Values at and past the edges, whatever the schema says.
fn boundary(schema: &Json) -> BoxedStrategy<Param> {
    let max = schema["maxLength"].as_u64().unwrap_or(5000) as usize;
    let texts = vec![
        String::new(),
        " ".to_string(),
        "a".repeat(max),
        "a".repeat(max + 1),
        "0".to_string(),
        "-1".to_string(),
        i64::MAX.to_string(),
        i64::MIN.to_string(),
        "9223372036854775808".to_string(),
        "-9223372036854775809".to_string(),
        "999999999999999999999999999999999999".to_string(),
        "1e3".to_string(),
        "1.5".to_string(),
        "+1".to_string(),
        "0x10".to_string(),
        "null".to_string(),
        "true".to_string(),
        "ünïcødé 🎉".to_string(),
        "\u{202e}rtl".to_string(),
        "e\u{301}".to_string(),
        "\t\r\n".to_string(),
        "nul\u{0}byte".to_string(),
        "a&b=c[d]".to_string(),
        "%".to_string(),
        "💥".repeat(300),
        "x".repeat(20_000),
    ];
    prop_oneof![
        12 => select(texts).prop_map(text),
        1 => select(vec!["%FF%FE", "%ZZ", "%", "%C3%28"]).prop_map(|raw| Param::Leaf(Leaf::Raw(raw))),
    ]
    .boxed()
}

/// A shape the schema does not have: a map or list for a scalar, a scalar for a map, nesting.
fn wrong_shape(schema: &Json) -> BoxedStrategy<Param> {
    let scalar_expected = !matches!(schema["type"].as_str(), Some("object" | "array"));
    let nested = (2usize..60).prop_map(|depth| {
        (0..depth).fold(text("1"), |inner, _| Param::Map(vec![("a".into(), inner)]))
    });
    if scalar_expected {
        prop_oneof![
            Just(Param::Map(vec![("x".into(), text("1"))])),
            Just(Param::List(vec![text("a"), text("b")])),
            nested,
        ]
        .boxed()
    } else {
        prop_oneof![
            Just(text("1")),
            Just(text("")),
            Just(Param::List(vec![text("a")])),
            nested,
        ]
        .boxed()
    }
}

/// Broken or odd raw pieces, now and then.
fn extras(fuzz: bool) -> BoxedStrategy<Vec<String>> {
    if !fuzz {
        return Just(Vec::new()).boxed();
    }
    let deep = format!("x{}=1", "[a]".repeat(300));
    let piece = select(vec![
        "a[".to_string(),
        "a]".to_string(),
        "[]=1".to_string(),
        "a[][]=1".to_string(),
        "a[[b]]=1".to_string(),
        "=1".to_string(),
        "&&".to_string(),
        "novalue".to_string(),
        "%ZZ=1".to_string(),
        "%FF=1".to_string(),
        "limit=1&limit=2".to_string(),
        "metadata[a]=1&metadata=x".to_string(),
        "expand[]=customer&expand[0]=customer".to_string(),
        deep,
    ]);
    proptest::collection::vec(piece, 0..=1)
        .prop_flat_map(|pieces| {
            // Most requests carry none.
            (Just(pieces), 0u8..5)
                .prop_map(|(pieces, roll)| if roll == 0 { pieces } else { vec![] })
        })
        .boxed()
}

fn segment(pool: Option<Pool>, fuzz: bool) -> BoxedStrategy<Segment> {
    if !fuzz && pool.is_some() {
        return any::<u32>().prop_map(Segment::Real).boxed();
    }
    let garbage = select(vec![
        "does_not_exist".to_string(),
        "x".repeat(300),
        "x".repeat(5000),
        "%F0%9F%8E%89".to_string(),
        "%C3%BC".to_string(),
        "%FF".to_string(),
        "%00".to_string(),
        "%20".to_string(),
        "a%2Fb".to_string(),
        "%27%20OR%201%3D1%20--".to_string(),
        "evt_0000000000000000".to_string(),
    ])
    .prop_map(Segment::Garbage);
    let foreign = (select(Pool::ALL.to_vec()), any::<u32>())
        .prop_map(|(pool, pick)| Segment::Foreign(pool, pick));
    match pool {
        Some(_) => prop_oneof![
            6 => any::<u32>().prop_map(Segment::Real),
            2 => foreign,
            3 => garbage,
        ]
        .boxed(),
        None => prop_oneof![1 => foreign, 2 => garbage].boxed(),
    }
}

fn auth(fuzz: bool) -> BoxedStrategy<Auth> {
    if !fuzz {
        return Just(Auth::TestKey).boxed();
    }
    prop_oneof![
        88 => Just(Auth::TestKey),
        4 => Just(Auth::LiveKey),
        4 => Just(Auth::Missing),
        4 => Just(Auth::Unknown),
    ]
    .boxed()
}

fn idempotency_key(is_post: bool) -> BoxedStrategy<Option<String>> {
    if !is_post {
        return Just(None).boxed();
    }
    proptest::option::weighted(
        0.15,
        select(vec![
            "conformance-1".to_string(),
            "conformance-2".to_string(),
            "conformance-3".to_string(),
            "k".repeat(256),
        ]),
    )
    .boxed()
}

fn content_type(is_post: bool, fuzz: bool) -> BoxedStrategy<ContentType> {
    if !is_post || !fuzz {
        return Just(ContentType::Form).boxed();
    }
    prop_oneof![
        90 => Just(ContentType::Form),
        5 => Just(ContentType::Json),
        5 => Just(ContentType::Missing),
    ]
    .boxed()
}
