//! The monitoring assets: `deploy/grafana/kredis-dashboard.json` and
//! `deploy/prometheus/kredis-rules.yaml`. They parse; every dashboard query goes through the
//! `${datasource}` variable and filters by `$namespace` and `$cluster`; the rules hold the
//! documented alerts; and every metric any PromQL expression names (dashboard targets,
//! template variables, alert expressions) is one the operator exports — read from
//! `Metrics::encode()` with every family populated — or one of the redis_exporter series
//! listed below, and every label it matches on is one those series carry. Renaming a metric in
//! `metrics.rs` (or a typo in a query) fails here. Pure: no network, no processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kredis_api::{KRedisStatus, Phase};
use kredis_operator::metrics::{ClusterLabels, FailoverLabels, FailureLabels, Metrics};
use serde::Deserialize;
use serde_json::Value;

/// redis_exporter series the dashboard and the alerts may use, each with its own labels
/// (the scrape config's target labels, [`EXPORTER_TARGET_LABELS`], come on top). Default
/// metric namespace `redis`, the one the pods' exporter (oliver006/redis_exporter v1.62.0,
/// DESIGN.md) runs with.
///
/// Checked against the exporter's source (github.com/oliver006/redis_exporter):
/// `exporter/exporter.go` — `metricMapGauges` (used_memory -> memory_used_bytes, maxmemory ->
/// memory_max_bytes, connected_clients, connected_slaves), `metricMapCounters`
/// (total_commands_processed -> commands_processed_total, keyspace_hits/misses ->
/// keyspace_*_total, total_net_input/output_bytes -> net_*_bytes_total, evicted_keys,
/// expired_keys -> *_total) and `metricDescriptions` (up, instance_info{role,...},
/// master_link_up{master_host,master_port}, db_keys{db}, commands_total{cmd},
/// commands_duration_seconds_total{cmd}); `exporter/metrics.go` `includeMetric` passes every
/// CLUSTER INFO field starting with `cluster_` through under its own name
/// (`exporter/info.go` `extractClusterInfoMetrics`; `cluster_state:ok` becomes 1). The names
/// are the same in the 2023 and 2026 sources, so in v1.62 (2024), and every one was also seen
/// live in the output of redis_exporter 1.45 scraping a Redis 7.0 cluster.
const REDIS_EXPORTER_METRICS: &[(&str, &[&str])] = &[
    ("redis_up", &[]),
    (
        "redis_instance_info",
        &[
            "role",
            "redis_version",
            "redis_build_id",
            "redis_mode",
            "os",
            "maxmemory_policy",
            "tcp_port",
            "run_id",
            "process_id",
            "master_replid",
        ],
    ),
    ("redis_memory_used_bytes", &[]),
    ("redis_memory_max_bytes", &[]),
    ("redis_connected_clients", &[]),
    ("redis_connected_slaves", &[]),
    ("redis_master_link_up", &["master_host", "master_port"]),
    ("redis_commands_processed_total", &[]),
    ("redis_commands_total", &["cmd"]),
    ("redis_commands_duration_seconds_total", &["cmd"]),
    ("redis_keyspace_hits_total", &[]),
    ("redis_keyspace_misses_total", &[]),
    ("redis_evicted_keys_total", &[]),
    ("redis_expired_keys_total", &[]),
    ("redis_net_input_bytes_total", &[]),
    ("redis_net_output_bytes_total", &[]),
    ("redis_db_keys", &["db"]),
    ("redis_cluster_state", &[]),
    ("redis_cluster_slots_assigned", &[]),
    ("redis_cluster_slots_ok", &[]),
];

/// Labels the scrape config of docs/monitoring.md puts on every redis_exporter series.
const EXPORTER_TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "kredis_cluster",
    "kredis_role",
    "kredis_shard",
];

/// Labels the scrape config puts on operator series. It sets no `namespace`, so the
/// operator's own `namespace` (of the KRedis) arrives unrenamed.
const OPERATOR_TARGET_LABELS: &[&str] = &["job", "instance", "pod"];

