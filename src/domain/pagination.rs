//! Cursor pagination, Stripe style: newest first, `limit` 1..=100 (default 10), and at most
//! one of `starting_after` / `ending_before`, each an object ID. IDs are time-ordered, so a
//! page is a keyset query on the ID.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const DEFAULT_LIMIT: u64 = 10;
pub const MAX_LIMIT: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cursor {
    /// Objects older than this ID (the next page).
    StartingAfter(String),
    /// Objects newer than this ID (the previous page).
    EndingBefore(String),
}

impl Cursor {
    pub fn id(&self) -> &str {
        match self {
            Cursor::StartingAfter(id) | Cursor::EndingBefore(id) => id,
        }
    }

    pub fn param(&self) -> &'static str {
        match self {
            Cursor::StartingAfter(_) => "starting_after",
            Cursor::EndingBefore(_) => "ending_before",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub limit: u64,
    pub cursor: Option<Cursor>,
}

impl Default for ListRequest {
    fn default() -> Self {
        ListRequest {
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

impl ListRequest {
    pub fn parse(
        limit: Option<i64>,
        starting_after: Option<String>,
        ending_before: Option<String>,
    ) -> Result<ListRequest> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(value) if value < 1 => {
                return Err(Error::invalid_param(
                    "limit",
                    "This value must be greater than or equal to 1.",
                ));
            }
            Some(value) if value as u64 > MAX_LIMIT => {
                return Err(Error::invalid_param(
                    "limit",
                    "This value must be less than or equal to 100.",
                ));
            }
            Some(value) => value as u64,
        };
        let starting_after = super::text::optional_id(starting_after, "starting_after")?;
        let ending_before = super::text::optional_id(ending_before, "ending_before")?;
        let cursor = match (starting_after, ending_before) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid_param(
                    "ending_before",
                    "Received both starting_after and ending_before parameters. Please pass in only one.",
                ));
            }
            (Some(id), None) => Some(Cursor::StartingAfter(id)),
            (None, Some(id)) => Some(Cursor::EndingBefore(id)),
            (None, None) => None,
        };
        Ok(ListRequest { limit, cursor })
    }
}

/// Bounds on `created` (Unix seconds), each optional. Built from a request by
/// [`TimeRange::parse`], the one place a timestamp filter is validated for both transports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub gt: Option<i64>,
    pub gte: Option<i64>,
    pub lt: Option<i64>,
    pub lte: Option<i64>,
}

/// A timestamp filter as a request carries it, unvalidated: Stripe's plain-integer form
/// (`created=<t>`, `exactly`) or its hash (`created[gt]=<t>`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRangeFields {
    pub exactly: Option<i64>,
    pub gt: Option<i64>,
    pub gte: Option<i64>,
    pub lt: Option<i64>,
    pub lte: Option<i64>,
}

impl TimeRange {
    /// Validates the filter named `param` (`created`): every time is a Unix timestamp (not
    /// negative), and the exact form comes alone. Errors name the offending field
    /// (`created[gt]`), on both transports.
    pub fn parse(param: &str, fields: TimeRangeFields) -> Result<TimeRange> {
        let bounds = [
            ("gt", fields.gt),
            ("gte", fields.gte),
            ("lt", fields.lt),
            ("lte", fields.lte),
        ];
        if let Some(at) = fields.exactly {
            if bounds.iter().any(|(_, bound)| bound.is_some()) {
                return Err(Error::invalid_param(
                    param,
                    format!(
                        "Invalid {param}: pass either an integer or a hash of gt, gte, lt and lte, not both."
                    ),
                ));
            }
            check_timestamp(param, at)?;
            return Ok(TimeRange::exactly(at));
        }
        for (name, bound) in bounds {
            if let Some(at) = bound {
                check_timestamp(&format!("{param}[{name}]"), at)?;
            }
        }
        Ok(TimeRange {
            gt: fields.gt,
            gte: fields.gte,
            lt: fields.lt,
            lte: fields.lte,
        })
    }

    /// `created=<t>`: exactly that second.
    pub fn exactly(at: i64) -> TimeRange {
        TimeRange {
            gte: Some(at),
            lte: Some(at),
            ..TimeRange::default()
        }
    }

    pub fn is_unbounded(&self) -> bool {
        self == &TimeRange::default()
    }

