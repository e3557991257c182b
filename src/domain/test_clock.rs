//! Test clocks: a test-mode customer attached to a clock lives at the clock's frozen time.
//! Advancing the clock runs, in time order, everything that became due.

use serde::{Deserialize, Serialize};

use super::text::optional_text;
use crate::error::{Error, Result};

pub const MAX_NAME_CHARS: usize = 300;
/// Clocks are deleted this long after creation (`deletes_after`), as in Stripe.
pub const LIFETIME_SECONDS: i64 = 30 * 24 * 60 * 60;
/// How far one advance may move a clock without subscriptions: two years.
pub const MAX_ADVANCE_SECONDS: i64 = 2 * 365 * 24 * 60 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStatus {
    Ready,
    Advancing,
    InternalFailure,
}

impl ClockStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockStatus::Ready => "ready",
            ClockStatus::Advancing => "advancing",
            ClockStatus::InternalFailure => "internal_failure",
        }
    }

    pub fn parse(raw: &str) -> Option<ClockStatus> {
        [
            ClockStatus::Ready,
            ClockStatus::Advancing,
            ClockStatus::InternalFailure,
        ]
        .into_iter()
        .find(|status| status.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestClock {
    pub id: String,
    pub livemode: bool,
    pub created: i64,
    pub name: Option<String>,
    pub frozen_time: i64,
    pub status: ClockStatus,
    /// Where an advance in progress is going.
    pub target_frozen_time: Option<i64>,
    pub deletes_after: i64,
}

impl TestClock {
    /// Checks that the clock may be advanced to `target` now.
    pub fn check_advance(&self, target: i64) -> Result<()> {
        if self.status == ClockStatus::Advancing {
            return Err(Error::invalid_state(format!(
                "Test clock {} is already advancing; wait for it to be ready.",
                self.id
            )));
        }
        if target <= self.frozen_time {
            return Err(Error::invalid_param(
                "frozen_time",
                format!(
                    "The test clock can only be advanced forward: frozen_time must be later than the current frozen_time ({}).",
                    self.frozen_time
                ),
            ));
        }
        if target - self.frozen_time > MAX_ADVANCE_SECONDS {
            return Err(Error::invalid_param(
                "frozen_time",
                "A test clock can be advanced at most two years at a time.",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateTestClock {
    pub frozen_time: i64,
    pub name: Option<String>,
    /// An existing customer to attach (for good).
    pub customer: Option<String>,
}

impl CreateTestClock {
    pub fn parse(
        frozen_time: Option<i64>,
        name: Option<String>,
        customer: Option<String>,
    ) -> Result<Self> {
        let frozen_time = frozen_time.ok_or_else(|| Error::missing_param("frozen_time"))?;
        if frozen_time < 0 {
            return Err(Error::invalid_param(
                "frozen_time",
                "Invalid frozen_time: must be a Unix timestamp.",
            ));
        }
        Ok(CreateTestClock {
            frozen_time,
            name: optional_text(name, "name", MAX_NAME_CHARS)?,
            customer: customer.filter(|customer| !customer.is_empty()),
        })
    }
}

/// Clocks are a test-mode tool.
/// The `frozen_time` an advance moves a clock to: required (a zero from a transport without
/// optional fields counts as missing). Whether it is a valid target for a given clock is
/// [`TestClock::check_advance`].
pub fn parse_advance_target(frozen_time: Option<i64>) -> Result<i64> {
    frozen_time
        .filter(|at| *at != 0)
        .ok_or_else(|| Error::missing_param("frozen_time"))
}

pub fn check_test_mode(livemode: bool) -> Result<()> {
    if livemode {
        return Err(Error::invalid_state(
            "Test clocks are only available in test mode: use a sk_test_ key.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(status: ClockStatus) -> TestClock {
        TestClock {
            id: "clock_1".into(),
            livemode: false,
            created: 0,
            name: None,
            frozen_time: 1_000,
            status,
            target_frozen_time: None,
            deletes_after: LIFETIME_SECONDS,
        }
    }

    #[test]
    fn clocks_only_move_forward_and_not_too_far_or_while_advancing() {
        let ready = clock(ClockStatus::Ready);
        assert!(ready.check_advance(1_001).is_ok());
        assert_eq!(
            ready.check_advance(1_000).unwrap_err().param.as_deref(),
            Some("frozen_time")
        );
        assert!(ready.check_advance(999).is_err());
        assert!(
            ready
                .check_advance(1_000 + MAX_ADVANCE_SECONDS + 1)
                .is_err()
        );
        assert!(clock(ClockStatus::Advancing).check_advance(2_000).is_err());
    }

    #[test]
    fn frozen_time_is_required_and_live_mode_is_refused() {
        assert_eq!(
            CreateTestClock::parse(None, None, None).unwrap_err().code,
            Some("parameter_missing")
        );
        assert!(check_test_mode(true).is_err());
        assert!(check_test_mode(false).is_ok());
    }
}