/// Metrics the dashboard must show (the panels the issue asks for).
const ON_DASHBOARD: &[&str] = &[
    "kredis_cluster_phase",
    "kredis_cluster_ready_masters",
    "kredis_cluster_desired_masters",
    "kredis_cluster_ready_replicas",
    "kredis_cluster_desired_replicas",
    "kredis_cluster_ready_nodes",
    "kredis_cluster_slots_assigned",
    "kredis_failovers_total",
    "kredis_slots_migrated_total",
    "kredis_keys_migrated_total",
    "kredis_reconcile_runs_total",
    "kredis_reconcile_failures_total",
    "kredis_reconcile_duration_seconds_bucket",
    "kredis_operation_duration_seconds_bucket",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_commands_processed_total",
    "redis_keyspace_hits_total",
    "redis_keyspace_misses_total",
    "redis_connected_clients",
];

/// Alerts the rules must hold, with the metrics each must use and its `for` (None: fires at
/// once).
const ALERTS: &[(&str, &[&str], Option<&str>)] = &[
    ("KRedisNotReady", &["kredis_cluster_phase"], Some("10m")),
    (
        "KRedisSlotsNotCovered",
        &["kredis_cluster_slots_assigned"],
        Some("2m"),
    ),
    (
        "KRedisMasterWithoutReplica",
        &[
            "kredis_cluster_ready_replicas",
            "kredis_cluster_desired_replicas",
            "redis_connected_slaves",
        ],
        Some("10m"),
    ),
    (
        "KRedisMemoryNearMax",
        &["redis_memory_used_bytes", "redis_memory_max_bytes"],
        Some("5m"),
    ),
    ("KRedisFailover", &["kredis_failovers_total"], None),
    (
        "KRedisReconcileFailing",
        &["kredis_reconcile_failures_total"],
        Some("15m"),
    ),
];

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The operator's series, from its own encoder.

/// Every metric family populated once, encoded.
fn operator_exposition() -> String {
    let m = Metrics::new();
    m.reconcile_runs.inc();
    m.reconcile_failures
        .get_or_create(&FailureLabels {
            category: "kube".into(),
        })
        .inc();
    m.reconcile_duration.observe(0.1);
    let status = KRedisStatus {
        phase: Some(Phase::Ready),
        ready_masters: 3,
        ready_replicas: 3,
        slots_assigned: 16384,
        ready_display: Some("6/6".into()),
        ..KRedisStatus::default()
    };
    m.record_status("default", "cache", &status, 3, 1);
    let cluster = ClusterLabels {
        namespace: "default".into(),
        name: "cache".into(),
    };
    m.failovers
        .get_or_create(&FailoverLabels {
            namespace: "default".into(),
            name: "cache".into(),
            mode: "force".into(),
        })
        .inc();
    m.slots_migrated.get_or_create(&cluster).inc();
    m.keys_migrated.get_or_create(&cluster).inc();
    m.operation_duration.get_or_create(&cluster).observe(1.0);
    m.encode()
}

/// Series names in an exposition (histograms as their `_bucket`, `_sum`, `_count` series, as
/// PromQL names them) with the label names each carries.
fn exposition_series(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let name_end = chars
            .iter()
            .position(|c| *c == '{' || *c == ' ')
            .unwrap_or(chars.len());
        let name: String = chars[..name_end].iter().collect();
        let labels = out.entry(name).or_default();
        if chars.get(name_end) == Some(&'{') {
            let (matchers, _) = parse_matchers(&chars, name_end)
                .unwrap_or_else(|e| panic!("exposition line {line:?}: {e}"));
            labels.extend(matchers.into_iter().map(|m| m.label));
        }
    }
    out
}

