//! An ordered list of header fields kept in one buffer.
//!
//! A request head used to hold every field as two `String`s: FC's requests carry about twenty
//! `x-fc-*` fields, so a head cost some fifty allocations and as many frees on the invoke path.
//! Here the names and values sit back to back in one `String`, with their end offsets beside
//! it: two allocations per head, whatever its field count.

use std::borrow::Cow;
use std::fmt;

use serde::de::Deserializer;
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// Where one field lies in [`HeaderList`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    name_end: usize,
    value_end: usize,
}

/// Header fields in order, names in their original case, duplicates kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderList {
    /// Every name and value, back to back.
    text: String,
    /// Per field, where in `text` its name starts, where its name ends and its value starts,
    /// and where its value ends.
    spans: Vec<Span>,
}

impl HeaderList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `fields` fields of `bytes` bytes of names and values.
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            spans: Vec::with_capacity(fields),
        }
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.spans.push(Span {
            start,
            name_end,
            value_end: self.text.len(),
        });
    }

    /// Appends a field whose value bytes are decoded as ISO-8859-1, one char per byte, the way
    /// Node's `http` module decodes them, so that opaque non-ASCII bytes reach a worker, and
    /// come back in its response, unchanged.
    pub fn push_latin1(&mut self, name: &str, value: &[u8]) {
        let start = self.text.len();
        self.text.push_str(name);
        let name_end = self.text.len();
        push_latin1(&mut self.text, value);
        self.spans.push(Span {
            start,
            name_end,
            value_end: self.text.len(),
        });
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there is no field.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            list: self,
            front: 0,
            back: self.spans.len(),
        }
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        (self.spans.iter())
            .find(|s| self.is_named(s, name))
            .map(|s| self.value(s))
    }

    /// The values of every field named `name` (ASCII case-insensitive), in order. The parser
    /// looks up four framing fields in every head this way.
    pub fn values<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
        (self.spans.iter())
            .filter(move |s| self.is_named(s, name))
            .map(|s| self.value(s))
    }

    /// Whether the field at `span` is named `name`: compared as bytes, so that only the values
    /// found are sliced as text.
    fn is_named(&self, span: &Span, name: &str) -> bool {
        self.text.as_bytes()[span.start..span.name_end].eq_ignore_ascii_case(name.as_bytes())
    }

    fn value(&self, span: &Span) -> &str {
        &self.text[span.name_end..span.value_end]
    }

    /// The fields as owned pairs.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    fn field(&self, index: usize) -> (&str, &str) {
        let Span {
            start,
            name_end,
            value_end,
        } = self.spans[index];
        (&self.text[start..name_end], &self.text[name_end..value_end])
    }
}

/// Decodes header bytes as ISO-8859-1 (one char per byte), as [`HeaderList::push_latin1`] does.
pub fn latin1(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    push_latin1(&mut text, bytes);
    text
}

fn push_latin1(text: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(ascii) if bytes.is_ascii() => text.push_str(ascii),
        _ => text.extend(bytes.iter().map(|&b| char::from(b))),
    }
}

/// The fields of a [`HeaderList`], in order.
#[derive(Debug, Clone)]
pub struct Iter<'h> {
    list: &'h HeaderList,
    front: usize,
    back: usize,
}

impl<'h> Iterator for Iter<'h> {
    type Item = (&'h str, &'h str);

