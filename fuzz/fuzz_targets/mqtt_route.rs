//! The MQTT topic router: patterns parse or say why, a pattern's derived subscription filter
//! is a valid filter that receives every topic the pattern matches (checked against an
//! independent MQTT matcher), and a resolved topic fills the context consistently.
//!
//! Input: route lines (`pattern`, or `pattern<TAB>subscribe filter`), an empty line, then
//! one received topic per line.
#![no_main]

use std::collections::BTreeMap;

use citygate::sources::mqtt::config::{RouteConfig, RouteFormat};
use citygate::sources::mqtt::{check_filter, Pattern, Router};
use citygate_fuzz::mqtt_filter_matches;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (route_lines, topic_lines) = text.split_once("\n\n").unwrap_or((text, ""));
    let configs: Vec<RouteConfig> = route_lines
        .split('\n')
        .enumerate()
        .map(|(i, line)| {
            let (topic, subscribe) = match line.split_once('\t') {
                Some((t, s)) => (t, Some(s.to_string())),
                None => (line, None),
            };
            RouteConfig {
                topic: topic.into(),
                subscribe,
                kind: (i % 2 == 0).then(|| "water_quality".to_string()),
                format: RouteFormat::Json,
                tags: BTreeMap::from([
                    ("district".to_string(), "fixed".to_string()),
                    ("site".to_string(), format!("s{i}")),
                ]),
            }
        })
        .collect();
    let topics: Vec<&str> = topic_lines.split('\n').collect();

    let patterns: Vec<Option<Pattern>> = configs
        .iter()
        .map(|c| check_pattern(&c.topic, &topics))
        .collect();

    let router = match Router::new(&configs) {
        Ok(router) => router,
        Err((i, e)) => {
            assert!(i < configs.len());
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let filters = router.filters();
    for (i, f) in filters.iter().enumerate() {
        assert!(!filters[..i].contains(f), "filter {f:?} twice");
    }
    for topic in &topics {
        let first_match = patterns
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.matches(topic).is_some()));
        let resolved = router.resolve(topic);
        assert_eq!(
            resolved.as_ref().map(|r| r.route),
            first_match,
            "topic {topic:?}"
        );
        let Some(r) = resolved else {
            continue;
        };
        let levels: Vec<&str> = topic.split('/').collect();
        for captured in [r.sensor, r.metric].into_iter().flatten() {
            assert!(!captured.is_empty() && levels.contains(&captured), "{r:?}");
        }
        let pattern = patterns[r.route].as_ref().expect("the router parsed it");
        assert_eq!(r.sensor.is_some(), pattern.has("sensor"));
        assert_eq!(r.metric.is_some(), pattern.has("metric"));
        match (pattern.has("kind"), &configs[r.route].kind) {
            (false, Some(k)) => assert_eq!(r.kind, Some(k.as_str())),
            (false, None) => assert_eq!(r.kind, None),
            (true, _) => assert!(r.kind.is_some_and(|k| levels.contains(&k))),
        }
        let tags = r.tags.expect("every route here has fixed tags");
        assert!(tags.windows(2).all(|w| w[0].0 < w[1].0), "tags {tags:?}");
        for name in pattern.tag_names() {
            let value = tags
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            assert!(
                value.is_some_and(|v| !v.is_empty() && levels.contains(&v)),
                "{name}: {tags:?}"
            );
        }
    }
});

/// Parses a pattern and checks its filter against every topic it matches.
fn check_pattern(text: &str, topics: &[&str]) -> Option<Pattern> {
    let pattern = match Pattern::parse(text) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return None;
        }
    };
    let filter = pattern.filter();
    assert_eq!(
        check_filter(&filter),
        Ok(()),
        "derived filter {filter:?} of {text:?}"
    );
    for topic in topics {
        if pattern.matches(topic).is_some() {
            assert!(
                mqtt_filter_matches(&filter, topic),
                "{text:?} matches {topic:?} but its filter {filter:?} would not deliver it"
            );
        }
    }
    Some(pattern)
}