/// Metric families from `# TYPE` lines, as (name, type).
fn exposition_families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// Every series a query may name, with the labels it may match on.
fn known_series() -> BTreeMap<String, BTreeSet<String>> {
    let mut known = exposition_series(&operator_exposition());
    assert!(
        known.keys().all(|k| k.starts_with("kredis_")),
        "operator series outside the kredis_ prefix: {:?}",
        known.keys().collect::<Vec<_>>()
    );
    for labels in known.values_mut() {
        labels.extend(OPERATOR_TARGET_LABELS.iter().map(|s| s.to_string()));
    }
    for (name, labels) in REDIS_EXPORTER_METRICS {
        let all = labels
            .iter()
            .chain(EXPORTER_TARGET_LABELS)
            .map(|s| s.to_string());
        assert!(
            known.insert(name.to_string(), all.collect()).is_none(),
            "{name} listed twice"
        );
    }
    known
}

// ---------------------------------------------------------------------------------------------
// A small PromQL scanner: finds the metric selectors of an expression, skipping strings,
// range/subquery brackets, function and aggregation names, keywords, label lists of
// by/without/on/ignoring/group_left/group_right, and Grafana variables.

#[derive(Debug, Clone, PartialEq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Default)]
struct Scan {
    selectors: Vec<Selector>,
    /// Grafana variables (`$x`, `${x}`) outside strings (in range brackets, say); those in
    /// label values are matchers' values.
    variables: Vec<String>,
}

const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "inf",
    "nan",
    "group_left",
    "group_right",
    // Aggregations, which may be followed by `by (...)` before their parenthesis.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn read_ident(c: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    while i < c.len() && ident_char(c[i]) {
        i += 1;
    }
    (c[start..i].iter().collect(), i)
}

fn skip_ws(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    i
}

/// A quoted string starting at `i`: its value and the index after it.
fn read_string(c: &[char], i: usize) -> Result<(String, usize), String> {
    let quote = c[i];
    let mut out = String::new();
    let mut j = i + 1;
    while j < c.len() {
        match c[j] {
            '\\' if quote != '`' => {
                let next = *c.get(j + 1).ok_or("unterminated escape")?;
                out.push(next);
                j += 2;
            }
            ch if ch == quote => return Ok((out, j + 1)),
            ch => {
                out.push(ch);
                j += 1;
            }
        }
    }
    Err(format!("unterminated string at {i}"))
}

/// The label matchers of a `{...}` starting at `i`, and the index after the `}`.
fn parse_matchers(c: &[char], i: usize) -> Result<(Vec<Matcher>, usize), String> {
    let mut out = Vec::new();
    let mut j = i + 1;
    loop {
        j = skip_ws(c, j);
        match c.get(j) {
            Some('}') => return Ok((out, j + 1)),
            Some(ch) if ident_start(*ch) => {}
            other => return Err(format!("expected a label name at {j}, found {other:?}")),
        }
        let (label, k) = read_ident(c, j);
        j = skip_ws(c, k);
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| c[j..].starts_with(&op.chars().collect::<Vec<_>>()))
            .ok_or_else(|| format!("expected a matcher operator after {label}"))?;
        j = skip_ws(c, j + op.len());
        if !matches!(c.get(j), Some('"' | '\'' | '`')) {
            return Err(format!("expected a quoted value for {label}"));
        }
        let (value, k) = read_string(c, j)?;
        out.push(Matcher {
            label,
            op: op.to_string(),
            value,
        });
        j = skip_ws(c, k);
        if c.get(j) == Some(&',') {
            j += 1;
        }
    }
}

