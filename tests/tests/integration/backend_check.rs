//! `modcsi backend check`, the checker backend authors run: a component that keeps every rule
//! passes all of them; for each rule, a component that breaks it (check-breaker with
//! `break = "<rule>"`) fails that rule with a message naming what went wrong; the in-repo
//! RDS and Emma pass against their fakes (node-local-cache and the older contracts: in
//! backend_conformance); the binary's exit code and JSON follow the report; and
//! the rule reference in docs/backend-authors.md is the checker's own table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use modcsi::author::check::{self, CheckOptions, RULES, Report, Verdict};
use modcsi::runtime::BackendConfig;
use modcsi_tests::fake_emma::rig::{EMMA, host_config};
use modcsi_tests::fake_emma::{FakeEmma, FakeEmmaOptions};
use modcsi_tests::fake_rds::FakeRds;
use modcsi_tests::{CHECK_BREAKER, RDS, component, shared_cache_dir};

fn options(config: Option<&Path>) -> CheckOptions {
    CheckOptions {
        cache_dir: shared_cache_dir(),
        config: config.map_or_else(BackendConfig::default, |p| BackendConfig::load(p).unwrap()),
        call_timeout: Duration::from_secs(10),
        memory_limit: 64 << 20,
        size: 1 << 30,
        parameters: vec![],
        secrets: vec![],
        node_id: "modcsi-check-node".into(),
    }
}

/// The check-breaker's report, breaking `rule` (none: keeping every rule).
async fn breaker(rule: Option<&str>) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backend.toml");
    std::fs::write(&config, format!("break = {:?}\n", rule.unwrap_or(""))).unwrap();
    let mut options = options(Some(&config));
    options.parameters = vec![("flavour".into(), "plain".into())];
    check::check(&component(CHECK_BREAKER), &options).await
}

fn assert_passes(report: &Report) {
    assert!(report.passed(), "{}", report.text());
}

#[tokio::test]
async fn a_backend_keeping_every_rule_passes_every_rule() {
    let report = breaker(None).await;
    assert_passes(&report);
    assert_eq!(report.findings.len(), RULES.len());
    let skipped: Vec<_> = (report.findings.iter())
        .filter(|f| matches!(f.verdict, Verdict::Skip(_)))
        .map(|f| f.rule)
        .collect();
    assert!(skipped.is_empty(), "it exports everything: {skipped:?}");
    assert!(
        report.calls["create-volume"].calls >= 3,
        "{:?}",
        report.calls
    );
}

#[tokio::test]
async fn each_rule_fails_for_a_backend_that_breaks_it() {
    for rule in RULES.iter().filter(|r| r.id != "loads") {
        let report = breaker(Some(rule.id)).await;
        match report.verdict(rule.id) {
            Some(Verdict::Fail(message)) => assert!(
                message.len() > 20,
                "{}: the message says too little: {message:?}",
                rule.id
            ),
            other => panic!("{}: {other:?}\n{}", rule.id, report.text()),
        }
        assert!(!report.passed(), "{}", rule.id);
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_component_fails_to_load_and_nothing_else_runs() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("backend.wasm");
    std::fs::write(&text, "not wasm").unwrap();
    let module = dir.path().join("module.wasm");
    // An empty core module: WebAssembly, but not a component.
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    for path in [text, module] {
        let report = check::check(&path, &options(None)).await;
        let Some(Verdict::Fail(message)) = report.verdict("loads") else {
            panic!("{}", report.text());
        };
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            (report.findings.iter().skip(1)).all(|f| matches!(f.verdict, Verdict::Skip(_))),
            "{}",
            report.text()
        );
    }
}

#[tokio::test]
async fn rds_passes_against_the_fake_router() {
    let rds = FakeRds::start(Path::new(env!("CARGO_BIN_EXE_fake-routeros"))).await;
    let config = rds.state.path().join("backend.toml");
    let report = check::check(&component(RDS), &options(Some(&config))).await;
    assert_passes(&report);
    assert!(
        rds.commands().contains("/disk add"),
        "the checker reached the router:\n{}",
        rds.commands()
    );
}

#[tokio::test]
async fn emma_passes_against_the_fake_api() {
    let fake = FakeEmma::start(FakeEmmaOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = host_config(&fake, dir.path(), fake.client_secret());
    let mut options = options(Some(&config));
    options.node_id = "101".into();
    options.parameters = vec![
        ("type".into(), "ssd".into()),
        ("dataCenterId".into(), "aws-eu-central-1".into()),
    ];
    assert_passes(&check::check(&component(EMMA), &options).await);
}

fn modcsi(args: &[&str]) -> (bool, String, String) {
    modcsi_tests::process::run_modcsi(args, None)
}

#[test]
fn the_binary_exits_by_the_report_and_speaks_json() {
    let breaker = component(CHECK_BREAKER);
    let breaker = breaker.to_str().unwrap();
    let cache = shared_cache_dir();
    let cache = cache.to_str().unwrap();
    let check = [
        "backend",
        "check",
        breaker,
        "--cache-dir",
        cache,
        "--param",
        "flavour=plain",
    ];
    let (ok, text, _) = modcsi(&check);
    assert!(ok, "{text}");
    assert!(text.contains("22 passed, 0 failed"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backend.toml");
    std::fs::write(&config, "break = \"validate-unknown\"\n").unwrap();
    let config = config.to_str().unwrap();
    let (ok, json, stderr) = modcsi(&[&check[..], &["--config", config, "--json"]].concat());
    assert!(!ok, "a failed rule fails the command");
    assert!(stderr.contains("failed 1 of 22 rules"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&json).expect("the report is JSON");
    let failed: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "fail")
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["validate-unknown"]);
    assert!(report["calls"]["validate-capabilities"]["calls"].as_u64() >= Some(2));
}

#[test]
fn inspect_names_the_capabilities_each_backend_imports() {
    for (backend, capability, export) in [
        (RDS, "ssh", "snapshots"),
        (EMMA, "http", "publish"),
        (CHECK_BREAKER, "store", "locate"),
    ] {
        let path = component(backend);
        let (ok, json, stderr) = modcsi(&["backend", "inspect", path.to_str().unwrap(), "--json"]);
        assert!(ok, "{stderr}");
        let found: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(found["contract"], "0.2.3", "{backend}");
        let has =
            |field: &str, value: &str| found[field].as_array().unwrap().iter().any(|v| v == value);
        assert!(has("capabilities", capability), "{backend}: {json}");
        assert!(has("exports", export), "{backend}: {json}");
        assert!(found["compile_ms"].as_f64() > Some(0.0));
        assert_eq!(
            found["size_bytes"].as_u64(),
            Some(std::fs::metadata(&path).unwrap().len())
        );
    }
    let (_, text, _) = modcsi(&[
        "backend",
        "inspect",
        component(CHECK_BREAKER).to_str().unwrap(),
    ]);
    assert!(
        text.contains("parameter        flavour (required)"),
        "{text}"
    );
}

#[test]
fn the_authors_guide_carries_the_checkers_rules_and_the_contract() {
    let guide = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/backend-authors.md");
    let guide = std::fs::read_to_string(&guide).unwrap();
    for command in [
        &["backend", "check", "--rules"][..],
        &["backend", "contract"],
    ] {
        let (ok, generated, _) = modcsi(command);
        assert!(ok && generated.len() > 500, "{command:?}");
        assert!(
            guide.contains(&generated),
            "docs/backend-authors.md is behind `modcsi {}`:\n{generated}",
            command.join(" ")
        );
    }
}