    pub fn contains(&self, at: i64) -> bool {
        self.gt.is_none_or(|bound| at > bound)
            && self.gte.is_none_or(|bound| at >= bound)
            && self.lt.is_none_or(|bound| at < bound)
            && self.lte.is_none_or(|bound| at <= bound)
    }
}

fn check_timestamp(param: &str, at: i64) -> Result<()> {
    if at < 0 {
        return Err(Error::invalid_param(
            param,
            format!("Invalid {param}: must be a Unix timestamp (0 or greater), got {at}."),
        ));
    }
    Ok(())
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Builds a page from rows fetched with `limit + 1`, in query order (descending for the
    /// next page, ascending for `ending_before`), so `has_more` is exact without a count.
    pub fn from_probe(mut rows: Vec<T>, request: &ListRequest) -> Page<T> {
        let has_more = rows.len() as u64 > request.limit;
        rows.truncate(request.limit as usize);
        if matches!(request.cursor, Some(Cursor::EndingBefore(_))) {
            rows.reverse();
        }
        Page {
            data: rows,
            has_more,
        }
    }

    /// Converts every item, failing on the first error.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            data: self.data.into_iter().map(f).collect::<Result<_, E>>()?,
            has_more: self.has_more,
        })
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            has_more: self.has_more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_to_ten_and_must_be_within_one_to_a_hundred() {
        assert_eq!(ListRequest::parse(None, None, None).unwrap().limit, 10);
        assert_eq!(
            ListRequest::parse(Some(100), None, None).unwrap().limit,
            100
        );
        for bad in [0, -1, 101] {
            let error = ListRequest::parse(Some(bad), None, None).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("limit"));
        }
    }

    #[test]
    fn both_cursors_are_refused() {
        let error = ListRequest::parse(None, Some("a".into()), Some("b".into())).unwrap_err();
        assert!(error.message.contains("starting_after and ending_before"));
    }

    #[test]
    fn a_probe_row_beyond_the_limit_means_has_more() {
        let request = ListRequest::parse(Some(2), None, None).unwrap();
        let page = Page::from_probe(vec![3, 2, 1], &request);
        assert_eq!(
            page,
            Page {
                data: vec![3, 2],
                has_more: true
            }
        );
        let before = ListRequest::parse(Some(2), None, Some("x".into())).unwrap();
        let page = Page::from_probe(vec![4, 5, 6], &before);
        assert_eq!(
            page,
            Page {
                data: vec![5, 4],
                has_more: true
            }
        );
    }

    #[test]
    fn time_ranges_are_inclusive_or_exclusive_as_named() {
        let range = TimeRange {
            gt: Some(10),
            lte: Some(20),
            ..TimeRange::default()
        };
        assert!(
            !range.contains(10) && range.contains(11) && range.contains(20) && !range.contains(21)
        );
        assert!(TimeRange::exactly(5).contains(5) && !TimeRange::exactly(5).contains(6));
    }

    #[test]
    fn a_time_range_is_an_exact_time_or_bounds_never_negative() {
        let exact = TimeRangeFields {
            exactly: Some(7),
            ..TimeRangeFields::default()
        };
        assert_eq!(
            TimeRange::parse("created", exact).unwrap(),
            TimeRange::exactly(7)
        );
        let bounds = TimeRangeFields {
            gt: Some(1),
            lte: Some(9),
            ..TimeRangeFields::default()
        };
        let range = TimeRange::parse("created", bounds).unwrap();
        assert_eq!(
            (range.gt, range.gte, range.lt, range.lte),
            (Some(1), None, None, Some(9))
        );
        assert!(
            TimeRange::parse("created", TimeRangeFields::default())
                .unwrap()
                .is_unbounded()
        );

        let both = TimeRangeFields {
            exactly: Some(7),
            gt: Some(1),
            ..TimeRangeFields::default()
        };
        let error = TimeRange::parse("created", both).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("created"));
        let negative = TimeRangeFields {
            lt: Some(-1),
            ..TimeRangeFields::default()
        };
        let error = TimeRange::parse("created", negative).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("created[lt]"));
        assert_eq!(error.code, Some("parameter_invalid"));
        let negative_exact = TimeRangeFields {
            exactly: Some(-5),
            ..TimeRangeFields::default()
        };
        let error = TimeRange::parse("created", negative_exact).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("created"));
    }
}