/// The index after the `close` that matches the `open` at `i`.
fn skip_balanced(c: &[char], i: usize, open: char, close: char) -> Result<usize, String> {
    let mut depth = 0;
    let mut j = i;
    while j < c.len() {
        match c[j] {
            '"' | '\'' | '`' => {
                j = read_string(c, j)?.1;
                continue;
            }
            ch if ch == open => depth += 1,
            ch if ch == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(format!("unbalanced {open} at {i}"))
}

/// The Grafana variable (`$x` or `${x}`) at `i`: its name and the index after it.
fn read_variable(c: &[char], i: usize) -> Result<(String, usize), String> {
    if c.get(i + 1) == Some(&'{') {
        let end = skip_balanced(c, i + 1, '{', '}')?;
        Ok((c[i + 2..end - 1].iter().collect(), end))
    } else {
        Ok(read_ident(c, i + 1))
    }
}

fn scan_promql(expr: &str) -> Result<Scan, String> {
    let c: Vec<char> = expr.chars().collect();
    let mut scan = Scan::default();
    let mut depth = 0i32;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        match ch {
            '"' | '\'' | '`' => i = read_string(&c, i)?.1,
            '#' => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '(' => {
                depth += 1;
                i += 1;
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced ) at {i}"));
                }
                i += 1;
            }
            '[' => {
                let end = skip_balanced(&c, i, '[', ']')?;
                let mut j = i + 1;
                while j < end {
                    if c[j] == '$' {
                        let (name, next) = read_variable(&c, j)?;
                        scan.variables.push(name);
                        j = next;
                    } else {
                        j += 1;
                    }
                }
                i = end;
            }
            '{' => return Err(format!("selector without a metric name at {i}")),
            '}' | ']' => return Err(format!("unbalanced {ch} at {i}")),
            '$' => {
                let (name, next) = read_variable(&c, i)?;
                scan.variables.push(name);
                i = next;
            }
            ch if ch.is_ascii_digit() || ch == '.' => {
                while i < c.len() && (ident_char(c[i]) || c[i] == '.') {
                    i += 1;
                }
            }
            ch if ident_start(ch) => {
                let (word, next) = read_ident(&c, i);
                let after = skip_ws(&c, next);
                let following = c.get(after).copied();
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) && following == Some('(') {
                    i = skip_balanced(&c, after, '(', ')')?;
                } else if following == Some('(') || KEYWORDS.contains(&word.as_str()) {
                    // A function or aggregation name, or a keyword.
                    i = next;
                } else {
                    let mut selector = Selector {
                        metric: word,
                        matchers: Vec::new(),
                    };
                    i = next;
                    if following == Some('{') {
                        let (matchers, end) = parse_matchers(&c, after)?;
                        selector.matchers = matchers;
                        i = end;
                    }
                    scan.selectors.push(selector);
                }
            }
            _ => i += 1,
        }
    }
    if depth != 0 {
        return Err("unbalanced (".into());
    }
    Ok(scan)
}

