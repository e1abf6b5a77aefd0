//! Topic routes: a pattern such as `city/{district}/water_quality/{sensor}` maps a received
//! topic to the sensor, kind, metric and tags that its payload needs.
//!
//! A pattern is a list of levels. Each level is literal text, a `{placeholder}` (matches one
//! non-empty level and captures it), `+` (matches one level, no capture) or `#` (the rest of
//! the topic, last level only). `{sensor}`, `{kind}` and `{metric}` fill the reading; any other
//! placeholder name becomes a tag.

use std::collections::BTreeMap;
use std::sync::Arc;

use compact_str::CompactString;

use super::config::{RouteConfig, RouteFormat};
use crate::model::Tags;

/// One level of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(String),
    Capture(Capture),
    /// `+`
    Any,
    /// `#`, always last.
    Rest,
}

/// What a placeholder fills.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Capture {
    Sensor,
    Kind,
    Metric,
    Tag(CompactString),
}

/// A parsed topic pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    levels: Vec<Level>,
}

/// Why a pattern or filter is not valid; the text is shown to the user under the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("is empty")]
    Empty,
    #[error("`#` must be the last level")]
    HashNotLast,
    #[error("level {level:?}: a wildcard (`+`, `#`) must fill a whole level")]
    WildcardInLevel { level: String },
    #[error("level {level:?}: a placeholder must fill a whole level, like `{{sensor}}`")]
    BadPlaceholder { level: String },
    #[error("placeholder {{{name}}} appears twice")]
    DuplicatePlaceholder { name: String },
    #[error("a topic cannot contain a NUL character")]
    Nul,
    #[error("a shared subscription is `$share/<group>/<filter>`")]
    BadShare,
    /// Received topics never start with `$share/`: the prefix belongs in `subscribe`.
    #[error("`$share/...` is a subscription, not a topic: put it in `subscribe` and the pattern of the received topics in `topic`")]
    ShareInPattern,
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.contains('\0') {
            return Err(PatternError::Nul);
        }
        // Found by fuzzing: its derived filter would be a shared subscription (an invalid one
        // for `$share/g`) while the pattern could never match a received topic.
        if pattern == "$share" || pattern.starts_with("$share/") {
            return Err(PatternError::ShareInPattern);
        }
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::Any,
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err(PatternError::HashNotLast),
                p if p.contains('+') || p.contains('#') => {
                    return Err(PatternError::WildcardInLevel { level: p.into() })
                }
                p if p.starts_with('{') || p.ends_with('}') || p.contains(['{', '}']) => {
                    let name = p
                        .strip_prefix('{')
                        .and_then(|s| s.strip_suffix('}'))
                        .filter(|n| is_placeholder_name(n))
                        .ok_or_else(|| PatternError::BadPlaceholder { level: p.into() })?;
                    if names.contains(&name) {
                        return Err(PatternError::DuplicatePlaceholder { name: name.into() });
                    }
                    names.push(name);
                    Level::Capture(match name {
                        "sensor" => Capture::Sensor,
                        "kind" => Capture::Kind,
                        "metric" => Capture::Metric,
                        tag => Capture::Tag(tag.into()),
                    })
                }
                p => Level::Literal(p.to_string()),
            };
            levels.push(level);
        }
        Ok(Pattern { levels })
    }

    /// The subscription filter that receives every topic the pattern matches.
    pub fn filter(&self) -> String {
        let levels: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Capture(_) | Level::Any => "+",
                Level::Rest => "#",
            })
            .collect();
        levels.join("/")
    }

    /// Whether the pattern has this placeholder.
    pub fn has(&self, name: &str) -> bool {
        self.levels.iter().any(|l| match l {
            Level::Capture(Capture::Sensor) => name == "sensor",
            Level::Capture(Capture::Kind) => name == "kind",
            Level::Capture(Capture::Metric) => name == "metric",
            Level::Capture(Capture::Tag(t)) => t == name,
            _ => false,
        })
    }

    /// The tag names the pattern captures.
    pub fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Capture(Capture::Tag(t)) => Some(t.as_str()),
            _ => None,
        })
    }

    /// Matches a received topic, returning what the placeholders captured.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Captures<'t>> {
        let mut caps = Captures::default();
        let mut parts = topic.split('/');
        // MQTT: wildcards in the first level never match topics that start with `$`
        // (`$SYS/...`), so neither do placeholders.
        let dollar = topic.starts_with('$');
        for (i, level) in self.levels.iter().enumerate() {
            match level {
                Level::Rest => {
                    return (!(dollar && i == 0)).then_some(caps);
                }
                Level::Literal(lit) => {
                    if parts.next()? != lit {
                        return None;
                    }
                }
                Level::Any => {
                    parts.next()?;
                    if dollar && i == 0 {
                        return None;
                    }
                }
                Level::Capture(c) => {
                    let value = parts.next()?;
                    if value.is_empty() || (dollar && i == 0) {
                        return None;
                    }
                    match c {
                        Capture::Sensor => caps.sensor = Some(value),
                        Capture::Kind => caps.kind = Some(value),
                        Capture::Metric => caps.metric = Some(value),
                        Capture::Tag(name) => caps.tags.push((name.clone(), value)),
                    }
                }
            }
        }
        parts.next().is_none().then_some(caps)
    }
}

