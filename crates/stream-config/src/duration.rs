//! Duration values as Spring Boot accepts them.

use std::time::Duration;

/// Parses a duration: a plain integer is milliseconds (`5000`); a number with a unit `ns`, `us`,
/// `ms`, `s`, `m`, `h`, `d` (`500ms`, `5s`, `1m`, `2h`); or ISO-8601 (`PT5S`, `PT1M30S`, `P1D`,
/// `PT0.5S`).
///
/// ```
/// use std::time::Duration;
/// use stream_config::parse_duration;
/// assert_eq!(parse_duration("5000"), Ok(Duration::from_secs(5)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("PT1M30S"), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("an empty value is not a duration".to_owned());
    }
    if t.starts_with(['P', 'p']) {
        return parse_iso(t);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a number of milliseconds or a number with a unit"))?;
    let ms_per_unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => 1.0,
        "ns" => 1e-6,
        "us" => 1e-3,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3_600e3,
        "d" => 86_400e3,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ns, us, ms, s, m, h or d)"
            ));
        }
    };
    from_ms(n * ms_per_unit, t)
}

fn from_ms(ms: f64, text: &str) -> Result<Duration, String> {
    if !ms.is_finite() || ms < 0.0 {
        return Err(format!("`{text}` is not a non-negative duration"));
    }
    Ok(Duration::from_nanos((ms * 1e6).round() as u64))
}

fn parse_iso(t: &str) -> Result<Duration, String> {
    let upper = t.to_ascii_uppercase();
    let body = &upper[1..];
    let (date, time) = match body.split_once('T') {
        Some((d, tm)) => (d, Some(tm)),
        None => (body, None),
    };
    let bad = || format!("`{t}` is not an ISO-8601 duration like PT5S");
    let mut ms = 0.0;
    let mut parse_part = |part: &str, units: &[(char, f64)]| -> Result<(), String> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == '-' {
                num.push(c);
            } else {
                let factor = units
                    .iter()
                    .find(|(u, _)| *u == c)
                    .map(|(_, f)| *f)
                    .ok_or_else(bad)?;
                let n: f64 = num.parse().map_err(|_| bad())?;
                ms += n * factor;
                num.clear();
            }
        }
        if num.is_empty() { Ok(()) } else { Err(bad()) }
    };
    parse_part(date, &[('D', 86_400e3)])?;
    if let Some(tm) = time {
        if tm.is_empty() {
            return Err(bad());
        }
        parse_part(tm, &[('H', 3_600e3), ('M', 60e3), ('S', 1e3)])?;
    }
    if date.is_empty() && time.is_none() {
        return Err(bad());
    }
    from_ms(ms, t)
}

/// Renders a duration the short way Spring users write it (`30s`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ns", d.as_nanos())
    } else if ms != 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_all_forms() {
        let ok = |s: &str| parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("1000"), Duration::from_millis(1000));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("1d"), Duration::from_secs(86_400));
        assert_eq!(ok("PT5S"), Duration::from_secs(5));
        assert_eq!(ok("pt0.5s"), Duration::from_millis(500));
        assert_eq!(ok("P1DT1H"), Duration::from_secs(90_000));
        assert_eq!(ok(" 10us "), Duration::from_micros(10));
        for bad in ["", "x", "5 parsecs", "PT", "P", "-5", "PT5X"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }
}
