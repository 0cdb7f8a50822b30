//! `turf.inheritEnv`: which of the runtime's own environment variables a worker inherits, below
//! its profile's and the platform's variables.
//!
//! A function sees its credentials and FC's description of the instance, and nothing else of
//! the runtime's: the runtime's environment may hold its own settings (`NOSLATE_*`,
//! `NOSLATED_*`, `RUST_LOG`) and whatever the container's entrypoint exported, none of which
//! is the function's business. So by default (`"fc"`) a worker inherits exactly what FC's own
//! runtimes give a function: FC's system variables (`FC_*`, except the listen ports, which
//! are the runtime's), the STS credentials (`ALIBABA_CLOUD_ACCESS_KEY_ID`,
//! `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, `ALIBABA_CLOUD_SECURITY_TOKEN`), `TZ` and `LANG`.
//! `"none"` is Noslate's strict behaviour; a list of names and `PREFIX*` patterns passes exactly
//! those (then even the runtime's own variables pass, if listed).

use super::problems::Problems;
use serde_json::Value;

/// FC's variables that belong to the runtime, not the function: where it listens.
const RUNTIME_PORTS: [&str; 2] = ["FC_SERVER_PORT", "FC_CUSTOM_LISTEN_PORT"];

/// Variables FC's runtimes give functions besides `FC_*`.
const FC_PASSED: [&str; 5] = [
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
    "TZ",
    "LANG",
];

/// One entry of an inheritance list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvPattern {
    /// This name.
    Name(String),
    /// Every name starting with this (written `PREFIX*`).
    Prefix(String),
}

impl EnvPattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            EnvPattern::Name(n) => n == name,
            EnvPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// What a worker inherits from the runtime's environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InheritEnv {
    /// FC's system variables, the credentials, `TZ` and `LANG`.
    #[default]
    Fc,
    /// Nothing.
    None,
    /// Exactly these names and prefixes.
    List(Vec<EnvPattern>),
}

impl InheritEnv {
    /// Whether a variable named `name` passes.
    pub fn passes(&self, name: &str) -> bool {
        match self {
            InheritEnv::Fc => {
                (name.starts_with("FC_") && !RUNTIME_PORTS.contains(&name))
                    || FC_PASSED.contains(&name)
            }
            InheritEnv::None => false,
            InheritEnv::List(patterns) => patterns.iter().any(|p| p.matches(name)),
        }
    }

