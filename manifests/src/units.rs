//! Parsers for the human-written values of a manifest: memory quantities, CPU
//! counts, durations and signal names. Each returns the message the user sees
//! (without the field path, which the caller adds).

use std::str::FromStr;
use std::time::Duration;

/// `64Mi`, `1.5Gi`, `500M`, `67108864` → bytes (the Kubernetes quantity suffixes).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a quantity; use e.g. 64Mi or 67108864");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let mut bytes = whole
        .checked_mul(multiplier)
        .ok_or_else(|| too_large(text))?;
    if !fraction.is_empty() {
        // Exact decimal arithmetic: 1.5Gi is 1.5 * 2^30 with no float rounding.
        let digits: u32 = fraction.len().try_into().map_err(|_| bad())?;
        let scale = 10u128.checked_pow(digits).ok_or_else(bad)?;
        let numerator: u128 = fraction.parse().map_err(|_| bad())?;
        let part = numerator * u128::from(multiplier);
        if !part.is_multiple_of(scale) {
            return Err(format!("{text:?} is not a whole number of bytes"));
        }
        let part = u64::try_from(part / scale).map_err(|_| too_large(text))?;
        bytes = bytes.checked_add(part).ok_or_else(|| too_large(text))?;
    }
    Ok(bytes)
}

fn too_large(text: &str) -> String {
    format!("{text:?} is too large")
}

/// `0.5`, `2`, `"500m"` → thousandths of a CPU.
pub fn parse_millicpus(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a CPU count; use e.g. 0.5, 2 or 500m");
    let millis = if let Some(m) = text.strip_suffix('m') {
        m.parse::<u64>().map_err(|_| bad())?
    } else {
        let cpus: f64 = text.parse().map_err(|_| bad())?;
        if !cpus.is_finite() || cpus < 0.0 {
            return Err(bad());
        }
        let millis = (cpus * 1000.0).round();
        if (millis - cpus * 1000.0).abs() > 1e-6 {
            return Err(format!(
                "{text:?} is finer than a thousandth of a CPU; use e.g. 0.25"
            ));
        }
        // In range: cpus is finite, non-negative and checked against the cap below.
        if millis > 1_000_000.0 {
            return Err(format!("{text:?} is more CPUs than any host has"));
        }
        millis as u64
    };
    if millis < 10 {
        return Err(format!(
            "{text:?} is below the smallest CPU share the kernel enforces (0.01)"
        ));
    }
    Ok(millis)
}

/// `10s`, `1m30s`, `500ms`, `2h` → a duration (Go's `time.ParseDuration` units).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; use e.g. 10s, 1m30s or 500ms");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| too_large(text))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let factor = u32::try_from(value).map_err(|_| too_large(text))?;
        let part = unit.checked_mul(factor).ok_or_else(|| too_large(text))?;
        total = total.checked_add(part).ok_or_else(|| too_large(text))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `SIGTERM`, `TERM` or `15` → the canonical name `SIGTERM`.
pub fn parse_signal(text: &str) -> Result<String, String> {
    let bad = || format!("{text:?} is not a signal; use a name such as SIGTERM or SIGINT");
    let signal = match text.parse::<i32>() {
        Ok(number) => nix::sys::signal::Signal::try_from(number).map_err(|_| bad())?,
        Err(_) if text.starts_with("SIG") => {
            nix::sys::signal::Signal::from_str(text).map_err(|_| bad())?
        }
        Err(_) => nix::sys::signal::Signal::from_str(&format!("SIG{text}")).map_err(|_| bad())?,
    };
    Ok(signal.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_use_kubernetes_suffixes() {
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("67108864"), Ok(67_108_864));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("2k"), Ok(2000));
    }

    #[test]
    fn bad_quantities_say_how_to_write_one() {
        for text in ["64MB", "", "Mi", "1.Mi", "-1", "1e6", "0.1", "64 Mi"] {
            let err = parse_bytes(text).expect_err(text);
            assert!(
                err.contains("quantity") || err.contains("whole"),
                "{text}: {err}"
            );
        }
        assert_eq!(
            parse_bytes("64MB").unwrap_err(),
            "\"64MB\" is not a quantity; use e.g. 64Mi or 67108864"
        );
        assert!(parse_bytes("99999999999999999999").is_err());
        assert!(parse_bytes("16777216Ti").unwrap_err().contains("too large"));
    }

    #[test]
    fn cpus_accept_fractions_and_millis() {
        assert_eq!(parse_millicpus("0.5"), Ok(500));
        assert_eq!(parse_millicpus("2"), Ok(2000));
        assert_eq!(parse_millicpus("250m"), Ok(250));
        assert!(parse_millicpus("0").is_err());
        assert!(parse_millicpus("0.0001").is_err());
        assert!(parse_millicpus("NaN").is_err());
        assert!(parse_millicpus("inf").is_err());
        assert!(parse_millicpus("-1").is_err());
        assert!(parse_millicpus("half").is_err());
    }

    #[test]
    fn durations_follow_go_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for text in ["10", "ten", "", "s", "10x", "1.5s", "-1s", "99999999999h"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn signals_are_named_canonically() {
        assert_eq!(parse_signal("SIGTERM").as_deref(), Ok("SIGTERM"));
        assert_eq!(parse_signal("INT").as_deref(), Ok("SIGINT"));
        assert_eq!(parse_signal("9").as_deref(), Ok("SIGKILL"));
        for text in ["SIGFOO", "sigterm", "", "0", "999"] {
            assert!(parse_signal(text).is_err(), "{text}");
        }
    }
}
