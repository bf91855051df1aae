//! Checked integer conversions. The workspace lints forbid `as` casts that may truncate or
//! change sign, so every narrowing in the code says what happens when the value does not fit:
//! an error where an outsider controls the value (callers use `try_from` and return their
//! error), an assertion ([`fit`]) where it is bounded by construction.

use std::fmt::Display;
use std::time::Duration;

// EggsFS runs on 64-bit Linux only, so a `u64` always fits a `usize` and [`usize_of`] is
// lossless.
const _: () = assert!(usize::BITS == 64, "EggsFS needs a 64-bit target");

/// A `u64` (a size, an offset, an index) as a `usize`: lossless on every target EggsFS builds
/// for (asserted at compile time above).
#[inline]
#[must_use]
#[allow(clippy::cast_possible_truncation)]
pub const fn usize_of(x: u64) -> usize {
    x as usize
}

/// Narrows a value that is bounded by construction (a block index below the span's block
/// count, a length below the datagram size). Not fitting is a programmer error, so it stops
/// the process with both the value and the target type named.
#[inline]
#[must_use]
#[track_caller]
pub fn fit<T, U>(x: U) -> T
where
    T: TryFrom<U>,
    U: Copy + Display,
{
    match T::try_from(x) {
        Ok(v) => v,
        Err(_) => panic!("{x} does not fit in {}", std::any::type_name::<T>()),
    }
}

/// Whole nanoseconds of a duration, saturating (at about 584 years).
#[inline]
#[must_use]
pub fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whole microseconds of a duration, saturating.
#[inline]
#[must_use]
pub fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Whole milliseconds of a duration, saturating.
#[inline]
#[must_use]
pub fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The low byte of a value, on purpose (hashing into 256 buckets, test patterns).
#[inline]
#[must_use]
pub const fn low_byte(x: u64) -> u8 {
    x.to_le_bytes()[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_accepts_what_fits() {
        assert_eq!(fit::<u8, usize>(255), 255u8);
        assert_eq!(fit::<u32, u64>(u64::from(u32::MAX)), u32::MAX);
    }

    #[test]
    #[should_panic(expected = "256 does not fit in u8")]
    fn fit_stops_on_overflow() {
        let _: u8 = fit(256usize);
    }

    #[test]
    fn durations_saturate() {
        assert_eq!(nanos_of(Duration::from_secs(2)), 2_000_000_000);
        assert_eq!(nanos_of(Duration::MAX), u64::MAX);
        assert_eq!(millis_of(Duration::from_micros(2500)), 2);
        assert_eq!(micros_of(Duration::from_nanos(1999)), 1);
        assert_eq!(low_byte(0x1234), 0x34);
        assert_eq!(usize_of(1 << 40), 1usize << 40);
    }
}
