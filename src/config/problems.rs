//! Validation problems, and the readers that check JSON values and record them.
//!
//! Every reader takes the value, the path it was found at and a [`Problems`] collector. On a
//! bad value it records one [`Problem`] and returns `None`, so a loader can read every field,
//! collect every problem and only then decide whether the input is usable.
//!
//! JSON `null` counts as "not given" everywhere: an optional key set to `null` takes its
//! default, a required one is reported as missing.

use std::fmt;
use std::fs;
use std::path::Path;

use serde_json::{Map, Value};

use super::bytes::parse_byte_size;

/// The path used for problems about the whole document rather than one key in it.
pub const ROOT_PATH: &str = "(root)";

/// Longest string, in characters, quoted in full inside a problem's reason.
const MAX_QUOTED_CHARS: usize = 60;

/// One thing wrong with a configuration input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it is: a JSON path such as `functions[1].worker.maxActivateRequests`, the name of
    /// an environment variable, or a file name.
    pub path: String,
    /// What is wrong with it, lowercase and without a trailing period.
    pub reason: String,
}

impl Problem {
    /// A problem at `path`.
    pub(super) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for Problem {}

/// Collects problems while a loader reads all of its input.
#[derive(Debug, Default)]
pub(super) struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    /// Records a problem at `path`.
    pub(super) fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.list.push(Problem::new(path, reason));
    }

    /// `Ok(value)` when nothing was recorded, else every recorded problem in reading order.
    pub(super) fn finish<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.list)
        }
    }
}

/// The path of `key` inside the object at `path` (`""` is the document root).
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The path of item `i` of the array at `path`.
pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A string as it appears in a problem: JSON-quoted and cut after [`MAX_QUOTED_CHARS`].
pub(super) fn quote(text: &str) -> String {
    if text.chars().count() > MAX_QUOTED_CHARS {
        let short: String = text.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{}…", Value::String(short))
    } else {
        Value::String(text.to_owned()).to_string()
    }
}

/// A value as it appears after "got" in a problem: scalars verbatim, containers by kind.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// The unsigned integer in `value`, also when written as an integral float such as `1e3`.
// The float is checked to be a whole number in [0, 2^64) before the cast, so nothing is lost.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn as_uint(value: &Value) -> Option<u64> {
    let n = value.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    // 2^64 as an f64; anything below it converts exactly or rounds down within u64.
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    let f = n.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f < TWO_POW_64).then_some(f as u64)
}

/// Integer types a reader can produce, with their largest value for messages.
pub(super) trait Int: TryFrom<u64> {
    /// The largest value of the type.
    const LIMIT: u64;
}

impl Int for u8 {
    const LIMIT: u64 = u8::MAX as u64;
}

impl Int for u32 {
    const LIMIT: u64 = u32::MAX as u64;
}

impl Int for u64 {
    const LIMIT: u64 = u64::MAX;
}

impl Int for usize {
    const LIMIT: u64 = usize::MAX as u64;
}

/// An integer `>= min` that fits `T`.
pub(super) fn int<T: Int>(value: &Value, path: &str, min: u64, p: &mut Problems) -> Option<T> {
    let Some(n) = as_uint(value).filter(|n| *n >= min) else {
        p.add(
            path,
            format!("expected an integer >= {min}, got {}", describe(value)),
        );
        return None;
    };
    match T::try_from(n) {
        Ok(t) => Some(t),
        Err(_) => {
            p.add(
                path,
                format!("expected an integer <= {}, got {n}", T::LIMIT),
            );
            None
        }
    }
}

/// A finite number accepted by `ok`; `what` describes the accepted set ("a number in (0, 1]").
pub(super) fn number(
    value: &Value,
    path: &str,
    what: &str,
    ok: fn(f64) -> bool,
    p: &mut Problems,
) -> Option<f64> {
    match value.as_f64() {
        Some(x) if x.is_finite() && ok(x) => Some(x),
        _ => {
            p.add(path, format!("expected {what}, got {}", describe(value)));
            None
        }
    }
}

/// A boolean.
pub(super) fn boolean(value: &Value, path: &str, p: &mut Problems) -> Option<bool> {
    let b = value.as_bool();
    if b.is_none() {
        p.add(
            path,
            format!("expected true or false, got {}", describe(value)),
        );
    }
    b
}

/// A string.
pub(super) fn string(value: &Value, path: &str, p: &mut Problems) -> Option<String> {
    let s = value.as_str().map(str::to_owned);
    if s.is_none() {
        p.add(path, format!("expected a string, got {}", describe(value)));
    }
    s
}

