//! A rate written `<count>/<period>`: `60/min`, `10/s`, `1000/h`, `5/10s`. The period is a unit
//! (`s`, `min`, `h`, `d`) or a duration (`10s`, `5m`). Collections declare one (`rate:` in
//! `collections.yaml`), and the api's write-limit settings take the same form.

use std::{fmt, str::FromStr, time::Duration};

/// At most this many actions per period.
pub const MAX_COUNT: u32 = 1_000_000;
/// The shortest period.
pub const MIN_PERIOD: Duration = Duration::from_secs(1);
/// The longest period.
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Actions allowed per period (1 to [`MAX_COUNT`]).
    pub count: u32,
    /// The sliding window they are counted in ([`MIN_PERIOD`] to [`MAX_PERIOD`]).
    pub per: Duration,
}

impl Rate {
    pub const fn per_minute(count: u32) -> Self {
        Rate { count, per: Duration::from_secs(60) }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let wrong = || format!("'{text}' is not a rate such as 60/min, 10/s, 1000/h or 5/10s");
        let (count, period) = text.split_once('/').ok_or_else(wrong)?;
        let count: u32 = count.trim().parse().map_err(|_| wrong())?;
        let period = period.trim();
        let per = match period {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => crate::config::parse_duration(period).map_err(|_| wrong())?,
        };
        if count == 0 || count > MAX_COUNT {
            return Err(format!("'{text}': the count must be 1 to {MAX_COUNT}"));
        }
        if !(MIN_PERIOD..=MAX_PERIOD).contains(&per) {
            return Err(format!("'{text}': the period must be 1s to 1d"));
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.per.as_secs() {
            1 => "s".to_owned(),
            60 => "min".to_owned(),
            3600 => "h".to_owned(),
            86_400 => "d".to_owned(),
            _ => crate::config::display_duration(self.per),
        };
        write!(f, "{}/{per}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_units_and_durations_and_print_back() {
        for (text, count, secs, shown) in [
            ("60/min", 60, 60, "60/min"),
            ("10/s", 10, 1, "10/s"),
            (" 1000 / h ", 1000, 3600, "1000/h"),
            ("5/10s", 5, 10, "5/10s"),
            ("100/5m", 100, 300, "100/5m"),
            ("7/day", 7, 86_400, "7/d"),
        ] {
            let rate: Rate = text.parse().unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!((rate.count, rate.per), (count, Duration::from_secs(secs)), "{text}");
            assert_eq!(rate.to_string(), shown);
            assert_eq!(shown.parse::<Rate>(), Ok(rate));
        }
    }

    #[test]
    fn malformed_and_out_of_range_rates_are_refused() {
        for text in ["60", "/min", "x/min", "60/fortnight", "-1/s", "60/min/h"] {
            assert!(text.parse::<Rate>().unwrap_err().contains("is not a rate"), "{text}");
        }
        assert!("0/min".parse::<Rate>().unwrap_err().contains("count must be"));
        assert!("2000000/s".parse::<Rate>().unwrap_err().contains("count must be"));
        assert!("5/500ms".parse::<Rate>().unwrap_err().contains("period must be"));
        assert!("5/2d".parse::<Rate>().unwrap_err().contains("period must be"));
    }
}