    /// The variables of `env` that pass, in its order.
    pub fn inherited(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Vec<(String, String)> {
        env.into_iter().filter(|(k, _)| self.passes(k)).collect()
    }

    /// How the probe and docs name the policy.
    pub fn describe(&self) -> String {
        match self {
            InheritEnv::Fc => "fc".to_owned(),
            InheritEnv::None => "none".to_owned(),
            InheritEnv::List(patterns) => patterns
                .iter()
                .map(|p| match p {
                    EnvPattern::Name(n) => n.clone(),
                    EnvPattern::Prefix(p) => format!("{p}*"),
                })
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Parses `turf.inheritEnv` at `path`: `"fc"`, `"none"`, or a list of names and `PREFIX*`
/// patterns. Problems are reported with their field paths.
pub(super) fn parse_inherit_env(value: &Value, path: &str, p: &mut Problems) -> Option<InheritEnv> {
    match value {
        Value::String(mode) => match mode.as_str() {
            "fc" => Some(InheritEnv::Fc),
            "none" => Some(InheritEnv::None),
            other => {
                p.add(
                    path.to_owned(),
                    format!(
                        "expected \"fc\", \"none\" or a list of names and PREFIX* patterns, \
                         got {other:?}"
                    ),
                );
                None
            }
        },
        Value::Array(items) => {
            let mut patterns = Vec::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}[{i}]");
                match item.as_str().map(pattern) {
                    Some(Ok(pattern)) => patterns.push(pattern),
                    Some(Err(why)) => {
                        p.add(at, why);
                        ok = false;
                    }
                    None => {
                        p.add(at, format!("expected a string, got {item}"));
                        ok = false;
                    }
                }
            }
            ok.then_some(InheritEnv::List(patterns))
        }
        other => {
            p.add(
                path.to_owned(),
                format!(
                    "expected \"fc\", \"none\" or a list of names and PREFIX* patterns, got {other}"
                ),
            );
            None
        }
    }
}

/// One list entry: a variable name, or a name prefix followed by one `*` at the end.
fn pattern(text: &str) -> Result<EnvPattern, String> {
    let (name, prefix) = match text.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (text, false),
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "must be a variable name ([A-Za-z_][A-Za-z0-9_]*) or a prefix of one followed by \
             one *, got {text:?}"
        ));
    }
    Ok(if prefix {
        EnvPattern::Prefix(name.to_owned())
    } else {
        EnvPattern::Name(name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), "v".to_owned()))
            .collect()
    }

    fn names(pairs: &[(String, String)]) -> Vec<&str> {
        pairs.iter().map(|(k, _)| k.as_str()).collect()
    }

    const RUNTIME_ENV: &[&str] = &[
        "FC_REGION",
        "FC_ACCOUNT_ID",
        "FC_FUNCTION_NAME",
        "FC_INSTANCE_ID",
        "FC_SERVER_PORT",
        "FC_CUSTOM_LISTEN_PORT",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        "TZ",
        "LANG",
        "NOSLATE_WORKDIR",
        "NOSLATED_CONFIG_PATH",
        "RUST_LOG",
        "DATABASE_PASSWORD",
        "MY_SETTING",
        "MY_OTHER",
    ];

    #[test]
    fn fc_passes_fc_variables_credentials_tz_and_lang_only() {
        assert_eq!(
            names(&InheritEnv::Fc.inherited(env(RUNTIME_ENV))),
            [
                "FC_REGION",
                "FC_ACCOUNT_ID",
                "FC_FUNCTION_NAME",
                "FC_INSTANCE_ID",
                "ALIBABA_CLOUD_ACCESS_KEY_ID",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                "ALIBABA_CLOUD_SECURITY_TOKEN",
                "TZ",
                "LANG",
            ]
        );
        assert!(InheritEnv::None.inherited(env(RUNTIME_ENV)).is_empty());
    }

    #[test]
    fn a_list_passes_exactly_its_names_and_prefixes() {
        let mut p = Problems::default();
        let list = parse_inherit_env(
            &serde_json::json!(["MY_*", "TZ"]),
            "turf.inheritEnv",
            &mut p,
        )
        .expect("valid");
        assert_eq!(
            names(&list.inherited(env(RUNTIME_ENV))),
            ["TZ", "MY_SETTING", "MY_OTHER"]
        );
        assert_eq!(list.describe(), "MY_*,TZ");
    }

    #[test]
    fn bad_modes_and_patterns_are_problems_with_their_paths() {
        let mut p = Problems::default();
        let bad = serde_json::json!(["OK", "", "A*B", "*", "1X", "X**", 5]);
        assert_eq!(parse_inherit_env(&bad, "turf.inheritEnv", &mut p), None);
        assert!(parse_inherit_env(&serde_json::json!("all"), "turf.inheritEnv", &mut p).is_none());
        assert!(parse_inherit_env(&serde_json::json!(true), "turf.inheritEnv", &mut p).is_none());
        let shown: Vec<String> = p
            .finish(())
            .expect_err("problems")
            .iter()
            .map(ToString::to_string)
            .collect();
        let paths: Vec<&str> = shown
            .iter()
            .map(|s| s.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "turf.inheritEnv[1]",
                "turf.inheritEnv[2]",
                "turf.inheritEnv[3]",
                "turf.inheritEnv[4]",
                "turf.inheritEnv[5]",
                "turf.inheritEnv[6]",
                "turf.inheritEnv",
                "turf.inheritEnv",
            ],
            "{shown:?}"
        );
    }
}
