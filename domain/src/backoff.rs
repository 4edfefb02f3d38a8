//! Retry delays.

/// The delay before the attempt after `failed_attempt`, in milliseconds: exponential
/// (`base_ms * 2^(failed_attempt - 1)`, capped at `max_ms`) with "equal jitter": the result
/// lies in `[d/2, d]` where `d` is the capped delay, placed by `jitter`.
///
/// Pure: the caller supplies `jitter`, a uniform random number in `[0, 1)` (values outside
/// are clamped, NaN counts as 0). Never panics or overflows.
pub fn retry_backoff(failed_attempt: u32, base_ms: u64, max_ms: u64, jitter: f64) -> u64 {
    let exponent = failed_attempt.saturating_sub(1);
    let factor = 1u64.checked_shl(exponent).unwrap_or(u64::MAX);
    let delay = base_ms.saturating_mul(factor).min(max_ms);
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let half = delay / 2;
    // `as` saturates on float-to-int; `min` guards against rounding up past the cap.
    let spread = ((delay - half) as f64 * jitter) as u64;
    half.saturating_add(spread).min(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_per_attempt() {
        assert_eq!(retry_backoff(1, 1_000, 60_000, 0.999_999), 999);
        assert_eq!(retry_backoff(1, 1_000, 60_000, 0.0), 500);
        assert_eq!(retry_backoff(2, 1_000, 60_000, 0.0), 1_000);
        assert_eq!(retry_backoff(3, 1_000, 60_000, 0.5), 3_000);
    }

    #[test]
    fn is_capped() {
        assert_eq!(retry_backoff(10, 1_000, 60_000, 0.0), 30_000);
        assert_eq!(retry_backoff(u32::MAX, u64::MAX, u64::MAX, 1.0), u64::MAX);
        assert_eq!(retry_backoff(0, 1_000, 60_000, 0.0), 500);
    }

    #[test]
    fn odd_jitter_is_clamped() {
        assert_eq!(retry_backoff(1, 1_000, 60_000, f64::NAN), 500);
        assert_eq!(retry_backoff(1, 1_000, 60_000, -3.0), 500);
        assert_eq!(retry_backoff(1, 1_000, 60_000, 7.0), 1_000);
    }

    proptest! {
        #[test]
        fn stays_within_half_and_full_delay(
            attempt in 0u32..80, base in 0u64..100_000, max in 0u64..10_000_000, jitter in 0.0f64..1.0
        ) {
            let delay = base.saturating_mul(1u64.checked_shl(attempt.saturating_sub(1)).unwrap_or(u64::MAX)).min(max);
            let got = retry_backoff(attempt, base, max, jitter);
            prop_assert!(got >= delay / 2 && got <= delay);
        }
    }
}
