//! Service profiles: names that route to one function, or split traffic between several.

use serde_json::Value;

use super::problems::{
    Fields, Problems, array, choice, in_unit_interval, index, join, number, quote,
};
use super::profile::{check_name, item_names};

/// How far the proportions of a proportional service may add up from 1.
pub const PROPORTION_SUM_TOLERANCE: f64 = 1e-6;

/// One service profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceProfile {
    /// `name`: unique among services; 1 to 64 characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Where the service's requests go.
    pub kind: ServiceKind,
}

/// Where a service's requests go.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceKind {
    /// `"type": "default"` (or no type): every request goes to `selector.functionName`.
    Default {
        /// The target function.
        function: String,
    },
    /// `"type": "proportional-load-balance"`: `(function, proportion)` pairs in file order; at
    /// least one, distinct functions, proportions in (0, 1] that add up to 1.
    Proportional(Vec<(String, f64)>),
}

impl ServiceProfile {
    /// The function for a request, given a uniform random `draw` in [0, 1). As in Noslate, a
    /// proportional service walks its targets adding up proportions and takes the first one
    /// whose running total exceeds `draw`, else the last. `None` only for a proportional
    /// service without targets, which loading never produces.
    pub fn select(&self, draw: f64) -> Option<&str> {
        match &self.kind {
            ServiceKind::Default { function } => Some(function),
            ServiceKind::Proportional(targets) => {
                let mut total = 0.0;
                for (function, proportion) in targets {
                    total += proportion;
                    if draw < total {
                        return Some(function);
                    }
                }
                targets.last().map(|(function, _)| function.as_str())
            }
        }
    }
}

/// The service types.
#[derive(Debug, Clone, Copy)]
enum Type {
    Default,
    Proportional,
}

/// The JSON names of [`Type`].
const TYPES: &[(&str, Type)] = &[
    ("default", Type::Default),
    ("proportional-load-balance", Type::Proportional),
];

/// Parses the service array at `path`; `functions` are the function names of the set.
pub(super) fn parse_services(
    value: &Value,
    path: &str,
    functions: &[&str],
    p: &mut Problems,
) -> Vec<ServiceProfile> {
    let Some(items) = array(value, path, "an array of service profiles", p) else {
        return Vec::new();
    };
    item_names(items, path, "service", p);
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parse_service(item, &index(path, i), functions, p))
        .collect()
}

/// Parses one service at `path`.
fn parse_service(
    value: &Value,
    path: &str,
    functions: &[&str],
    p: &mut Problems,
) -> Option<ServiceProfile> {
    let mut f = Fields::new(value, path, p)?;
    let name = f
        .required_string("name", p)
        .filter(|name| check_name(name, &f.child("name"), p));
    let service_type = match f.get("type") {
        None => Some(Type::Default),
        Some((v, at)) => choice(v, &at, TYPES, p),
    };
    let selector = f.get("selector");
    let selectors = f.get("selectors");
    let kind = match service_type {
        Some(Type::Default) => {
            if selectors.is_some() {
                p.add(
                    f.child("selectors"),
                    "only used by type \"proportional-load-balance\"",
                );
            }
            match selector {
                Some((v, at)) => parse_selector(v, &at, functions, p)
                    .map(|function| ServiceKind::Default { function }),
                None => {
                    p.add(f.child("selector"), "missing (required)");
                    None
                }
            }
        }
        Some(Type::Proportional) => {
            if selector.is_some() {
                p.add(f.child("selector"), "only used by type \"default\"");
            }
            match selectors {
                Some((v, at)) => {
                    parse_selectors(v, &at, functions, p).map(ServiceKind::Proportional)
                }
                None => {
                    p.add(f.child("selectors"), "missing (required)");
                    None
                }
            }
        }
        None => None,
    };
    f.finish(p);
    Some(ServiceProfile {
        name: name?,
        kind: kind?,
    })
}

/// A `selector` object naming a function of the set.
fn parse_selector(
    value: &Value,
    path: &str,
    functions: &[&str],
    p: &mut Problems,
) -> Option<String> {
    let mut f = Fields::new(value, path, p)?;
    let function = f.required_string("functionName", p).filter(|name| {
        let exists = functions.contains(&name.as_str());
        if !exists {
            p.add(
                f.child("functionName"),
                format!("no function named {} in this profile set", quote(name)),
            );
        }
        exists
    });
    f.finish(p);
    function
}

/// The `selectors` of a proportional service.
fn parse_selectors(
    value: &Value,
    path: &str,
    functions: &[&str],
    p: &mut Problems,
) -> Option<Vec<(String, f64)>> {
    let items = array(
        value,
        path,
        "an array of {\"selector\", \"proportion\"} objects",
        p,
    )?;
    if items.is_empty() {
        p.add(path, "must not be empty");
        return None;
    }
    let mut targets: Vec<(String, f64)> = Vec::with_capacity(items.len());
    let mut first_index: Vec<usize> = Vec::with_capacity(items.len());
    let mut all_ok = true;
    for (i, item) in items.iter().enumerate() {
        let at = index(path, i);
        let Some(mut f) = Fields::new(item, &at, p) else {
            all_ok = false;
            continue;
        };
        let function = f
            .required("selector", p)
            .and_then(|(v, at)| parse_selector(v, &at, functions, p));
        let proportion = f
            .required("proportion", p)
            .and_then(|(v, at)| number(v, &at, "a number in (0, 1]", in_unit_interval, p));
        f.finish(p);
        let (Some(function), Some(proportion)) = (function, proportion) else {
            all_ok = false;
            continue;
        };
        let earlier = targets
            .iter()
            .zip(&first_index)
            .find(|((t, _), _)| *t == function);
        if let Some((_, first)) = earlier {
            p.add(
                join(&join(&at, "selector"), "functionName"),
                format!(
                    "duplicate target {} (first at {})",
                    quote(&function),
                    index(path, *first)
                ),
            );
            all_ok = false;
            continue;
        }
        targets.push((function, proportion));
        first_index.push(i);
    }
    if !all_ok {
        return None;
    }
    let sum: f64 = targets.iter().map(|(_, proportion)| proportion).sum();
    if (sum - 1.0).abs() > PROPORTION_SUM_TOLERANCE {
        p.add(path, format!("proportions must add up to 1, got {sum}"));
        return None;
    }
    Some(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proportional(targets: &[(&str, f64)]) -> ServiceProfile {
        ServiceProfile {
            name: "s".to_owned(),
            kind: ServiceKind::Proportional(
                targets.iter().map(|(f, p)| ((*f).to_owned(), *p)).collect(),
            ),
        }
    }

    #[test]
    fn select_walks_the_cumulative_proportions() {
        let service = proportional(&[("a", 0.3), ("b", 0.7)]);
        assert_eq!(service.select(0.0), Some("a"));
        assert_eq!(service.select(0.29), Some("a"));
        assert_eq!(service.select(0.3), Some("b"));
        assert_eq!(service.select(0.99), Some("b"));
        assert_eq!(service.select(1.0), Some("b"));
        assert_eq!(proportional(&[]).select(0.5), None);
        let default = ServiceProfile {
            name: "d".to_owned(),
            kind: ServiceKind::Default {
                function: "f".to_owned(),
            },
        };
        assert_eq!(default.select(0.7), Some("f"));
    }
}
