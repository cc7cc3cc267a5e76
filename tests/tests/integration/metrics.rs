//! The metrics endpoint of a `modcsi serve` process (`--metrics-address`), scraped over HTTP as
//! Prometheus would, after real calls: CSI calls by method and code, backend calls, node
//! operations, and the node-local cleanup loop, which a driver starts only once it has a record.
//! And the Grafana dashboard and Prometheus rules of deploy/observability/ against what the host
//! exports: every series and label they name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use modcsi_tests::process::{ServeProcess, modcsi_binary};
use modcsi_tests::requests::{delete, publish, unpublish};
use modcsi_tests::{CreateVolume, NODE_LOCAL_CACHE, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over a fresh connection: the status line and the body.
async fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn start(root: &std::path::Path, port: u16) -> ServeProcess {
    let address = format!("127.0.0.1:{port}");
    let flags = ["--node-id", "test-node", "--metrics-address", &address];
    ServeProcess::start_with(&modcsi_binary(), NODE_LOCAL_CACHE, root, &flags).await
}

/// A node-local volume created, published, unpublished: the volume.
async fn use_a_volume(server: &ServeProcess, name: &str) -> modcsi::proto::Volume {
    let (mut c, mut n) = (server.client.controller.clone(), server.client.node.clone());
    let volume = c.create(name).await;
    let target = server.targets().join("pod").display().to_string();
    n.node_publish_volume(publish(&volume, &target, false))
        .await
        .unwrap();
    n.node_unpublish_volume(unpublish(&volume.volume_id, &target))
        .await
        .unwrap();
    volume
}

#[tokio::test]
async fn a_scrape_counts_csi_backend_and_node_work_by_outcome() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(root.path(), port).await;
    let volume = use_a_volume(&server, "pv-scraped").await;
    let mut c = server.client.controller.clone();
    c.delete_volume(delete(&volume.volume_id)).await.unwrap();
    // A refusal: an id that cannot be a volume's.
    c.delete_volume(delete("../escape")).await.unwrap_err();

    let (status, text) = get(port, "/metrics").await;
    assert!(status.contains(" 200 "), "{status}");
    for (series, value) in [
        (
            r#"modcsi_csi_operations_total{method="CreateVolume",code="OK"}"#,
            1.0,
        ),
        (
            r#"modcsi_csi_operations_total{method="DeleteVolume",code="OK"}"#,
            1.0,
        ),
        (
            r#"modcsi_csi_operations_total{method="DeleteVolume",code="INVALID_ARGUMENT"}"#,
            1.0,
        ),
        (
            r#"modcsi_csi_operation_duration_seconds_count{method="NodePublishVolume"}"#,
            1.0,
        ),
        (
            r#"modcsi_backend_calls_total{backend="node-local-cache",operation="create-volume",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"modcsi_node_operations_total{operation="publish",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"modcsi_node_operations_total{operation="unpublish",outcome="ok"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    let peak = sample(
        &text,
        r#"modcsi_backend_call_memory_bytes_sum{backend="node-local-cache",operation="create-volume"}"#,
    );
    assert!(peak.is_some_and(|b| b > 0.0), "{text}");
    assert!(get(port, "/healthz").await.0.contains(" 200 "));
    assert!(get(port, "/other").await.0.contains(" 404 "));
}

#[tokio::test]
async fn the_cleanup_loop_starts_only_once_the_driver_has_a_node_local_record() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(root.path(), port).await;
    let (mut c, mut n) = (server.client.controller.clone(), server.client.node.clone());
    // A volume created and deleted without ever reaching a node leaves no record: no loop.
    let unused = c.create("pv-unused").await;
    c.delete_volume(delete(&unused.volume_id)).await.unwrap();
    let loop_ran = |text: &str| text.contains("modcsi_cleanup_records{");
    assert!(!loop_ran(&get(port, "/metrics").await.1));

    // A node publish records the node's directory: the loop starts and counts the record.
    let volume = c.create("pv-used").await;
    let target = server.targets().join("pod").display().to_string();
    n.node_publish_volume(publish(&volume, &target, false))
        .await
        .unwrap();
    let series = r#"modcsi_cleanup_records{state="active"}"#;
    for _ in 0..100 {
        if sample(&get(port, "/metrics").await.1, series) == Some(1.0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{series} never became 1");
}

// ---- The dashboard and the rules name only what the host exports ----

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn parse(word: &str) -> Option<Kind> {
        match word {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            _ => None,
        }
    }

    /// The series a family of this kind is scraped as (OpenMetrics text, as Prometheus stores it).
    fn series(self, family: &str) -> Vec<String> {
        let suffixes: &[&str] = match self {
            Kind::Counter => &["_total"],
            Kind::Gauge => &[""],
            Kind::Histogram => &["_bucket", "_sum", "_count"],
        };
        suffixes.iter().map(|s| format!("{family}{s}")).collect()
    }
}

/// A family the host registers: its kind and its label names.
#[derive(Debug)]
struct Family {
    kind: Kind,
    labels: BTreeSet<String>,
}

/// The fields of `struct <name> { … }` in `source`, as (field, type).
fn struct_fields(source: &str, name: &str) -> Vec<(String, String)> {
    let start = source
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("no struct {name}"));
    let body = &source[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
    body.lines()
        .filter_map(|l| {
            let (field, ty) = l.trim().trim_end_matches(',').split_once(": ")?;
            Some((field.to_owned(), ty.to_owned()))
        })
        .collect()
}

/// The families host/src/metrics/mod.rs registers, by full name (`modcsi_…`): what a scrape can
/// show, samples or not. (A Family with no children prints nothing, not even its `# TYPE`, so a
/// scrape alone cannot list families nothing has recorded yet, such as SSH on this backend.)
fn registered() -> BTreeMap<String, Family> {
    let source = read("host/src/metrics/mod.rs");
    assert!(
        source.contains(r#"Registry::with_prefix("modcsi")"#),
        "the registry's prefix is no longer modcsi"
    );
    let fields: BTreeMap<String, String> = struct_fields(&source, "Metrics").into_iter().collect();
    let mut families = BTreeMap::new();
    let calls: Vec<&str> = source.split("r.register(").skip(1).collect();
    assert!(!calls.is_empty(), "no r.register( calls in metrics/mod.rs");
    for call in calls {
        let name = call.split('"').nth(1).expect("a registered name");
        let field = call
            .split("m.")
            .nth(1)
            .and_then(|f| f.split(".clone()").next())
            .unwrap_or_else(|| panic!("{name}: no m.<field>.clone()"));
        let ty = &fields[field];
        let (labels, metric) = match ty.strip_prefix("Family<") {
            Some(inner) => {
                let (set, metric) = inner.trim_end_matches('>').split_once(", ").unwrap();
                let labels = struct_fields(&source, set).into_iter().map(|(f, _)| f);
                (labels.collect(), metric)
            }
            None => (BTreeSet::new(), ty.as_str()),
        };
        let kind = if metric.starts_with("Counter") {
            Kind::Counter
        } else if metric.starts_with("Gauge") {
            Kind::Gauge
        } else if metric.starts_with("Histogram") {
            Kind::Histogram
        } else {
            panic!("{name}: a metric of type {ty}");
        };
        families.insert(format!("modcsi_{name}"), Family { kind, labels });
    }
    families
}

/// The labels a series has in Prometheus besides its own: those of its target (the chart's
/// ServiceMonitor and PodMonitor set job, driver, component and node; the Prometheus Operator
/// adds namespace, pod, container, endpoint and service).
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "driver",
    "component",
    "node",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "service",
];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Each name in `text` that begins with `prefix` (where no name character precedes it) and goes
/// on with characters `part` accepts, with the offset just past it.
fn names_after(text: &str, prefix: &str, part: fn(char) -> bool) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(prefix) {
        let start = from + at;
        let rest = &text[start + prefix.len()..];
        let len = rest.find(|c: char| !part(c)).unwrap_or(rest.len());
        let free = !text[..start].chars().next_back().is_some_and(is_name_char);
        if free && len > 0 {
            found.push((
                text[start..start + prefix.len() + len].to_owned(),
                start + prefix.len() + len,
            ));
        }
        from = start + prefix.len();
    }
    found
}