fn is_placeholder_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a matching topic filled in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captures<'t> {
    pub sensor: Option<&'t str>,
    pub kind: Option<&'t str>,
    pub metric: Option<&'t str>,
    /// Tag placeholders, in pattern order.
    pub tags: Vec<(CompactString, &'t str)>,
}

/// Checks a subscription filter, which may be a shared subscription
/// (`$share/<group>/<filter>`; the filter part is what is checked).
pub fn check_filter(filter: &str) -> Result<(), PatternError> {
    let inner = filter_part(filter)?;
    if inner.contains(['{', '}']) {
        // Placeholders belong in `topic`; in a filter they would be literal braces, which is
        // surely a mistake.
        return Err(PatternError::BadPlaceholder {
            level: inner.into(),
        });
    }
    Pattern::parse(inner).map(|_| ())
}

/// The filter part of a shared subscription, or the filter itself.
pub fn filter_part(filter: &str) -> Result<&str, PatternError> {
    match filter.strip_prefix("$share/") {
        None => Ok(filter),
        Some(rest) => match rest.split_once('/') {
            Some((group, inner))
                if !group.is_empty() && !group.contains(['+', '#']) && !inner.is_empty() =>
            {
                Ok(inner)
            }
            _ => Err(PatternError::BadShare),
        },
    }
}

/// A route ready for matching.
#[derive(Clone, Debug)]
pub struct Route {
    pub pattern: Pattern,
    /// The subscription filter (explicit or derived from the pattern).
    pub filter: String,
    pub kind: Option<CompactString>,
    pub format: RouteFormat,
    pub tags: BTreeMap<String, String>,
}

/// What a topic resolved to.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved<'a> {
    /// Index of the route in the connection's list.
    pub route: usize,
    pub format: RouteFormat,
    pub sensor: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub metric: Option<&'a str>,
    /// Placeholder tags and the route's fixed tags, sorted by key; `None` when there are none.
    pub tags: Option<Tags>,
}

