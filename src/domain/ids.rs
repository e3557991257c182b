//! Object identifiers: Stripe's prefixes, `_test_` in test mode, and a time-ordered body so
//! that sorting by ID sorts by creation and a page cursor is a plain keyset comparison.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 62^11 > 2^64, so eleven digits hold any u64 and keep a fixed width.
const ORDER_DIGITS: usize = 11;
const RANDOM_DIGITS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Account,
    ApiKey,
    Customer,
    CustomerBalanceTransaction,
    CreditGrant,
    /// creditd's own: a reservation of credits (`credhold_`).
    CreditHold,
    /// Stripe gives credit ledger entries the same `cbtxn_` prefix as customer balance ones.
    CreditBalanceTransaction,
    TestClock,
    Event,
    WebhookEndpoint,
    BillingAlert,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Account => "acct",
            IdKind::ApiKey => "key",
            IdKind::Customer => "cus",
            IdKind::CustomerBalanceTransaction | IdKind::CreditBalanceTransaction => "cbtxn",
            IdKind::CreditGrant => "credgr",
            IdKind::CreditHold => "credhold",
            IdKind::TestClock => "clock",
            IdKind::Event => "evt",
            IdKind::WebhookEndpoint => "we",
            IdKind::BillingAlert => "alrt",
        }
    }
}

/// The last ordering value handed out by this process: IDs are strictly increasing here even
/// within one millisecond.
static LAST_ORDER: AtomicU64 = AtomicU64::new(0);

fn next_order_value() -> u64 {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    let candidate = millis << 16;
    let mut last = LAST_ORDER.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last + 1);
        match LAST_ORDER.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

fn push_base62(out: &mut String, mut value: u64, width: usize) {
    let mut digits = [b'0'; ORDER_DIGITS];
    for slot in digits.iter_mut().rev().take(width) {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out.extend(digits[ORDER_DIGITS - width..].iter().map(|&b| b as char));
}

/// An ID as [`new_id`] would have made it at `unix_millis` (for tools and tests that need an
/// ID of a given age; not unique within a millisecond).
pub fn new_id_at(kind: IdKind, livemode: bool, unix_millis: u64) -> String {
    let mut id = String::with_capacity(40);
    id.push_str(kind.prefix());
    id.push('_');
    if !livemode {
        id.push_str("test_");
    }
    push_base62(&mut id, unix_millis << 16, ORDER_DIGITS);
    let mut rng = rand::rng();
    for _ in 0..RANDOM_DIGITS {
        id.push(ALPHABET[rng.random_range(0..62)] as char);
    }
    id
}

/// When an ID made by [`new_id`] was created, in Unix milliseconds (its time-ordered digits);
/// `None` for text that is not such an ID.
pub fn id_created_millis(id: &str) -> Option<i64> {
    let (_, rest) = id.split_once('_')?;
    let body = rest.strip_prefix("test_").unwrap_or(rest);
    if body.len() != ORDER_DIGITS + RANDOM_DIGITS || !body.is_ascii() {
        return None;
    }
    let mut value: u64 = 0;
    for byte in body[..ORDER_DIGITS].bytes() {
        let digit = ALPHABET.iter().position(|&c| c == byte)? as u64;
        value = value.checked_mul(62)?.checked_add(digit)?;
    }
    i64::try_from(value >> 16).ok()
}

/// A new ID such as `cus_test_0PXc3VvB2Gq7kD0aXbYz1w`: prefix, `test_` in test mode, 11
/// time-ordered base62 digits, 10 random ones.
pub fn new_id(kind: IdKind, livemode: bool) -> String {
    let mut id = String::with_capacity(40);
    id.push_str(kind.prefix());
    id.push('_');
    if !livemode {
        id.push_str("test_");
    }
    push_base62(&mut id, next_order_value(), ORDER_DIGITS);
    let mut rng = rand::rng();
    for _ in 0..RANDOM_DIGITS {
        id.push(ALPHABET[rng.random_range(0..62)] as char);
    }
    id
}

/// Random base62 text, for secrets.
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..62)] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_prefix_and_test_marker() {
        let live = new_id(IdKind::Customer, true);
        let test = new_id(IdKind::CustomerBalanceTransaction, false);
        assert!(live.starts_with("cus_") && !live.contains("_test_"));
        assert!(test.starts_with("cbtxn_test_"));
        assert_eq!(live.len(), "cus_".len() + ORDER_DIGITS + RANDOM_DIGITS);
    }

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..2000).map(|_| new_id(IdKind::Customer, false)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn an_id_tells_when_it_was_made() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let id = new_id(IdKind::Event, false);
        let millis = id_created_millis(&id).unwrap();
        assert!((before..before + 5_000).contains(&millis), "{id}: {millis}");
        let old = new_id_at(IdKind::Event, true, 1_000_000_000_000);
        assert!(old.starts_with("evt_") && !old.contains("test_"));
        assert_eq!(id_created_millis(&old), Some(1_000_000_000_000));
        assert_eq!(id_created_millis("evt_nope"), None);
        assert_eq!(id_created_millis("evt_test_!!!!!!!!!!!0123456789"), None);
        assert_eq!(id_created_millis("nothing"), None);
    }

    #[test]
    fn base62_is_fixed_width() {
        let mut out = String::new();
        push_base62(&mut out, 0, ORDER_DIGITS);
        assert_eq!(out, "00000000000");
        let mut out = String::new();
        push_base62(&mut out, u64::MAX, ORDER_DIGITS);
        assert_eq!(out.len(), ORDER_DIGITS);
    }
}