/// Every `modcsi_…` metric name in `text`.
fn metric_names(text: &str) -> Vec<(String, usize)> {
    names_after(text, "modcsi_", |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
    })
}

/// Every recording rule name (`modcsi:…`) in `text`.
fn recorded_names(text: &str) -> BTreeSet<String> {
    names_after(text, "modcsi:", |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'
    })
    .into_iter()
    .map(|(n, _)| n)
    .collect()
}

/// The label names of a selector's matchers, `{a="x", b=~"y|z"}`, from the text after its `{`.
fn matcher_labels(text: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        match chars.peek() {
            Some('}') | None => return labels,
            _ => {}
        }
        let mut label = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
            label.push(c);
        }
        assert!(!label.is_empty(), "cannot read the selector {{{text}");
        labels.push(label);
        while chars
            .next_if(|c| c.is_whitespace() || "=!~".contains(*c))
            .is_some()
        {}
        assert_eq!(
            chars.next(),
            Some('"'),
            "a label value not quoted in {{{text}"
        );
        let mut escaped = false;
        for c in chars.by_ref() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => break,
                _ => escaped = false,
            }
        }
    }
}

/// The labels of every `by`, `without`, `on`, `ignoring`, `group_left` and `group_right` list.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for word in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        for (at, _) in expr.match_indices(word) {
            let before = expr[..at].chars().next_back();
            let after = expr[at + word.len()..].trim_start();
            if before.is_some_and(is_name_char) || !after.starts_with('(') {
                continue;
            }
            let list = &after[1..after.find(')').unwrap()];
            labels.extend(
                list.split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    labels
}