/// The option whose name is exactly `text`.
pub(super) fn lookup<T: Copy>(options: &[(&str, T)], text: &str) -> Option<T> {
    options
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, t)| *t)
}

/// The names of `options` as a readable list: `"a", "b" or "c"`.
pub(super) fn one_of<T>(options: &[(&str, T)]) -> String {
    let names: Vec<String> = options.iter().map(|(name, _)| quote(name)).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// A string that names one of `options`.
pub(super) fn choice<T: Copy>(
    value: &Value,
    path: &str,
    options: &[(&str, T)],
    p: &mut Problems,
) -> Option<T> {
    let found = value.as_str().and_then(|s| lookup(options, s));
    if found.is_none() {
        p.add(
            path,
            format!("expected {}, got {}", one_of(options), describe(value)),
        );
    }
    found
}

/// A size `>= min` bytes: a number of bytes or a string such as `"512mb"` (see
/// [`parse_byte_size`]).
pub(super) fn byte_size(value: &Value, path: &str, min: u64, p: &mut Problems) -> Option<u64> {
    let bytes = match value {
        Value::String(s) => parse_byte_size(s),
        _ => as_uint(value),
    };
    match bytes {
        Some(n) if n >= min => Some(n),
        _ => {
            p.add(
                path,
                format!(
                    "expected a size of at least {min} bytes (a number of bytes or a string \
                     such as \"512mb\"), got {}",
                    describe(value)
                ),
            );
            None
        }
    }
}

/// An array; `what` describes the expected content for the message.
pub(super) fn array<'a>(
    value: &'a Value,
    path: &str,
    what: &str,
    p: &mut Problems,
) -> Option<&'a [Value]> {
    let items = value.as_array().map(Vec::as_slice);
    if items.is_none() {
        p.add(path, format!("expected {what}, got {}", describe(value)));
    }
    items
}

/// An array of strings; a bad item is reported at its own index.
pub(super) fn strings(value: &Value, path: &str, p: &mut Problems) -> Option<Vec<String>> {
    let items = array(value, path, "an array of strings", p)?;
    let mut out = Vec::with_capacity(items.len());
    let mut all_ok = true;
    for (i, item) in items.iter().enumerate() {
        match string(item, &index(path, i), p) {
            Some(s) => out.push(s),
            None => all_ok = false,
        }
    }
    all_ok.then_some(out)
}

