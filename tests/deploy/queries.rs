//! What the dashboard's queries name: measurements, fields and columns of its Flux queries,
//! metric names and labels of its PromQL expressions. Read the way the queries are written
//! in deploy/grafana/dashboards/ (`r._measurement == "x"`, `columns: [...]`), not a full parser.

use std::collections::BTreeSet;

/// The names one Flux query depends on.
#[derive(Debug, Default)]
pub struct FluxRefs {
    pub measurements: BTreeSet<String>,
    pub fields: BTreeSet<String>,
    /// Other columns it reads (`r.state`, `group(columns: ["sensor"])`): each must be a tag
    /// or a field of one of its measurements (after `pivot`, fields are columns too).
    pub columns: BTreeSet<String>,
}

/// The string literals compared with `r.<column> == "..."`.
fn compared(query: &str, column: &str) -> BTreeSet<String> {
    let needle = format!("r.{column} == \"");
    let mut out = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        if let Some(end) = rest.find('"') {
            out.insert(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Names after `r.` (record accesses), skipping the `_`-prefixed built-in columns.
fn record_columns(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in query.match_indices("r.") {
        let before = query[..at].chars().next_back();
        if before.is_some_and(is_ident_char) {
            continue;
        }
        let name: String = query[at + 2..]
            .chars()
            .take_while(|c| is_ident_char(*c))
            .collect();
        if !name.is_empty() && !name.starts_with('_') {
            out.insert(name);
        }
    }
    out
}

/// The quoted names in every `columns: [...]` list, `_`-prefixed ones skipped.
fn listed_columns(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("columns: [") {
        rest = &rest[at + "columns: [".len()..];
        let end = rest.find(']').unwrap_or(rest.len());
        for item in rest[..end].split(',') {
            let name = item.trim().trim_matches('"');
            if !name.is_empty() && !name.starts_with('_') {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// Columns the query makes itself (`map(fn: (r) => ({r with started: ...}))`).
fn defined_columns(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find(" with ") {
        rest = &rest[at + " with ".len()..];
        let name: String = rest.chars().take_while(|c| is_ident_char(*c)).collect();
        if rest[name.len()..].trim_start().starts_with(':') {
            out.insert(name);
        }
    }
    out
}

pub fn flux_refs(query: &str) -> FluxRefs {
    let defined = defined_columns(query);
    let columns = record_columns(query)
        .into_iter()
        .chain(listed_columns(query))
        .filter(|c| !defined.contains(c))
        .collect();
    FluxRefs {
        measurements: compared(query, "_measurement"),
        fields: compared(query, "_field"),
        columns,
    }
}

/// Metric names in a PromQL expression (identifiers starting with `citygate_`).
pub fn prom_metrics(expr: &str) -> BTreeSet<String> {
    identifiers(expr)
        .into_iter()
        .filter(|i| i.starts_with("citygate_"))
        .collect()
}

/// Labels in `by (...)` and `without (...)` clauses.
pub fn prom_labels(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for keyword in ["by (", "without ("] {
        let mut rest = expr;
        while let Some(at) = rest.find(keyword) {
            rest = &rest[at + keyword.len()..];
            let end = rest.find(')').unwrap_or(rest.len());
            out.extend(
                rest[..end]
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    out
}

fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if is_ident_char(c) || c == ':' {
            current.push(c);
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_names_of_a_pivoted_query() {
        let q = r#"from(bucket: "b")
  |> filter(fn: (r) => r._measurement == "alerts")
  |> filter(fn: (r) => r._field == "id" or r._field == "state")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group(columns: ["id"])
  |> filter(fn: (r) => r.state != "resolved")
  |> map(fn: (r) => ({r with started: time(v: r.started_at * 1000000)}))
  |> keep(columns: ["started", "severity", "_time"])"#;
        let refs = flux_refs(q);
        assert_eq!(refs.measurements, BTreeSet::from(["alerts".to_owned()]));
        assert_eq!(
            refs.fields,
            BTreeSet::from(["id".to_owned(), "state".to_owned()])
        );
        assert_eq!(
            refs.columns,
            ["id", "severity", "started_at", "state"]
                .into_iter()
                .map(str::to_owned)
                .collect::<BTreeSet<_>>()
        );
    }

    #[test]
    fn reads_metric_names_and_labels() {
        let e = "sum by (sink) (rate(citygate_sink_points_written_total[$__rate_interval])) / citygate_outbox_points";
        assert_eq!(
            prom_metrics(e),
            BTreeSet::from([
                "citygate_outbox_points".to_owned(),
                "citygate_sink_points_written_total".to_owned()
            ])
        );
        assert_eq!(prom_labels(e), BTreeSet::from(["sink".to_owned()]));
    }
}
