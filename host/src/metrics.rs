//! The Prometheus text format (version 0.0.4) that `GET /metrics` serves: one small
//! writer that every counter struct renders through.
//!
//! What it does: writes `# HELP` and `# TYPE` once per family, then the family's samples,
//! one a line, with label values (and help text) escaped; every line ends with a newline.
//! In debug builds it checks metric and label names and that no family is written twice.
//! What it does not do: read counters, keep state between scrapes, or serve HTTP.

use std::fmt::Write as _;

/// The `Content-Type` of the text [`Metrics`] writes.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What a family's samples mean to a scraper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// Prometheus text being written; [`Metrics::finish`] hands it over.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    out: String,
    /// Families written so far, to catch one written twice.
    #[cfg(debug_assertions)]
    families: std::collections::BTreeSet<String>,
}

impl Metrics {
    /// An empty text; call once per scrape.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// One counter without labels.
    pub(crate) fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family::<0, &str>(name, help, Kind::Counter, [], [([], value)]);
    }

    /// One gauge without labels.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family::<0, &str>(name, help, Kind::Gauge, [], [([], value)]);
    }

    /// A family of `kind` with one label: one sample per `(label value, value)`.
    pub(crate) fn labelled<V: AsRef<str>>(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        label: &str,
        samples: impl IntoIterator<Item = (V, u64)>,
    ) {
        let samples = samples.into_iter().map(|(v, n)| ([v], n));
        self.family(name, help, kind, [label], samples);
    }

    /// A family with `N` labels: HELP and TYPE, then one sample per `(label values,
    /// value)`, the values in the order of `labels`.
    pub(crate) fn family<const N: usize, V: AsRef<str>>(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: [&str; N],
        samples: impl IntoIterator<Item = ([V; N], u64)>,
    ) {
        debug_assert!(is_metric_name(name), "bad metric name {name:?}");
        debug_assert!(
            labels.iter().all(|l| is_label_name(l)),
            "bad label name in {name}: {labels:?}"
        );
        #[cfg(debug_assertions)]
        assert!(
            self.families.insert(name.to_owned()),
            "metric family {name} written twice"
        );
        let out = &mut self.out;
        let _ = write!(out, "# HELP {name} ");
        escape_help(out, help);
        let _ = writeln!(out, "\n# TYPE {name} {}", kind.as_str());
        for (values, n) in samples {
            out.push_str(name);
            if N > 0 {
                out.push('{');
                for (i, (label, value)) in labels.iter().zip(&values).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{label}=\"");
                    escape_label_value(out, value.as_ref());
                    out.push('"');
                }
                out.push('}');
            }
            let _ = writeln!(out, " {n}");
        }
    }

    /// The text written so far.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Help text escaped as the format asks: backslash and newline.
fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A label value escaped as the format asks: backslash, double quote and newline.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved for Prometheus itself).
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_metrics_have_help_type_and_one_sample() {
        let mut m = Metrics::new();
        m.counter("weft_a_total", "Things done.", 7);
        m.gauge("weft_b", "Things there.", 0);
        assert_eq!(
            m.finish(),
            "# HELP weft_a_total Things done.\n# TYPE weft_a_total counter\nweft_a_total 7\n\
             # HELP weft_b Things there.\n# TYPE weft_b gauge\nweft_b 0\n"
        );
    }

    #[test]
    fn a_family_writes_help_and_type_once() {
        let mut m = Metrics::new();
        m.labelled(
            "weft_x_total",
            "By reason.",
            Kind::Counter,
            "reason",
            [("a", 1), ("b", u64::MAX)],
        );
        m.labelled(
            "weft_y",
            "By mode.",
            Kind::Gauge,
            "mode",
            Vec::<(String, u64)>::new(),
        );
        assert_eq!(
            m.finish(),
            "# HELP weft_x_total By reason.\n# TYPE weft_x_total counter\n\
             weft_x_total{reason=\"a\"} 1\nweft_x_total{reason=\"b\"} 18446744073709551615\n\
             # HELP weft_y By mode.\n# TYPE weft_y gauge\n"
        );
    }

    #[test]
    fn several_labels_are_written_in_order() {
        let mut m = Metrics::new();
        m.family(
            "weft_z_total",
            "By peer and direction.",
            Kind::Counter,
            ["peer", "direction"],
            [
                (["aa:bb".to_owned(), "in".to_owned()], 3),
                (["cc:dd".to_owned(), "out".to_owned()], 4),
            ],
        );
        let text = m.finish();
        let samples: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            samples,
            [
                "weft_z_total{peer=\"aa:bb\",direction=\"in\"} 3",
                "weft_z_total{peer=\"cc:dd\",direction=\"out\"} 4",
            ]
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut m = Metrics::new();
        m.labelled(
            "weft_e",
            "A \\ and a\nnewline, \"quotes\" kept.",
            Kind::Gauge,
            "v",
            [("back\\slash \"quoted\"\nnext", 1)],
        );
        assert_eq!(
            m.finish(),
            "# HELP weft_e A \\\\ and a\\nnewline, \"quotes\" kept.\n# TYPE weft_e gauge\n\
             weft_e{v=\"back\\\\slash \\\"quoted\\\"\\nnext\"} 1\n"
        );
    }

    #[test]
    fn every_line_ends_with_a_newline() {
        let mut m = Metrics::new();
        m.counter("weft_a_total", "A.", 1);
        m.labelled("weft_b_total", "B.", Kind::Counter, "l", [("x\ny", 2)]);
        let text = m.finish();
        assert!(text.ends_with('\n'), "{text:?}");
        // An escaped newline leaves the sample on one line.
        assert_eq!(text.lines().count(), 6, "{text}");
    }

    #[test]
    fn names_are_checked() {
        for good in ["weft_a:b_total", "_x"] {
            assert!(is_metric_name(good), "{good:?}");
        }
        for bad in ["", "1x", "weft-x", "weft x"] {
            assert!(!is_metric_name(bad), "{bad:?}");
        }
        for good in ["reason", "_r2"] {
            assert!(is_label_name(good), "{good:?}");
        }
        for bad in ["__name", "a:b", "2a", ""] {
            assert!(!is_label_name(bad), "{bad:?}");
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "bad metric name")]
    fn a_bad_metric_name_panics_in_debug_builds() {
        Metrics::new().counter("weft-dashed", "D.", 1);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "bad label name")]
    fn a_bad_label_name_panics_in_debug_builds() {
        Metrics::new().labelled(
            "weft_x_total",
            "X.",
            Kind::Counter,
            "__reserved",
            [("a", 1)],
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "written twice")]
    fn a_family_written_twice_panics_in_debug_builds() {
        let mut m = Metrics::new();
        m.counter("weft_a_total", "A.", 1);
        m.counter("weft_a_total", "A.", 2);
    }
}