/// The routes of one connection, tried in order.
#[derive(Clone, Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(configs: &[RouteConfig]) -> Result<Router, (usize, PatternError)> {
        let mut routes = Vec::with_capacity(configs.len());
        for (i, rc) in configs.iter().enumerate() {
            let pattern = Pattern::parse(&rc.topic).map_err(|e| (i, e))?;
            let filter = match &rc.subscribe {
                Some(f) => {
                    check_filter(f).map_err(|e| (i, e))?;
                    f.clone()
                }
                None => pattern.filter(),
            };
            routes.push(Route {
                pattern,
                filter,
                kind: rc.kind.as_deref().map(CompactString::from),
                format: rc.format,
                tags: rc.tags.clone(),
            });
        }
        Ok(Router { routes })
    }

    /// The distinct subscription filters, in route order.
    pub fn filters(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.routes {
            if !out.contains(&r.filter) {
                out.push(r.filter.clone());
            }
        }
        out
    }

    /// The first route whose pattern matches the topic.
    pub fn resolve<'a>(&'a self, topic: &'a str) -> Option<Resolved<'a>> {
        self.routes.iter().enumerate().find_map(|(i, r)| {
            let caps = r.pattern.matches(topic)?;
            let mut tags: Vec<(CompactString, CompactString)> = r
                .tags
                .iter()
                .map(|(k, v)| {
                    (
                        CompactString::from(k.as_str()),
                        CompactString::from(v.as_str()),
                    )
                })
                .collect();
            for (k, v) in caps.tags {
                // The topic is more specific than the route's fixed tags.
                tags.retain(|(key, _)| *key != k);
                tags.push((k, CompactString::from(v)));
            }
            tags.sort_by(|a, b| a.0.cmp(&b.0));
            Some(Resolved {
                route: i,
                format: r.format,
                sensor: caps.sensor,
                kind: caps.kind.or(r.kind.as_deref()),
                metric: caps.metric,
                tags: (!tags.is_empty()).then(|| Arc::from(tags)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(topic: &str) -> RouteConfig {
        RouteConfig {
            topic: topic.into(),
            subscribe: None,
            kind: None,
            format: RouteFormat::Json,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn pattern_matching_table() {
        // (pattern, topic, expected (sensor, kind, metric, tags) or None)
        type Want = Option<(
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Vec<(&'static str, &'static str)>,
        )>;
        let cases: Vec<(&str, &str, Want)> = vec![
            (
                "city/{district}/{kind}/{sensor}",
                "city/north/noise/nz-1",
                Some((
                    Some("nz-1"),
                    Some("noise"),
                    None,
                    vec![("district", "north")],
                )),
            ),
            ("city/{district}/{kind}/{sensor}", "city/north/noise", None),
            (
                "city/{district}/{kind}/{sensor}",
                "city/north/noise/nz-1/x",
                None,
            ),
            (
                "city/{district}/{kind}/{sensor}",
                "town/north/noise/nz-1",
                None,
            ),
            // A placeholder does not capture an empty level.
            ("city/{district}/{kind}/{sensor}", "city//noise/nz-1", None),
            (
                "city/+/value/{sensor}/{metric}",
                "city/x/value/wl-1/level",
                Some((Some("wl-1"), None, Some("level"), vec![])),
            ),
            // `+` matches an empty level, as in MQTT.
            (
                "a/+/{sensor}",
                "a//s1",
                Some((Some("s1"), None, None, vec![])),
            ),
            (
                "a/{sensor}/#",
                "a/s1/b/c",
                Some((Some("s1"), None, None, vec![])),
            ),
            // `#` also matches the parent level.
            (
                "a/{sensor}/#",
                "a/s1",
                Some((Some("s1"), None, None, vec![])),
            ),
            ("#", "anything/at/all", Some((None, None, None, vec![]))),
            // Wildcards in the first level never match `$` topics.
            ("#", "$SYS/broker/uptime", None),
            ("+/{sensor}", "$SYS/x", None),
            ("{site}/{sensor}", "$SYS/x", None),
            (
                "$SYS/{sensor}",
                "$SYS/x",
                Some((Some("x"), None, None, vec![])),
            ),
            // Literals are case-sensitive.
            ("City/{sensor}", "city/x", None),
        ];
        for (pattern, topic, want) in cases {
            let p = Pattern::parse(pattern).expect(pattern);
            let got = p.matches(topic).map(|c| {
                (
                    c.sensor,
                    c.kind,
                    c.metric,
                    c.tags
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<Vec<_>>(),
                )
            });
            let want = want.map(|(s, k, m, t)| {
                (
                    s,
                    k,
                    m,
                    t.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<Vec<_>>(),
                )
            });
            assert_eq!(got, want, "pattern {pattern:?} topic {topic:?}");
        }
    }

    #[test]
    fn invalid_patterns_say_why() {
        let cases = [
            ("", PatternError::Empty),
            ("a/#/b", PatternError::HashNotLast),
            (
                "a/b+/c",
                PatternError::WildcardInLevel { level: "b+".into() },
            ),
            (
                "a/x{sensor}",
                PatternError::BadPlaceholder {
                    level: "x{sensor}".into(),
                },
            ),
            ("a/{}", PatternError::BadPlaceholder { level: "{}".into() }),
            (
                "a/{sensor",
                PatternError::BadPlaceholder {
                    level: "{sensor".into(),
                },
            ),
            (
                "{sensor}/{sensor}",
                PatternError::DuplicatePlaceholder {
                    name: "sensor".into(),
                },
            ),
        ];
        for (pattern, want) in cases {
            assert_eq!(Pattern::parse(pattern), Err(want), "{pattern:?}");
        }
    }

    #[test]
    fn default_filter_turns_placeholders_into_plus() {
        let cases = [
            ("city/{district}/{kind}/{sensor}", "city/+/+/+"),
            (
                "city/{district}/{kind}/{sensor}/value/{metric}",
                "city/+/+/+/value/+",
            ),
            ("a/+/{sensor}/#", "a/+/+/#"),
            ("plain/topic", "plain/topic"),
        ];
        for (pattern, filter) in cases {
            assert_eq!(
                Pattern::parse(pattern).map(|p| p.filter()),
                Ok(filter.into())
            );
        }
    }

    #[test]
    fn shared_subscriptions_check_their_filter_part() {
        assert_eq!(filter_part("$share/g1/city/+/#"), Ok("city/+/#"));
        assert_eq!(filter_part("city/+/#"), Ok("city/+/#"));
        assert_eq!(check_filter("$share/g1/city/+/#"), Ok(()));
        assert_eq!(check_filter("$share/g1/"), Err(PatternError::BadShare));
        assert_eq!(check_filter("$share//city/#"), Err(PatternError::BadShare));
        assert_eq!(
            check_filter("$share/g+/city/#"),
            Err(PatternError::BadShare)
        );
        assert_eq!(
            check_filter("$share/g/a/#/b"),
            Err(PatternError::HashNotLast)
        );
        assert!(matches!(
            check_filter("city/{sensor}"),
            Err(PatternError::BadPlaceholder { .. })
        ));
    }

    #[test]
    fn first_matching_route_wins_and_fills_the_context() {
        let mut specific = route("city/{district}/water_quality/{sensor}");
        specific.kind = Some("water_quality".into());
        specific.tags.insert("source".into(), "plant".into());
        specific.tags.insert("district".into(), "fixed".into());
        let mut value = route("city/{district}/{kind}/{sensor}/value/{metric}");
        value.format = RouteFormat::Value;
        let mut shared = route("city/{district}/{kind}/{sensor}");
        shared.subscribe = Some("$share/gw/city/+/+/+".into());
        let router = Router::new(&[specific, value, shared]).expect("routes are valid");

        assert_eq!(
            router.filters(),
            vec![
                "city/+/water_quality/+",
                "city/+/+/+/value/+",
                "$share/gw/city/+/+/+"
            ]
        );

        let r = router
            .resolve("city/east/water_quality/wq-7")
            .expect("route 0");
        assert_eq!(r.route, 0);
        assert_eq!(r.sensor, Some("wq-7"));
        assert_eq!(r.kind, Some("water_quality"));
        let tags: Vec<(String, String)> = r
            .tags
            .expect("tags")
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The placeholder overrides the fixed tag of the same name; tags are sorted.
        assert_eq!(
            tags,
            vec![
                ("district".to_string(), "east".to_string()),
                ("source".to_string(), "plant".to_string())
            ]
        );

        let r = router
            .resolve("city/east/noise/nz-1/value/laeq")
            .expect("route 1");
        assert_eq!((r.route, r.format), (1, RouteFormat::Value));
        assert_eq!(
            (r.sensor, r.kind, r.metric),
            (Some("nz-1"), Some("noise"), Some("laeq"))
        );

        // Matched against the pattern, not the `$share/...` filter.
        let r = router.resolve("city/east/noise/nz-1").expect("route 2");
        assert_eq!(
            (r.route, r.sensor, r.kind),
            (2, Some("nz-1"), Some("noise"))
        );

        assert_eq!(router.resolve("city/east/noise"), None);
        assert_eq!(router.resolve("elsewhere/x"), None);
    }

    #[test]
    fn a_bad_route_names_its_index() {
        let routes = [route("a/{sensor}"), route("b/#/c")];
        assert_eq!(
            Router::new(&routes).map(|_| ()),
            Err((1, PatternError::HashNotLast))
        );
    }
}
