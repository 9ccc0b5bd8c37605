//! The sane range of a setting: every size, count and duration of the configuration is checked
//! against one at start, so that a typo (a million partitions, a timeout of a year) is an error
//! naming the key instead of a process that stalls or runs out of memory.

use std::fmt::Debug;

/// `Ok` when `value` is within `min..=max`; otherwise why not, with the range and `default` (a
/// sentence: "the default is ...").
pub(crate) fn within<T: PartialOrd + Debug>(
    value: T,
    min: T,
    max: T,
    default: &str,
) -> Result<(), String> {
    if value < min {
        Err(format!(
            "must be at least {min:?} (it is {value:?}; {default})"
        ))
    } else if value > max {
        Err(format!(
            "must be at most {max:?} (it is {value:?}; {default})"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn values_inside_pass_and_outside_name_the_bound_and_the_default() {
        assert!(within(5, 1, 10, "the default is 4").is_ok());
        assert!(within(1, 1, 10, "").is_ok());
        assert!(within(10, 1, 10, "").is_ok());
        let low = within(0, 1, 10, "the default is 4").unwrap_err();
        assert_eq!(low, "must be at least 1 (it is 0; the default is 4)");
        let high = within(
            Duration::from_secs(90_000),
            Duration::from_millis(1),
            Duration::from_secs(86_400),
            "the default is 5 s",
        )
        .unwrap_err();
        assert!(high.starts_with("must be at most 86400s"), "{high}");
    }
}