/// What is wrong with the names and labels `expr` uses, against the series `series` (name →
/// family) and the families.
fn check_expr(
    what: &str,
    expr: &str,
    series: &BTreeMap<String, String>,
    families: &BTreeMap<String, Family>,
    problems: &mut Vec<String>,
) {
    let every_label: BTreeSet<&str> = families
        .values()
        .flat_map(|f| f.labels.iter().map(String::as_str))
        .chain(TARGET_LABELS.iter().copied())
        .chain(["le"])
        .collect();
    for (name, end) in metric_names(expr) {
        let Some(family) = series.get(&name) else {
            problems.push(format!(
                "{what}: {name} is not a series the host exports, in {expr}"
            ));
            continue;
        };
        if let Some(body) = expr[end..].strip_prefix('{') {
            for label in matcher_labels(body) {
                let own = families[family].labels.contains(&label)
                    || TARGET_LABELS.contains(&label.as_str())
                    || (label == "le" && name.ends_with("_bucket"));
                if !own {
                    problems.push(format!("{what}: {name} has no label {label:?} in {expr}"));
                }
            }
        }
    }
    for label in grouping_labels(expr) {
        if !every_label.contains(label.as_str()) {
            problems.push(format!(
                "{what}: no series has the label {label:?} it groups by in {expr}"
            ));
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: serde_json::Value,
    spec: RuleSpec,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The series a scrape shows, checked against the registered families: each `# TYPE` a
/// registered family of that kind, each sample one of its family's series. Returns the families.
fn scraped_families(text: &str, registered: &BTreeMap<String, Family>) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    let mut current: Option<(String, Kind)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let kind =
                Kind::parse(kind).unwrap_or_else(|| panic!("a family of type {kind}: {line}"));
            let family = registered.get(name).unwrap_or_else(|| {
                panic!("{name} is scraped but not registered in metrics/mod.rs")
            });
            assert_eq!(
                family.kind, kind,
                "{name}: scraped as {kind:?}, registered as {:?}",
                family.kind
            );
            families.insert(name.to_owned());
            current = Some((name.to_owned(), kind));
        } else if !line.starts_with('#') && !line.is_empty() {
            let sample = line.split(['{', ' ']).next().unwrap();
            let (family, kind) = current.as_ref().expect("a sample before any # TYPE");
            assert!(
                kind.series(family).iter().any(|s| s == sample),
                "{sample} is not a series of the {kind:?} {family}"
            );
        }
    }
    families
}