    fn next(&mut self) -> Option<Self::Item> {
        (self.front < self.back).then(|| {
            self.front += 1;
            self.list.field(self.front - 1)
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.back - self.front;
        (left, Some(left))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        (self.front < self.back).then(|| {
            self.back -= 1;
            self.list.field(self.back)
        })
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'h> IntoIterator for &'h HeaderList {
    type Item = (&'h str, &'h str);
    type IntoIter = Iter<'h>;

    fn into_iter(self) -> Iter<'h> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(fields: I) -> Self {
        let mut list = HeaderList::new();
        for (name, value) in fields {
            list.push(name.as_ref(), value.as_ref());
        }
        list
    }
}

/// An owned list where a borrowed one may go (a worker protocol head).
impl From<HeaderList> for Cow<'_, HeaderList> {
    fn from(list: HeaderList) -> Self {
        Cow::Owned(list)
    }
}

impl fmt::Debug for HeaderList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Compares with pairs, in order.
impl<N: AsRef<str>, V: AsRef<str>> PartialEq<[(N, V)]> for HeaderList {
    fn eq(&self, pairs: &[(N, V)]) -> bool {
        self.len() == pairs.len()
            && self
                .iter()
                .zip(pairs)
                .all(|((n, v), (pn, pv))| n == pn.as_ref() && v == pv.as_ref())
    }
}

impl<N: AsRef<str>, V: AsRef<str>, const K: usize> PartialEq<[(N, V); K]> for HeaderList {
    fn eq(&self, pairs: &[(N, V); K]) -> bool {
        *self == pairs[..]
    }
}

impl<N: AsRef<str>, V: AsRef<str>> PartialEq<Vec<(N, V)>> for HeaderList {
    fn eq(&self, pairs: &Vec<(N, V)>) -> bool {
        *self == pairs[..]
    }
}

/// As a sequence of `[name, value]` pairs, the form `Vec<(String, String)>` takes.
impl Serialize for HeaderList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for field in self {
            seq.serialize_element(&field)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<(String, String)>::deserialize(deserializer).map(HeaderList::from_iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_case_and_duplicates() {
        let mut list = HeaderList::with_capacity(3, 32);
        list.push("Host", "example");
        list.push("X-A", "1");
        list.push("x-a", "");
        list.push("", "no name");
        assert_eq!(list.len(), 4);
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            [
                ("Host", "example"),
                ("X-A", "1"),
                ("x-a", ""),
                ("", "no name")
            ]
        );
        assert_eq!(
            list.iter().rev().map(|(n, _)| n).collect::<Vec<_>>(),
            ["", "x-a", "X-A", "Host"]
        );
        assert_eq!(list.get("x-A"), Some("1"));
        assert_eq!(list.values("X-a").collect::<Vec<_>>(), ["1", ""]);
        assert_eq!(list.get("missing"), None);
        assert_eq!(list.iter().len(), 4);
    }

    #[test]
    fn an_iterator_taken_from_both_ends_meets_in_the_middle() {
        let list: HeaderList = [("a", "1"), ("b", "2"), ("c", "3")].into_iter().collect();
        let mut it = list.iter();
        assert_eq!(it.next(), Some(("a", "1")));
        assert_eq!(it.next_back(), Some(("c", "3")));
        assert_eq!(it.len(), 1);
        assert_eq!(it.next_back(), Some(("b", "2")));
        assert_eq!(it.next(), None);
        assert_eq!(it.next_back(), None);
        assert!(HeaderList::new().iter().next().is_none());
        assert!(HeaderList::new().is_empty());
    }

    #[test]
    fn latin1_values_keep_every_byte_as_one_char() {
        let mut list = HeaderList::new();
        list.push_latin1("X-Bin", b"\xff\xfeok");
        list.push_latin1("X-Ascii", b"plain");
        list.push_latin1("X-Utf8", "café".as_bytes());
        assert_eq!(list.get("x-bin"), Some("\u{ff}\u{fe}ok"));
        assert_eq!(list.get("x-ascii"), Some("plain"));
        // Two bytes, two chars: the value is not read as UTF-8.
        assert_eq!(list.get("x-utf8"), Some("caf\u{c3}\u{a9}"));
        assert_eq!(list.iter().map(|(n, _)| n).next_back(), Some("X-Utf8"));
    }

    #[test]
    fn compares_with_pairs_and_serializes_as_pairs() {
        let list: HeaderList = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".into(), "\u{ff}".into()),
        ]
        .into_iter()
        .collect();
        assert_eq!(list, [("a", "1"), ("b", "\u{ff}")]);
        assert_ne!(list, [("a", "1")]);
        assert_ne!(list, [("a", "1"), ("b", "x")]);
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, r#"[["a","1"],["b","ÿ"]]"#);
        assert_eq!(
            json,
            serde_json::to_string(&list.to_pairs()).unwrap(),
            "the same text as owned pairs"
        );
        let back: HeaderList = serde_json::from_str(&json).unwrap();
        assert_eq!(back, list);
        assert_eq!(format!("{list:?}"), r#"[("a", "1"), ("b", "ÿ")]"#);
        assert!(serde_json::from_str::<HeaderList>(r#"[["a"]]"#).is_err());
    }
}