/// Reads and parses a JSON file; the problem names the file.
pub(super) fn read_json_file(file: &Path) -> Result<Value, Problem> {
    let path = file.display().to_string();
    let text = fs::read_to_string(file)
        .map_err(|e| Problem::new(path.clone(), format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Problem::new(path, format!("invalid JSON: {e}")))
}

/// Stores `value` in `slot` when there is one.
pub(super) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// `0 < x <= 1`.
pub(super) fn in_unit_interval(x: f64) -> bool {
    x > 0.0 && x <= 1.0
}

/// Reads the keys of one JSON object and remembers which keys were asked for, so that
/// [`Fields::finish`] can report the others as unknown.
#[derive(Debug)]
pub(super) struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// Reads `value` as an object found at `path` (`""` for the document root).
    pub(super) fn new(value: &'a Value, path: &str, p: &mut Problems) -> Option<Self> {
        match value.as_object() {
            Some(map) => Some(Self {
                path: path.to_owned(),
                map,
                known: Vec::new(),
            }),
            None => {
                let at = if path.is_empty() { ROOT_PATH } else { path };
                p.add(at, format!("expected an object, got {}", describe(value)));
                None
            }
        }
    }

    /// The path of `key` in this object.
    pub(super) fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key` and its path, or `None` when it is absent or `null`. Marks the key
    /// as known.
    pub(super) fn get(&mut self, key: &'static str) -> Option<(&'a Value, String)> {
        self.known.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some((value, self.child(key))),
        }
    }

    /// Whether `key` is present and not `null`.
    pub(super) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|value| !value.is_null())
    }

    /// Like [`Fields::get`], but records "missing" when the key is absent or `null`.
    pub(super) fn required(
        &mut self,
        key: &'static str,
        p: &mut Problems,
    ) -> Option<(&'a Value, String)> {
        let found = self.get(key);
        if found.is_none() {
            p.add(self.child(key), "missing (required)");
        }
        found
    }

    /// A required string.
    pub(super) fn required_string(
        &mut self,
        key: &'static str,
        p: &mut Problems,
    ) -> Option<String> {
        let (value, path) = self.required(key, p)?;
        string(value, &path, p)
    }

    /// An optional integer `>= min`.
    pub(super) fn int<T: Int>(
        &mut self,
        key: &'static str,
        min: u64,
        p: &mut Problems,
    ) -> Option<T> {
        let (value, path) = self.get(key)?;
        int(value, &path, min, p)
    }

    /// An optional integer `>= min` and `<= max`.
    pub(super) fn int_at_most<T: Int + PartialOrd + std::fmt::Display>(
        &mut self,
        key: &'static str,
        min: u64,
        max: T,
        p: &mut Problems,
    ) -> Option<T> {
        let n: T = self.int(key, min, p)?;
        if n > max {
            p.add(self.child(key), format!("must be at most {max}, got {n}"));
            return None;
        }
        Some(n)
    }

    /// An optional finite number accepted by `ok` (see [`number`]).
    pub(super) fn number(
        &mut self,
        key: &'static str,
        what: &str,
        ok: fn(f64) -> bool,
        p: &mut Problems,
    ) -> Option<f64> {
        let (value, path) = self.get(key)?;
        number(value, &path, what, ok, p)
    }

    /// An optional boolean.
    pub(super) fn boolean(&mut self, key: &'static str, p: &mut Problems) -> Option<bool> {
        let (value, path) = self.get(key)?;
        boolean(value, &path, p)
    }

    /// An optional string.
    pub(super) fn string(&mut self, key: &'static str, p: &mut Problems) -> Option<String> {
        let (value, path) = self.get(key)?;
        string(value, &path, p)
    }

    /// An optional string that must not be empty (a path, a program).
    pub(super) fn non_empty_string(
        &mut self,
        key: &'static str,
        p: &mut Problems,
    ) -> Option<String> {
        let (value, path) = self.get(key)?;
        let text = string(value, &path, p)?;
        if text.is_empty() {
            p.add(path, "must not be empty");
            return None;
        }
        Some(text)
    }

    /// An optional string naming one of `options`.
    pub(super) fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        options: &[(&str, T)],
        p: &mut Problems,
    ) -> Option<T> {
        let (value, path) = self.get(key)?;
        choice(value, &path, options, p)
    }

    /// An optional byte size `>= min` (see [`byte_size`]).
    pub(super) fn byte_size(
        &mut self,
        key: &'static str,
        min: u64,
        p: &mut Problems,
    ) -> Option<u64> {
        let (value, path) = self.get(key)?;
        byte_size(value, &path, min, p)
    }

    /// An optional array of strings.
    pub(super) fn strings(&mut self, key: &'static str, p: &mut Problems) -> Option<Vec<String>> {
        let (value, path) = self.get(key)?;
        strings(value, &path, p)
    }

    /// An optional nested object.
    pub(super) fn object(&mut self, key: &'static str, p: &mut Problems) -> Option<Fields<'a>> {
        let (value, path) = self.get(key)?;
        Fields::new(value, &path, p)
    }

    /// Records every key that was never asked for as unknown, suggesting a close known key.
    pub(super) fn finish(self, p: &mut Problems) {
        for key in self.map.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let reason = match suggest(key, &self.known) {
                Some(known) => format!("unknown key (did you mean {}?)", quote(known)),
                None => "unknown key".to_owned(),
            };
            p.add(self.found_key_path(key), reason);
        }
    }

    /// The path of a key found in the input, which may be any string: `path.key` for a plain
    /// name, else `path["key"]` with the key JSON-quoted, so that an empty key (at the root,
    /// an empty path) or one holding dots or brackets still names exactly one place.
    fn found_key_path(&self, key: &str) -> String {
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if plain {
            self.child(key)
        } else {
            format!("{}[{}]", self.path, quote(key))
        }
    }
}

/// The known key closest to a misspelt `key`, if it is close enough to be a typo.
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let key_lower = key.to_ascii_lowercase();
    let max_distance = (key.chars().count() / 3).clamp(1, 2);
    known
        .iter()
        .map(|k| (edit_distance(&key_lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= max_distance)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance between two strings, counted in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous
                .get(j)
                .map_or(usize::MAX, |d| d + usize::from(ca != *cb));
            let delete = previous.get(j + 1).map_or(usize::MAX, |d| d + 1);
            let insert = current.get(j).map_or(usize::MAX, |d| d + 1);
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn problem_displays_as_path_colon_reason() {
        let problem = Problem::new("functions[1].name", "missing (required)");
        assert_eq!(problem.to_string(), "functions[1].name: missing (required)");
    }

    #[test]
    fn int_reports_type_range_and_overflow() {
        let mut p = Problems::default();
        assert_eq!(int::<u32>(&json!(5), "a", 1, &mut p), Some(5));
        assert_eq!(int::<u32>(&json!(1e3), "a", 1, &mut p), Some(1000));
        assert_eq!(int::<u32>(&json!(0), "b", 1, &mut p), None);
        assert_eq!(int::<u32>(&json!("10"), "c", 1, &mut p), None);
        assert_eq!(int::<u32>(&json!(1.5), "d", 0, &mut p), None);
        assert_eq!(int::<u32>(&json!(-1), "e", 0, &mut p), None);
        assert_eq!(int::<u32>(&json!(5_000_000_000u64), "f", 0, &mut p), None);
        let reasons: Vec<String> = p
            .finish(())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            reasons,
            [
                "b: expected an integer >= 1, got 0",
                "c: expected an integer >= 1, got \"10\"",
                "d: expected an integer >= 0, got 1.5",
                "e: expected an integer >= 0, got -1",
                "f: expected an integer <= 4294967295, got 5000000000",
            ]
        );
    }

    #[test]
    fn describe_and_quote_shorten_values() {
        assert_eq!(describe(&json!([1])), "an array");
        assert_eq!(describe(&json!({})), "an object");
        assert_eq!(describe(&json!(null)), "null");
        assert_eq!(describe(&json!("a\"b")), "\"a\\\"b\"");
        let long = "x".repeat(100);
        assert_eq!(quote(&long), format!("\"{}\"…", "x".repeat(60)));
    }

    #[test]
    fn choice_lists_the_options() {
        let mut p = Problems::default();
        let options = [("a", 1), ("b", 2), ("c", 3)];
        assert_eq!(choice(&json!("b"), "k", &options, &mut p), Some(2));
        assert_eq!(choice(&json!("B"), "k", &options, &mut p), None);
        let problems = p.finish(()).unwrap_err();
        assert_eq!(
            problems[0].reason,
            "expected \"a\", \"b\" or \"c\", got \"B\""
        );
    }

    #[test]
    fn strings_reports_each_bad_item() {
        let mut p = Problems::default();
        assert_eq!(strings(&json!(["a", 1, true]), "x", &mut p), None);
        let paths: Vec<String> = p
            .finish(())
            .unwrap_err()
            .into_iter()
            .map(|q| q.path)
            .collect();
        assert_eq!(paths, ["x[1]", "x[2]"]);
    }

    #[test]
    fn unknown_keys_get_suggestions() {
        let value = json!({"maxActivateRequest": 1, "zzz": 2, "null": null});
        let mut p = Problems::default();
        let mut f = Fields::new(&value, "worker", &mut p).unwrap();
        assert_eq!(f.int::<u32>("maxActivateRequests", 1, &mut p), None);
        assert_eq!(f.int::<u32>("null", 1, &mut p), None);
        f.finish(&mut p);
        let shown: Vec<String> = p
            .finish(())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "worker.maxActivateRequest: unknown key (did you mean \"maxActivateRequests\"?)",
                "worker.zzz: unknown key",
            ]
        );
    }

    #[test]
    fn unknown_keys_that_are_not_plain_names_are_quoted() {
        let mut p = Problems::default();
        Fields::new(&json!({"": {}, "a.b": 1}), "", &mut p)
            .unwrap()
            .finish(&mut p);
        Fields::new(&json!({"": 1, "]": 2, "caf\u{e9}": 3}), "worker", &mut p)
            .unwrap()
            .finish(&mut p);
        let paths: Vec<String> = p
            .finish(())
            .unwrap_err()
            .into_iter()
            .map(|q| q.path)
            .collect();
        assert_eq!(
            paths,
            [
                "[\"\"]",
                "[\"a.b\"]",
                "worker[\"\"]",
                "worker[\"]\"]",
                "worker[\"caf\u{e9}\"]"
            ]
        );
    }

    #[test]
    fn non_object_root_is_reported_at_root() {
        let mut p = Problems::default();
        assert!(Fields::new(&json!([]), "", &mut p).is_none());
        assert_eq!(
            p.finish(()).unwrap_err()[0].to_string(),
            "(root): expected an object, got an array"
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