#[tokio::test]
async fn the_dashboard_and_the_rules_name_only_series_the_host_exports() {
    // A host that has done some of everything this backend can: CSI calls (one refused), backend
    // calls, node operations and a cleanup record.
    let root_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(root_dir.path(), port).await;
    use_a_volume(&server, "pv-dashboard").await;
    let mut c = server.client.controller.clone();
    c.delete_volume(delete("../escape")).await.unwrap_err();
    let mut text = String::new();
    for _ in 0..100 {
        text = get(port, "/metrics").await.1;
        if text.contains("modcsi_cleanup_records{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // What the host exports: the registered families, checked against the scrape.
    let families = registered();
    let scraped = scraped_families(&text, &families);
    for expected in [
        "modcsi_csi_operations",
        "modcsi_csi_operation_duration_seconds",
        "modcsi_backend_calls",
        "modcsi_backend_call_duration_seconds",
        "modcsi_backend_call_memory_bytes",
        "modcsi_node_operations",
        "modcsi_cleanup_records",
        "modcsi_migrations_active",
        "modcsi_cleanup_oldest_deletion_age_seconds",
    ] {
        assert!(
            scraped.contains(expected),
            "{expected} not scraped:\n{text}"
        );
    }
    // Families without labels always print: every one registered is scraped.
    for (name, family) in &families {
        if family.labels.is_empty() {
            assert!(
                scraped.contains(name),
                "{name} registered but not scraped:\n{text}"
            );
        }
    }
    let series: BTreeMap<String, String> = families
        .iter()
        .flat_map(|(name, f)| {
            f.kind
                .series(name)
                .into_iter()
                .map(move |s| (s, name.clone()))
        })
        .collect();

    // The rules: the chart's file, its copy in deploy/observability/ the same.
    let rules_text = read("deploy/helm/modcsi/files/prometheus-rules.yaml");
    assert!(
        rules_text == read("deploy/observability/prometheus-rules.yaml"),
        "deploy/observability/prometheus-rules.yaml is not the chart's files/prometheus-rules.yaml: run scripts/render-manifests.sh"
    );
    let rules: RuleFile = serde_saphyr::from_str(&rules_text).expect("the rules file's YAML");
    assert_eq!(rules.api_version, "monitoring.coreos.com/v1");
    assert_eq!(rules.kind, "PrometheusRule");
    assert!(rules.metadata["name"].is_string());
    let mut problems = Vec::new();
    let mut recorded = BTreeSet::new();
    let mut alerts = 0;
    for group in &rules.spec.groups {
        assert!(!group.name.is_empty() && !group.rules.is_empty());
        assert!(
            group.interval.is_none(),
            "{}: leave the evaluation interval to the Prometheus",
            group.name
        );
        for rule in &group.rules {
            match (&rule.record, &rule.alert) {
                (Some(record), None) => {
                    assert!(record.starts_with("modcsi:"), "{record}: name it modcsi:…");
                    assert!(
                        rule.for_.is_none() && rule.annotations.is_empty(),
                        "{record}"
                    );
                    recorded.insert(record.clone());
                    check_expr(record, &rule.expr, &series, &families, &mut problems);
                }
                (None, Some(alert)) => {
                    alerts += 1;
                    assert!(alert.starts_with("Modcsi"), "{alert}: name it Modcsi…");
                    assert!(rule.for_.is_some(), "{alert}: no for:");
                    let severity = rule.labels.get("severity").map(String::as_str);
                    assert!(
                        matches!(severity, Some("critical" | "warning" | "info")),
                        "{alert}: severity {severity:?}"
                    );
                    for key in ["summary", "description"] {
                        assert!(
                            rule.annotations.get(key).is_some_and(|a| a.len() > 20),
                            "{alert}: no {key}"
                        );
                    }
                    check_expr(alert, &rule.expr, &series, &families, &mut problems);
                }
                _ => panic!("a rule is one of record and alert: {}", rule.expr),
            }
        }
    }
    assert!(
        alerts >= 10 && !recorded.is_empty(),
        "{alerts} alerts, {recorded:?} recorded"
    );

    // The dashboard: JSON, every panel on the ${datasource} variable, every query checked.
    let dashboard_text = read("deploy/observability/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard's JSON");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    for v in variables.iter().filter(|v| v["type"] == "query") {
        let query = v["query"]["query"].as_str().unwrap();
        assert_eq!(
            v["datasource"]["uid"], "${datasource}",
            "variable {}",
            v["name"]
        );
        // label_values(<selector>, <label>): the label one of the selector's series has.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap();
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let (name, _) = &metric_names(selector)[0];
        let label = label.trim();
        let known = series
            .get(name)
            .is_some_and(|f| families[f].labels.contains(label))
            || TARGET_LABELS.contains(&label);
        if !known {
            problems.push(format!(
                "variable {}: {name} has no label {label:?}",
                v["name"]
            ));
        }
        check_expr(
            &format!("variable {}", v["name"]),
            query,
            &series,
            &families,
            &mut problems,
        );
    }
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    let mut ids = BTreeSet::new();
    let mut shown = Vec::new();
    while let Some(panel) = panels.pop() {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: a second panel of its id"
        );
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().unwrap());
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            panel["fieldConfig"]["defaults"]["unit"].is_string(),
            "{title}: no unit"
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            check_expr(
                title,
                target["expr"].as_str().unwrap(),
                &series,
                &families,
                &mut problems,
            );
            shown.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(shown.len() >= 20, "{} queries", shown.len());

    // Every name in either file is a series the host exports, or in prose (descriptions,
    // annotations) its family's name; every recording rule named is one the rules define; every
    // family is on the dashboard.
    for (file, text) in [
        ("prometheus-rules.yaml", &rules_text),
        ("grafana-dashboard.json", &dashboard_text),
    ] {
        for (name, _) in metric_names(text) {
            if !series.contains_key(&name) && !families.contains_key(&name) {
                problems.push(format!("{file}: {name} is not a series the host exports"));
            }
        }
        for name in recorded_names(text) {
            if !recorded.contains(&name) {
                problems.push(format!("{file}: {name} is recorded by no rule"));
            }
        }
    }
    let shown: BTreeSet<&String> = shown
        .iter()
        .flat_map(|expr| metric_names(expr))
        .filter_map(|(n, _)| series.get(&n))
        .collect();
    for family in families.keys().filter(|f| !shown.contains(f)) {
        problems.push(format!("grafana-dashboard.json: no panel shows {family}"));
    }
    assert!(
        problems.is_empty(),
        "{}\n\nthe series the host exports: {:?}",
        problems.join("\n"),
        series.keys().collect::<Vec<_>>()
    );
}
