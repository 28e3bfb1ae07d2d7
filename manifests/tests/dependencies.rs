//! `spec.dependsOn` and the other issue-15 fields: checked per document, and
//! across files for unknown names and cycles.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;

use berth_manifests::{ParsedFile, Probe, check_dependencies, parse_str, reject_duplicate_names};

fn doc(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  command: [sleep, '1000']\n{extra}"
    )
}

fn check(files: &[(&str, String)]) -> Vec<ParsedFile> {
    let mut parsed: Vec<ParsedFile> = files
        .iter()
        .map(|(path, text)| parse_str(Path::new(path), text))
        .collect();
    reject_duplicate_names(&mut parsed);
    check_dependencies(&mut parsed);
    parsed
}

fn messages(parsed: &[ParsedFile]) -> Vec<String> {
    parsed
        .iter()
        .flat_map(|f| &f.diagnostics)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_cycle_across_files_is_named_in_order_at_each_member() {
    // Written in an order other than the cycle's.
    let parsed = check(&[
        ("/m/c.yaml", doc("c", "  dependsOn: [a]\n")),
        ("/m/a.yaml", doc("a", "  dependsOn: [b]\n")),
        ("/m/b.yaml", doc("b", "  dependsOn: [c]\n")),
        ("/m/d.yaml", doc("d", "  dependsOn: [a]\n")),
    ]);
    let all = messages(&parsed);
    for file in ["a", "b", "c"] {
        assert!(
            all.iter().any(|m| m
                == &format!(
                    "/m/{file}.yaml:4:9: spec.dependsOn: dependency cycle a -> b -> c -> a"
                )),
            "{all:#?}"
        );
    }
    // d depends on the cycle but is not in it.
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(parsed[3].containers.len(), 1);
}

#[test]
fn an_unknown_dependency_is_named_and_a_chain_is_fine() {
    let parsed = check(&[
        ("/m/a.yaml", doc("a", "  dependsOn: [b]\n")),
        ("/m/b.yaml", doc("b", "  dependsOn: [c]\n")),
        ("/m/c.yaml", doc("c", "")),
        ("/m/x.yaml", doc("x", "  dependsOn: [c, nothere]\n")),
    ]);
    assert_eq!(
        messages(&parsed),
        ["/m/x.yaml:4:9: spec.dependsOn: \"x\" depends on \"nothere\", which no manifest defines"]
    );
    assert_eq!(parsed[0].containers[0].depends_on, ["b"]);
}

#[test]
fn a_container_cannot_depend_on_itself_or_list_a_name_twice() {
    let parsed = check(&[("/m/a.yaml", doc("a", "  dependsOn: [b, a, b, Bad_]\n"))]);
    let all = messages(&parsed);
    assert!(
        all.iter()
            .any(|m| m.contains("spec.dependsOn[1]: \"a\" is this container")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|m| m.contains("spec.dependsOn[2]: \"b\" is listed twice")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|m| m.starts_with("/m/a.yaml:7:24: spec.dependsOn[3]")),
        "{all:#?}"
    );
}

#[test]
fn healthcheck_defaults_and_errors() {
    let parsed = check(&[(
        "/m/a.yaml",
        doc(
            "a",
            "  healthcheck:\n    http: {port: 8080}\n  updateStrategy: {rollback: true}\n",
        ),
    )]);
    assert!(messages(&parsed).is_empty(), "{:#?}", messages(&parsed));
    let c = &parsed[0].containers[0];
    let h = c.spec.healthcheck.as_ref().unwrap();
    assert_eq!(
        h.probe,
        Some(Probe::Http {
            port: 8080,
            path: "/".into()
        })
    );
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms),
        (10_000, 2_000, 3, 0)
    );
    let u = c.update_strategy.unwrap();
    assert!(u.rollback);
    assert_eq!(u.healthy_for_ms, 60_000);

    let parsed = check(&[(
        "/m/b.yaml",
        doc(
            "b",
            "  healthcheck:\n    exec: [true]\n    tcp: 80\n    retries: 0\n    timeout: 0s\n    http: {port: 1, scheme: HTTPS}\n",
        ),
    )]);
    let all = messages(&parsed);
    assert!(
        all.iter()
            .any(|m| m.contains("spec.healthcheck: set one of exec, tcp or http, not several")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|m| m.contains("spec.healthcheck.retries: must be at least 1")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|m| m.contains("spec.healthcheck.timeout: must be longer than 0")),
        "{all:#?}"
    );

    let parsed = check(&[("/m/c.yaml", doc("c", "  healthcheck: {interval: 5s}\n"))]);
    let all = messages(&parsed);
    assert!(
        all.iter()
            .any(|m| m.contains("set one of exec, tcp or http, or notify: true")),
        "{all:#?}"
    );
}

#[test]
fn the_rollout_fields_are_not_part_of_the_spec_hash_but_the_healthcheck_is() {
    let plain = check(&[("/m/a.yaml", doc("a", ""))]);
    let rollout = check(&[
        (
            "/m/a.yaml",
            doc(
                "a",
                "  dependsOn: [b]\n  restartWithDependency: true\n  updateStrategy: {rollback: true}\n",
            ),
        ),
        ("/m/b.yaml", doc("b", "")),
    ]);
    let checked = check(&[("/m/a.yaml", doc("a", "  healthcheck: {tcp: 80}\n"))]);
    let hash = |p: &[ParsedFile]| p[0].containers[0].hash.clone();
    assert_eq!(hash(&plain), hash(&rollout));
    assert_ne!(hash(&plain), hash(&checked));
}
