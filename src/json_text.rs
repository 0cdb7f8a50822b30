//! JSON text written by hand, for lines written once per request (the access log). Going
//! through serde's serializer there cost a call per character of every string and a
//! formatting pass per number; the output here is byte for byte what `serde_json` writes for
//! the same values, which the tests check.

use std::time::Duration;

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it: `"` and `\`, the short
/// forms of backspace, form feed, newline, carriage return and tab, `\u00XX` for the other
/// control characters, and everything else (DEL and non-ASCII included) as it is.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        plain_from = i + 1;
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        }
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// Appends `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Below this many microseconds a float of milliseconds is so much finer than 0.001 that the
/// decimal with three places is the only short one that reads back as it.
const EXACT_MICROS: u64 = 1 << 42;

/// A duration in milliseconds to the microsecond, written as a JSON number: `2.0`, `1.5`,
/// `0.042` (what `serde_json` writes for the `f64` of as many milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis {
    micros: u64,
}

impl Millis {
    /// `d`, to the microsecond (saturating past `u64::MAX` of them).
    pub fn of(d: Duration) -> Millis {
        Millis {
            micros: u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// The value as a float, as `serde_json` would be handed it.
    pub fn as_f64(self) -> f64 {
        self.micros as f64 / 1000.0
    }

    /// Appends the number. Below [`EXACT_MICROS`] the float's shortest form is the decimal
    /// itself; past it (51 days) the float is written through `serde_json`.
    pub fn write(self, out: &mut Vec<u8>) {
        let (whole, frac) = (self.micros / 1000, self.micros % 1000);
        if self.micros >= EXACT_MICROS {
            out.extend_from_slice(
                serde_json::to_string(&self.as_f64())
                    .unwrap_or_default()
                    .as_bytes(),
            );
            return;
        }
        write_u64(out, whole);
        out.push(b'.');
        let digits = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let len = match frac {
            0 => 1,
            f if f % 100 == 0 => 1,
            f if f % 10 == 0 => 2,
            _ => 3,
        };
        out.extend_from_slice(&digits[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_serde_writes<T: serde::Serialize + ?Sized>(value: &T) -> String {
        serde_json::to_string(value).expect("serializable")
    }

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn every_ascii_character_is_escaped_as_serde_json_escapes_it() {
        for b in 0u8..=0x7f {
            let s = format!("a{}b", char::from(b));
            assert_eq!(
                written(|o| write_str(o, &s)),
                as_serde_writes(&s),
                "byte {b:#04x}"
            );
        }
    }

    #[test]
    fn strings_of_mixed_and_non_ascii_text_match_serde_json() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let alphabet: Vec<char> = "ab\"\\\n\r\t\u{0}\u{1f}\u{7f}é€😀 /:{}".chars().collect();
        for _ in 0..2000 {
            let len = (seed % 12) as usize;
            let s: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            assert_eq!(written(|o| write_str(o, &s)), as_serde_writes(&s), "{s:?}");
        }
        assert_eq!(written(|o| write_str(o, "")), "\"\"");
    }

    #[test]
    fn integers_are_written_in_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 65_535, 1_000_000_007, u64::MAX] {
            assert_eq!(written(|o| write_u64(o, n)), n.to_string());
        }
    }

    #[test]
    fn milliseconds_are_written_as_serde_json_writes_their_float() {
        let mut micros: Vec<u64> = vec![
            0,
            1,
            10,
            100,
            999,
            1000,
            1001,
            1010,
            1100,
            1500,
            2000,
            42,
            123_456_789,
            u64::from(u32::MAX),
            EXACT_MICROS - 1,
            EXACT_MICROS,
            9_999_999_999_999_999_999,
            u64::MAX,
        ];
        micros.extend((0..5000).map(|i| i * 7919 % 3_000_000));
        micros.extend((0..5000).map(|i| EXACT_MICROS - 1 - i * 104_729));
        for us in micros {
            let m = Millis { micros: us };
            assert_eq!(
                written(|o| m.write(o)),
                as_serde_writes(&m.as_f64()),
                "{us} µs"
            );
        }
        assert_eq!(
            Millis::of(Duration::from_micros(1500)),
            Millis { micros: 1500 }
        );
        assert_eq!(Millis::of(Duration::MAX).micros, u64::MAX);
    }
}
