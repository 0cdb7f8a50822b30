//! Byte sizes written the way Noslate's configuration writes them (the JS `bytes` module).

/// Most fraction digits taken into account; further digits change less than a byte.
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses a byte size such as `"1gb"`, `"512 MB"`, `"1.5GiB"` or `"1024"`.
///
/// Units are case-insensitive and binary, as in the JS `bytes` module (`1kb` = 1024 bytes):
/// `b`; `k`, `kb`, `kib`; `m`, `mb`, `mib`; `g`, `gb`, `gib`; `t`, `tb`, `tib`; `p`, `pb`,
/// `pib`. No unit means bytes. Fractions of a byte are dropped. `None` for anything else,
/// including negative numbers and sizes beyond `u64`.
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let shift: u32 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || (number.contains('.') && !all_digits(fraction)) {
        return None;
    }
    let unit_bytes: u128 = 1 << shift;
    let whole: u128 = whole.parse().ok()?;
    let fraction = fraction.get(..MAX_FRACTION_DIGITS).unwrap_or(fraction);
    let fraction_bytes = if fraction.is_empty() {
        0
    } else {
        let digits = u32::try_from(fraction.len()).ok()?;
        fraction.parse::<u128>().ok()? * unit_bytes / 10u128.pow(digits)
    };
    let total = whole.checked_mul(unit_bytes)?.checked_add(fraction_bytes)?;
    u64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_binary_and_case_insensitive() {
        assert_eq!(parse_byte_size("1024"), Some(1024));
        assert_eq!(parse_byte_size("10b"), Some(10));
        assert_eq!(parse_byte_size("1kb"), Some(1024));
        assert_eq!(parse_byte_size("1K"), Some(1024));
        assert_eq!(parse_byte_size("2KiB"), Some(2048));
        assert_eq!(parse_byte_size("512mb"), Some(512 << 20));
        assert_eq!(parse_byte_size("1gb"), Some(1 << 30));
        assert_eq!(parse_byte_size("1G"), Some(1 << 30));
        assert_eq!(parse_byte_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_byte_size(" 10 MB "), Some(10 << 20));
        assert_eq!(parse_byte_size("1tb"), Some(1 << 40));
        assert_eq!(parse_byte_size("1pb"), Some(1 << 50));
    }

    #[test]
    fn fractions_are_floored() {
        assert_eq!(parse_byte_size("0.5kb"), Some(512));
        assert_eq!(parse_byte_size("0.3kb"), Some(307));
        assert_eq!(parse_byte_size("1.5"), Some(1));
        assert_eq!(
            parse_byte_size("0.1234567890123456789999gb"),
            Some(132_560_717)
        );
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "gb",
            "-1gb",
            "+1gb",
            "1.gb",
            ".5gb",
            "1..5gb",
            "1.2.3",
            "1 xb",
            "1e3",
            "1gbb",
            "99999999999999999999pb",
            "18446744073709551616",
        ] {
            assert_eq!(parse_byte_size(bad), None, "{bad:?}");
        }
        assert_eq!(parse_byte_size("18446744073709551615"), Some(u64::MAX));
    }
}