/// What is wrong with the metrics and labels of `expr` (empty: nothing).
fn check_expr(
    context: &str,
    expr: &str,
    known: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let scan = match scan_promql(expr) {
        Ok(s) => s,
        Err(e) => return vec![format!("{context}: cannot scan {expr:?}: {e}")],
    };
    let mut problems = Vec::new();
    if scan.selectors.is_empty() {
        problems.push(format!("{context}: names no metric: {expr:?}"));
    }
    for s in &scan.selectors {
        let Some(labels) = known.get(&s.metric) else {
            let whose = if s.metric.starts_with("kredis_") {
                "the operator does not export it (a renamed metric? a new one must be populated \
                 in operator_exposition())"
            } else if s.metric.starts_with("redis_") {
                "not in REDIS_EXPORTER_METRICS (check the name in redis_exporter's source first)"
            } else {
                "neither a kredis_ nor a redis_ metric"
            };
            problems.push(format!("{context}: {}: {whose}", s.metric));
            continue;
        };
        for m in &s.matchers {
            if !labels.contains(&m.label) {
                problems.push(format!(
                    "{context}: {} has no label {:?} (it has {labels:?})",
                    s.metric, m.label
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The dashboard.

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/kredis-dashboard.json"))
        .expect("the dashboard is valid JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn variables(dashboard: &Value) -> &Vec<Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    variables(dashboard)
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no template variable {name}"))
}

/// `label_values(<selector>, <label>)` split.
fn label_values(query: &str) -> (&str, &str) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(selector, label): {query}"));
    let comma = inner.rfind(',').expect("label_values(selector, label)");
    (inner[..comma].trim(), inner[comma + 1..].trim())
}

/// (context, expr) of every dashboard query: panel targets and template variables (whose
/// `label_values` label is returned too).
fn dashboard_exprs(d: &Value) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let context = format!("dashboard panel {:?} target {}", p["title"], t["refId"]);
            out.push((context, t["expr"].as_str().unwrap_or("").to_string(), None));
        }
    }
    for v in variables(d).iter().filter(|v| v["type"] == "query") {
        let query = v["query"]
            .as_str()
            .or_else(|| v["query"]["query"].as_str())
            .expect("variable query");
        let (selector, label) = label_values(query);
        let context = format!("dashboard variable {}", v["name"]);
        out.push((context, selector.to_string(), Some(label.to_string())));
    }
    out
}

fn is_datasource_variable(ds: &Value) -> bool {
    ds["uid"] == "${datasource}" && ds["type"] == "prometheus"
}

#[test]
fn dashboard_parses_and_every_query_uses_the_datasource_variable() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "uid");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "title");

    let ds = variable(&d, "datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["namespace", "cluster"] {
        let v = variable(&d, name);
        assert_eq!(v["type"], "query", "{name}");
        assert!(is_datasource_variable(&v["datasource"]), "{name}: {v}");
        // "All" must be a regex, since the queries match with =~.
        assert_eq!(v["includeAll"], true, "{name}");
        assert_eq!(v["allValue"], ".*", "{name}");
    }
    let cluster = variable(&d, "cluster");
    let (selector, label) = label_values(cluster["query"].as_str().expect("cluster query"));
    assert_eq!(label, "name", "cluster lists KRedis names");
    let scan = scan_promql(selector).expect("cluster variable selector");
    assert_eq!(scan.selectors[0].metric, "kredis_cluster_phase");
    let by_namespace = Matcher {
        label: "namespace".into(),
        op: "=~".into(),
        value: "$namespace".into(),
    };
    assert_eq!(
        scan.selectors[0].matchers,
        [by_namespace],
        "cluster depends on namespace"
    );

    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels(&d) {
        let title = &p["title"];
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
            "{title}: {grid}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(
            is_datasource_variable(&p["datasource"]),
            "{title}: panel datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            assert!(
                is_datasource_variable(&t["datasource"]),
                "{title} {}: target datasource {}",
                t["refId"],
                t["datasource"]
            );
            assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()));
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
}

