//! When to renew: a pure function of the certificate's validity, `now` and the policy.

use std::time::{Duration, SystemTime};

use crate::settings::RenewalSettings;

/// Never plan a renewal closer to `notAfter` than this share of the lifetime.
const LATEST_SHARE: f64 = 0.95;

/// The time to renew a certificate valid from `not_before` to `not_after`.
///
/// The base point is `not_before + at × lifetime`; `jitter_sample` in [-1, 1] moves it by up
/// to `jitter × lifetime` either way (callers draw it at random so a fleet does not renew in
/// lockstep). The result is clamped to `[not_before + min_delay, not_before + 95% of lifetime]`
/// and never earlier than `now`: an overdue certificate is renewed at once.
pub fn next_renewal(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    policy: &RenewalSettings,
    jitter_sample: f64,
) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let life = lifetime.as_secs_f64();
    let sample = if jitter_sample.is_finite() {
        jitter_sample.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let offset = life * policy.at + life * policy.jitter * sample;
    let earliest = policy.min_delay.as_secs_f64().min(life * LATEST_SHARE);
    let offset = offset.clamp(earliest, life * LATEST_SHARE).max(0.0);
    let planned = not_before + Duration::from_secs_f64(offset);
    planned.max(now)
}

/// Retry delay after `attempt` consecutive failures (1-based): exponential from `base`,
/// capped at `max`, with full jitter from `jitter_sample` in [0, 1] over the upper half.
pub fn retry_delay(attempt: u32, base: Duration, max: Duration, jitter_sample: f64) -> Duration {
    let exp = base.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX),
    );
    let capped = exp.min(max);
    let s = if jitter_sample.is_finite() {
        jitter_sample.clamp(0.0, 1.0)
    } else {
        0.5
    };
    capped / 2 + capped.mul_f64(0.5 * s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RenewalSettings {
        RenewalSettings {
            at: 2.0 / 3.0,
            jitter: 0.05,
            min_delay: Duration::from_secs(30),
        }
    }

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn renews_at_two_thirds_without_jitter() {
        let nb = T0 + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(3600);
        assert_eq!(
            next_renewal(nb, na, nb, &policy(), 0.0),
            nb + Duration::from_secs(2400)
        );
    }

    #[test]
    fn jitter_moves_within_bounds() {
        let nb = T0 + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(3600);
        assert_eq!(
            next_renewal(nb, na, nb, &policy(), 1.0),
            nb + Duration::from_secs(2580)
        );
        assert_eq!(
            next_renewal(nb, na, nb, &policy(), -1.0),
            nb + Duration::from_secs(2220)
        );
    }

    #[test]
    fn overdue_renews_now() {
        let nb = T0 + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(3600);
        let now = nb + Duration::from_secs(3500);
        assert_eq!(next_renewal(nb, na, now, &policy(), 0.0), now);
        let expired = na + Duration::from_secs(10);
        assert_eq!(next_renewal(nb, na, expired, &policy(), 0.0), expired);
    }

    #[test]
    fn min_delay_clamps_short_lifetimes() {
        let nb = T0 + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(40);
        // 2/3 of 40 s is under the 30 s minimum: clamp up to 30 s.
        assert_eq!(
            next_renewal(nb, na, nb, &policy(), -1.0),
            nb + Duration::from_secs(30)
        );
    }

    #[test]
    fn retry_backs_off_and_caps() {
        let b = Duration::from_secs(10);
        let m = Duration::from_secs(600);
        assert_eq!(retry_delay(1, b, m, 1.0), Duration::from_secs(10));
        assert_eq!(retry_delay(1, b, m, 0.0), Duration::from_secs(5));
        assert_eq!(retry_delay(3, b, m, 1.0), Duration::from_secs(40));
        assert_eq!(retry_delay(30, b, m, 1.0), m);
    }

    proptest! {
        #[test]
        fn always_inside_validity_and_not_before_now(
            life in 1u64..10_000_000, at in 0.01f64..0.99, jitter in 0.0f64..0.49,
            sample in -1.0f64..1.0, now_off in 0u64..20_000_000,
        ) {
            let nb = T0 + Duration::from_secs(1_000_000);
            let na = nb + Duration::from_secs(life);
            let now = nb + Duration::from_secs(now_off);
            let p = RenewalSettings { at, jitter, min_delay: Duration::from_secs(30) };
            let r = next_renewal(nb, na, now, &p, sample);
            prop_assert!(r >= now);
            if now < na {
                prop_assert!(r <= na.max(now));
                prop_assert!(r >= nb);
            }
        }
    }
}
