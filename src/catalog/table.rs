//! The catalog as a plain-text table for people (`citygate catalog`): per kind its metrics
//! and its default rules, with the kind-wide `overrides` of the loaded config applied, so an
//! operator sees the thresholds that are actually in force for sensors without their own.

use std::fmt::Write as _;

use crate::catalog::spec::{DisplayName, KindSpec, Levels, RuleOverride, RuleSpec, ScheduleSpec};
use crate::config::{Config, Dur};

/// The language of the table's headings and display names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    fn pick(self, en: &'static str, zh: &'static str) -> &'static str {
        match self {
            Lang::En => en,
            Lang::Zh => zh,
        }
    }

    /// A display name in this language; a missing Chinese name falls back to English.
    fn name(self, name: &DisplayName) -> String {
        match self {
            Lang::Zh if !name.zh.is_empty() => name.zh.clone(),
            _ => name.en.clone(),
        }
    }
}

/// Renders every kind of the config's catalog, in kind-name order.
pub fn render(config: &Config, lang: Lang) -> String {
    let mut out = String::new();
    for (i, (kind, spec)) in config.catalog.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_kind(&mut out, kind, spec, lang);
    }
    out
}

fn render_kind(out: &mut String, kind: &str, spec: &KindSpec, lang: Lang) {
    let _ = writeln!(out, "{kind} — {}", lang.name(&spec.name));
    if !spec.standard.is_empty() {
        let _ = writeln!(
            out,
            "  {}: {}",
            lang.pick("standard", "标准"),
            spec.standard
        );
    }
    if let Some(d) = spec.offline_after {
        let _ = writeln!(
            out,
            "  {}: {}",
            lang.pick("offline after", "离线判定"),
            compact_duration(d)
        );
    }
    if !spec.profiles.is_empty() {
        let names: Vec<String> = spec
            .profiles
            .keys()
            .map(|p| {
                if spec.default_profile.as_deref() == Some(p.as_str()) {
                    format!("{p} ({})", lang.pick("default", "默认"))
                } else {
                    p.clone()
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "  {}: {}",
            lang.pick("profiles", "方案"),
            names.join(", ")
        );
    }

    let _ = writeln!(out, "  {}:", lang.pick("metrics", "指标"));
    out.push_str(&metrics_table(spec, lang).render("    "));
    if !spec.rules.is_empty() {
        let _ = writeln!(out, "  {}:", lang.pick("rules", "规则"));
        out.push_str(&rules_table(spec, lang).render("    "));
    }
}

fn metrics_table(spec: &KindSpec, lang: Lang) -> Table {
    let mut t = Table::new([
        lang.pick("metric", "指标"),
        lang.pick("name", "名称"),
        lang.pick("unit", "单位"),
        lang.pick("also accepted", "别名"),
        lang.pick("plausible range", "合理范围"),
        lang.pick("max rate/h", "最大变化率/时"),
        lang.pick("counter", "累计量"),
        lang.pick("flat-line check", "恒值检查"),
    ]);
    for (name, m) in &spec.metrics {
        t.row([
            name.clone(),
            lang.name(&m.name),
            m.unit.clone(),
            m.unit_aliases.join(", "),
            format!("{}..{}", num(m.min), num(m.max)),
            m.max_rate_per_hour.map(num).unwrap_or_default(),
            match (m.counter, m.rollover) {
                (false, _) => String::new(),
                (true, None) => lang.pick("yes", "是").to_string(),
                (true, Some(r)) => format!(
                    "{} ({} {})",
                    lang.pick("yes", "是"),
                    lang.pick("wraps at", "回绕于"),
                    num(r)
                ),
            },
            if m.flatline {
                lang.pick("yes", "是")
            } else {
                lang.pick("no", "否")
            }
            .to_string(),
        ]);
    }
    t
}

fn rules_table(spec: &KindSpec, lang: Lang) -> Table {
    let mut t = Table::new([
        lang.pick("rule", "规则"),
        lang.pick("metric", "指标"),
        lang.pick("compares", "比较对象"),
        lang.pick("info", "提示"),
        lang.pick("warning", "警告"),
        lang.pick("major", "重要"),
        lang.pick("critical", "严重"),
        lang.pick("for", "持续"),
        lang.pick("hysteresis", "回差"),
        lang.pick("schedule", "时段"),
        lang.pick("profiles", "方案"),
    ]);
    for rule in &spec.rules {
        let rule = with_override(rule, spec.overrides.get(&rule.name));
        let mut cells = [
            rule.name.clone(),
            rule.metric.clone(),
            compared(&rule, lang),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            rule.for_duration.map(compact_duration).unwrap_or_default(),
            if rule.hysteresis > 0.0 {
                num(rule.hysteresis)
            } else {
                String::new()
            },
            rule.schedule
                .iter()
                .map(|s| schedule_span(s, lang))
                .collect::<Vec<_>>()
                .join("; "),
            spec.profiles
                .iter()
                .filter(|(_, p)| p.rules.contains_key(&rule.name))
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ];
        for (i, cell) in severity_cells(rule.above.as_ref(), rule.below.as_ref())
            .into_iter()
            .enumerate()
        {
            cells[3 + i] = cell;
        }
        if rule.disabled {
            cells[0] = format!("{} ({})", rule.name, lang.pick("off", "停用"));
        } else if !has_thresholds(&rule) {
            // A template rule: inactive until a sensor sets its own levels.
            cells[4] = lang.pick("set per sensor", "按站点设置").to_string();
        }
        t.row(cells);
    }
    t
}

/// The rule as the kind-wide overrides of the loaded config leave it.
fn with_override(rule: &RuleSpec, o: Option<&RuleOverride>) -> RuleSpec {
    let mut rule = rule.clone();
    let Some(o) = o else { return rule };
    if o.above.is_some() {
        rule.above = o.above;
    }
    if o.below.is_some() {
        rule.below = o.below;
    }
    if let Some(h) = o.hysteresis {
        rule.hysteresis = h;
    }
    if o.for_duration.is_some() {
        rule.for_duration = o.for_duration;
    }
    if let Some(s) = &o.schedule {
        rule.schedule = s.clone();
    }
    if let Some(d) = o.disabled {
        rule.disabled = d;
    }
    rule
}

fn has_thresholds(rule: &RuleSpec) -> bool {
    let set = |l: &Option<Levels>| l.is_some_and(|l| !l.is_empty());
    set(&rule.above) || set(&rule.below) || !rule.schedule.is_empty()
}

fn compared(rule: &RuleSpec, lang: Lang) -> String {
    match (rule.window, rule.aggregate, rule.rate_per) {
        (Some(w), Some(a), _) => match lang {
            Lang::En => format!("{} over {}", a.as_str(), compact_duration(w)),
            Lang::Zh => format!("{} {}", compact_duration(w), aggregate_zh(a.as_str())),
        },
        (_, _, Some(per)) => match lang {
            Lang::En => format!("rate per {}", compact_duration(per)),
            Lang::Zh => format!("每 {} 变化量", compact_duration(per)),
        },
        _ => lang.pick("value", "瞬时值").to_string(),
    }
}

fn aggregate_zh(a: &str) -> &'static str {
    match a {
        "sum" => "累计",
        "mean" => "均值",
        "max" => "最大值",
        _ => "最小值",
    }
}

/// One cell per severity (info, warning, major, critical): "> 9", "< 6" or both.
fn severity_cells(above: Option<&Levels>, below: Option<&Levels>) -> [String; 4] {
    let mut cells: [String; 4] = Default::default();
    for (levels, sign) in [(above, ">"), (below, "<")] {
        let Some(levels) = levels else { continue };
        for (i, v) in [levels.info, levels.warning, levels.major, levels.critical]
            .into_iter()
            .enumerate()
        {
            if let Some(v) = v {
                if !cells[i].is_empty() {
                    cells[i].push_str(", ");
                }
                let _ = write!(cells[i], "{sign} {}", num(v));
            }
        }
    }
    cells
}

/// "22:00-06:00 > 50 (W), 60 (M)": a span with its levels, severities abbreviated.
fn schedule_span(span: &ScheduleSpec, lang: Lang) -> String {
    let mut parts = Vec::new();
    for (levels, sign) in [(span.above.as_ref(), ">"), (span.below.as_ref(), "<")] {
        let Some(levels) = levels else { continue };
        let each: Vec<String> = [
            (lang.pick("I", "提示"), levels.info),
            (lang.pick("W", "警告"), levels.warning),
            (lang.pick("M", "重要"), levels.major),
            (lang.pick("C", "严重"), levels.critical),
        ]
        .into_iter()
        .filter_map(|(s, v)| v.map(|v| format!("{} ({s})", num(v))))
        .collect();
        if !each.is_empty() {
            parts.push(format!("{sign} {}", each.join(", ")));
        }
    }
    format!("{}-{} {}", span.from, span.to, parts.join(" "))
}

/// Shortest honest spelling of a number: 50 not 50.0, 0.05, 1e12 for huge register limits.
fn num(v: f64) -> String {
    if v.abs() >= 1e7 {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// "24h", "30m", "1h 30m", "7d": shorter than humantime's "1day" and what config files say.
fn compact_duration(d: Dur) -> String {
    let mut secs = d.0.as_secs();
    if secs == 0 {
        return format!("{}ms", d.0.as_millis());
    }
    // Whole days read better in hours up to two days: "24h" is how rain windows are stated.
    let mut parts = Vec::new();
    if secs >= 3 * 86_400 && secs % 86_400 == 0 {
        parts.push(format!("{}d", secs / 86_400));
        secs = 0;
    }
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    parts.join(" ")
}

/// Columns of text padded to their display width.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new<const N: usize>(header: [&str; N]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.into());
    }

    fn render(&self, indent: &str) -> String {
        // Columns empty in every row are left out: most kinds have no info level, no schedule.
        let shown: Vec<usize> = (0..self.header.len())
            .filter(|&c| {
                self.rows
                    .iter()
                    .any(|r| r.get(c).is_some_and(|s| !s.is_empty()))
            })
            .collect();
        let widths: Vec<usize> = shown
            .iter()
            .map(|&c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .chain(std::iter::once(&self.header[c]))
                    .map(|s| display_width(s))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::from(indent);
            for (i, &c) in shown.iter().enumerate() {
                let cell = line.get(c).map(String::as_str).unwrap_or("");
                text.push_str(cell);
                if i + 1 < shown.len() {
                    let pad = widths[i] - display_width(cell) + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Terminal columns a string takes: East Asian wide and fullwidth characters take two.
/// Covers the ranges the catalog's Chinese names use; combining marks are not expected here.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let wide = matches!(
        u32::from(c),
        0x1100..=0x115F          // Hangul Jamo initials
        | 0x2E80..=0x303E        // CJK radicals, Kangxi, CJK symbols and punctuation (、。)
        | 0x3041..=0x33FF        // Kana, Bopomofo, CJK compatibility
        | 0x3400..=0x4DBF        // CJK extension A
        | 0x4E00..=0x9FFF        // CJK unified ideographs
        | 0xA000..=0xA4CF        // Yi
        | 0xAC00..=0xD7A3        // Hangul syllables
        | 0xF900..=0xFAFF        // CJK compatibility ideographs
        | 0xFE30..=0xFE4F        // CJK compatibility forms
        | 0xFF00..=0xFF60        // Fullwidth forms (（），：)
        | 0xFFE0..=0xFFE6        // Fullwidth signs
        | 0x20000..=0x3FFFD // CJK extensions B and later
    );
    if wide {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::load_with_env;

    fn defaults() -> Config {
        load_with_env(&[], Some(HashMap::new())).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn lists_every_kind_and_metric() {
        let config = defaults();
        for lang in [Lang::En, Lang::Zh] {
            let text = render(&config, lang);
            for (kind, spec) in &config.catalog {
                assert!(
                    text.contains(&format!("{kind} — ")),
                    "{kind} missing in {lang:?}"
                );
                for metric in spec.metrics.keys() {
                    assert!(
                        text.lines()
                            .any(|l| l.trim_start().starts_with(&format!("{metric} "))),
                        "metric {kind}.{metric} missing in {lang:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn rainstorm_3h_row_shows_orange_and_red_levels() {
        let text = render(&defaults(), Lang::En);
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with("rainstorm_3h "))
            .unwrap_or_else(|| panic!("no rainstorm_3h row in\n{text}"));
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            ["rainstorm_3h", "rainfall", "sum over 3h", "> 50", "> 100"]
        );
    }

    #[test]
    fn chinese_names_keep_columns_aligned() {
        let text = render(&defaults(), Lang::Zh);
        let block: Vec<&str> = text
            .split("water_quality — ")
            .nth(1)
            .and_then(|rest| rest.split("  规则:").next())
            .map(|metrics| {
                metrics
                    .lines()
                    .skip_while(|l| !l.contains("指标  "))
                    .collect()
            })
            .unwrap_or_default();
        // The unit column starts at the same terminal column on every row, however many
        // double-width characters the name before it has.
        let unit_col = |line: &str, unit: &str| {
            line.find(&format!("  {unit}"))
                .map(|i| display_width(&line[..i]))
        };
        let header = block.first().copied().unwrap_or_default();
        let header_col = unit_col(header, "单位");
        assert!(header_col.is_some(), "no header in {block:?}");
        let cod = block
            .iter()
            .find(|l| l.trim_start().starts_with("cod "))
            .copied()
            .unwrap_or_default();
        let ph = block
            .iter()
            .find(|l| l.trim_start().starts_with("ph "))
            .copied()
            .unwrap_or_default();
        assert_eq!(unit_col(cod, "mg/L"), header_col, "{cod:?} vs {header:?}");
        assert!(cod.contains("化学需氧量"), "{cod:?}");
        // pH has no unit; its next column (range) must line up with cod's.
        let range_col =
            |line: &str, range: &str| line.find(range).map(|i| display_width(&line[..i]));
        assert_eq!(range_col(ph, "0..14"), range_col(cod, "0..1000"));
    }

    #[test]
    fn kind_overrides_change_the_shown_thresholds() {
        let overlay = crate::config::Source::Text {
            name: "test".into(),
            toml: "[catalog.rainfall.overrides.rainstorm_3h]\nabove = { major = 40.0, critical = 80.0 }\n".into(),
        };
        let config =
            load_with_env(&[overlay], Some(HashMap::new())).unwrap_or_else(|e| panic!("{e}"));
        let text = render(&config, Lang::En);
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with("rainstorm_3h "))
            .unwrap_or_default();
        assert!(
            row.contains("> 40") && row.contains("> 80") && !row.contains("> 100"),
            "{row}"
        );
    }

    #[test]
    fn template_rules_say_they_are_set_per_sensor() {
        let text = render(&defaults(), Lang::En);
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with("flow_high "))
            .unwrap_or_default();
        assert!(row.contains("set per sensor"), "{row}");
    }

    #[test]
    fn display_width_counts_cjk_as_two() {
        assert_eq!(display_width("pH"), 2);
        assert_eq!(display_width("水位"), 4);
        assert_eq!(display_width("µg/m³"), 5);
        assert_eq!(display_width("细颗粒物(PM2.5)"), 8 + 7);
    }

    #[test]
    fn durations_are_written_as_in_config() {
        assert_eq!(compact_duration(Dur::secs(86_400)), "24h");
        assert_eq!(compact_duration(Dur::secs(5_400)), "1h 30m");
        assert_eq!(compact_duration(Dur::secs(7 * 86_400)), "7d");
    }
}