#[test]
fn dashboard_filters_every_per_cluster_query_by_namespace_and_cluster() {
    let d = dashboard();
    let known = known_series();
    let mut problems = Vec::new();
    for (context, expr, _) in dashboard_exprs(&d) {
        if context.starts_with("dashboard variable") {
            continue;
        }
        let scan = scan_promql(&expr).unwrap_or_else(|e| panic!("{context}: {e}"));
        for v in &scan.variables {
            if !["namespace", "cluster", "__rate_interval"].contains(&v.as_str()) {
                problems.push(format!("{context}: unknown variable ${v}"));
            }
        }
        for s in &scan.selectors {
            let cluster_label = if s.metric.starts_with("redis_") {
                "kredis_cluster"
            } else if known.get(&s.metric).is_some_and(|l| l.contains("name")) {
                "name"
            } else {
                continue; // operator-wide (reconcile_*)
            };
            for (label, value) in [("namespace", "$namespace"), (cluster_label, "$cluster")] {
                let filtered = s
                    .matchers
                    .iter()
                    .any(|m| m.label == label && m.op == "=~" && m.value == value);
                if !filtered {
                    problems.push(format!(
                        "{context}: {} lacks {label}=~\"{value}\"",
                        s.metric
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn dashboard_shows_the_issue_panels() {
    let d = dashboard();
    let mut used = BTreeSet::new();
    for (_, expr, _) in dashboard_exprs(&d) {
        for s in scan_promql(&expr).expect("scan").selectors {
            used.insert(s.metric);
        }
    }
    let missing: Vec<_> = ON_DASHBOARD
        .iter()
        .filter(|m| !used.contains(**m))
        .collect();
    assert!(missing.is_empty(), "no panel shows {missing:?}");
}

// ---------------------------------------------------------------------------------------------
// The rules.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: RuleMetadata,
    spec: RuleSpec,
}

#[derive(Debug, Deserialize)]
struct RuleMetadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn rules() -> PrometheusRule {
    serde_saphyr::from_str(&read("deploy/prometheus/kredis-rules.yaml"))
        .expect("the rules are a valid PrometheusRule")
}

/// A Prometheus duration (`90s`, `1h30m`) in milliseconds.
fn duration_ms(s: &str) -> Option<u64> {
    let units = [
        ("ms", 1),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
        ("w", 604_800_000),
        ("y", 31_536_000_000),
    ];
    let mut rest = s;
    let mut total = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        let (unit, factor) = units
            .iter()
            .find(|(u, _)| tail.starts_with(u) && !(*u == "m" && tail.starts_with("ms")))?;
        total += n * factor;
        rest = &tail[unit.len()..];
    }
    (!s.is_empty()).then_some(total)
}

#[test]
fn rules_parse_and_hold_the_documented_alerts() {
    let r = rules();
    assert_eq!(r.api_version, "monitoring.coreos.com/v1");
    assert_eq!(r.kind, "PrometheusRule");
    assert!(!r.metadata.name.is_empty());
    assert_eq!(
        r.metadata
            .labels
            .get("app.kubernetes.io/name")
            .map(String::as_str),
        Some("kredis")
    );
    let mut alerts = BTreeMap::new();
    for g in &r.spec.groups {
        assert!(!g.name.is_empty() && !g.rules.is_empty(), "group {g:?}");
        if let Some(i) = &g.interval {
            assert!(duration_ms(i).is_some(), "group {} interval {i}", g.name);
        }
        for rule in &g.rules {
            assert!(
                rule.alert.is_some() != rule.record.is_some(),
                "a rule is an alert or a recording rule: {rule:?}"
            );
            let Some(name) = &rule.alert else { continue };
            assert!(alerts.insert(name.clone(), rule).is_none(), "{name} twice");
            let severity = rule.labels.get("severity").map(String::as_str);
            assert!(
                matches!(severity, Some("critical" | "warning" | "info")),
                "{name}: severity {severity:?}"
            );
            for key in ["summary", "description"] {
                assert!(
                    rule.annotations
                        .get(key)
                        .is_some_and(|a| !a.trim().is_empty()),
                    "{name}: no {key}"
                );
            }
            if let Some(f) = &rule.for_ {
                assert!(duration_ms(f).is_some(), "{name}: for {f}");
            }
            let scan = scan_promql(&rule.expr).unwrap_or_else(|e| panic!("{name}: {e}"));
            let grafana = ["${", "$__", "$namespace", "$cluster", "$datasource"];
            assert!(
                scan.variables.is_empty() && !grafana.iter().any(|v| rule.expr.contains(v)),
                "{name}: Grafana variables in a rule"
            );
        }
    }
    for (name, metrics, wanted_for) in ALERTS {
        let rule = alerts
            .get(*name)
            .unwrap_or_else(|| panic!("no alert {name}"));
        let used: BTreeSet<_> = scan_promql(&rule.expr)
            .expect("scan")
            .selectors
            .into_iter()
            .map(|s| s.metric)
            .collect();
        for m in *metrics {
            assert!(used.contains(*m), "{name} does not use {m}: {}", rule.expr);
        }
        assert_eq!(
            rule.for_.as_deref().and_then(duration_ms),
            wanted_for.and_then(duration_ms),
            "{name}: for"
        );
    }
    // Specific thresholds the docs promise.
    assert!(alerts["KRedisSlotsNotCovered"].expr.contains("< 16384"));
    assert!(alerts["KRedisMemoryNearMax"].expr.contains("> 0.9"));
    assert!(alerts["KRedisMemoryNearMax"]
        .expr
        .contains("redis_memory_max_bytes > 0"));
    assert!(alerts["KRedisNotReady"].expr.contains(r#"phase="Ready""#));
}

// ---------------------------------------------------------------------------------------------
// Metric names.

#[test]
fn every_metric_named_is_exported_by_the_operator_or_redis_exporter() {
    let known = known_series();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (context, expr, label) in dashboard_exprs(&dashboard()) {
        problems.extend(check_expr(&context, &expr, &known));
        if let Some(label) = label {
            for s in scan_promql(&expr).map(|s| s.selectors).unwrap_or_default() {
                if known.get(&s.metric).is_some_and(|l| !l.contains(&label)) {
                    problems.push(format!("{context}: {} has no label {label}", s.metric));
                }
            }
        }
        checked += 1;
    }
    for g in rules().spec.groups {
        for rule in g.rules {
            let name = rule.alert.or(rule.record).unwrap_or_default();
            problems.extend(check_expr(&format!("rule {name}"), &rule.expr, &known));
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} expressions");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_metric_and_alert_is_documented() {
    let doc = read("docs/monitoring.md");
    let mut missing = Vec::new();
    for (family, kind) in exposition_families(&operator_exposition()) {
        let series = if kind == "counter" {
            format!("{family}_total")
        } else {
            family
        };
        if !doc.contains(&format!("`{series}`")) {
            missing.push(series);
        }
    }
    for (name, _) in REDIS_EXPORTER_METRICS {
        if !doc.contains(&format!("`{name}`")) {
            missing.push(name.to_string());
        }
    }
    for g in rules().spec.groups {
        for alert in g.rules.into_iter().filter_map(|r| r.alert) {
            if !doc.contains(&format!("### {alert}")) {
                missing.push(format!("### {alert}"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/monitoring.md lacks {missing:?}");
}

#[test]
fn the_scanner_finds_metrics_and_not_labels_functions_or_variables() {
    let scan = scan_promql(
        r#"histogram_quantile(0.99, sum by (namespace, le) (rate(kredis_operation_duration_seconds_bucket{namespace=~"$namespace", name=~"a\"b"}[$__rate_interval])))
           / on (namespace) group_left (kredis_role) label_replace(redis_up offset 5m, "x", "$1", "pod", "(.*)")
           and sum(redis_db_keys) without (db) > bool 1e3 # redis_commented_out"#,
    )
    .expect("scan");
    let names: Vec<_> = scan.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        names,
        [
            "kredis_operation_duration_seconds_bucket",
            "redis_up",
            "redis_db_keys"
        ]
    );
    assert_eq!(scan.selectors[0].matchers[1].value, "a\"b");
    assert_eq!(scan.variables, ["__rate_interval"]);
    assert!(scan_promql("sum(rate(x[5m])").is_err());
    assert!(scan_promql(r#"{__name__="x"}"#).is_err());
}

#[test]
fn a_renamed_metric_or_a_wrong_label_is_caught() {
    let known = known_series();
    assert!(check_expr("ok", r#"kredis_cluster_ready_masters{name="a"}"#, &known).is_empty());
    // The singular form, as if metrics.rs renamed the gauge.
    assert!(!check_expr("renamed", "kredis_cluster_ready_master", &known).is_empty());
    // A histogram is named by its series, not its family.
    assert!(!check_expr("family", "kredis_reconcile_duration_seconds", &known).is_empty());
    assert!(check_expr("bucket", "kredis_reconcile_duration_seconds_bucket", &known).is_empty());
    // Operator series name the cluster `name`; exporter series `kredis_cluster`.
    assert!(!check_expr(
        "label",
        r#"kredis_cluster_phase{kredis_cluster="a"}"#,
        &known
    )
    .is_empty());
    assert!(!check_expr("label", r#"redis_up{name="a"}"#, &known).is_empty());
    assert!(!check_expr("other", "up", &known).is_empty());
}
