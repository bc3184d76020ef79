//! Durations in one grammar everywhere: Go's `time.ParseDuration`, the one
//! the apiserver, upstream External Secrets and Helm values use (`300ms`,
//! `1.5h`, `2h45m`). A flag, a store's `refreshInterval` and the conversion
//! of that field all read a text the same way; kube's `Duration` parses it.

use std::time::Duration;

/// A text that is not a non-negative Go duration. The message names neither
/// the text nor the field: callers say where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not Go's duration syntax.
    #[error(
        "is not a Go duration (time.ParseDuration): numbers each followed by a unit \
         ns, us, µs, ms, s, m or h, such as `300s`, `5m` or `1h30m`"
    )]
    Syntax,
    /// A valid Go duration below zero, where only lengths of time make sense.
    #[error("must not be negative")]
    Negative,
}

/// Parses a non-negative Go duration such as `8s`, `15m` or `1h30m`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let duration: kube::core::Duration = text.parse().map_err(|_| DurationError::Syntax)?;
    if duration.is_negative() {
        return Err(DurationError::Negative);
    }
    Ok(Duration::from(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_durations() {
        assert_eq!(parse("8760h"), Ok(Duration::from_secs(8760 * 3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_go_refuses_and_negative_lengths() {
        for text in ["soon", "5", "2d", "1w", "1h 30m", "5 minutes"] {
            assert_eq!(parse(text), Err(DurationError::Syntax), "{text}");
        }
        assert_eq!(parse("-5s"), Err(DurationError::Negative));
    }
}
