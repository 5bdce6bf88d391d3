//! Every generated compose.yaml (every fixture, so every broker, with and
//! without PostgreSQL) is valid against the Compose Specification's JSON
//! Schema and has a healthcheck on each dependency the service waits for.

mod common;

#[test]
fn generated_compose_files_follow_the_compose_specification() {
    let spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("tests/compose-spec/compose_spec.json"))
            .expect("spec"),
    )
    .expect("spec json");
    let validator = jsonschema::validator_for(&spec).expect("compile the compose schema");
    let mut brokers = std::collections::BTreeSet::new();
    for (case, dir) in common::fixtures() {
        let g = evgen::generate(&dir).unwrap_or_else(|d| panic!("{case}: {d}"));
        let file = g
            .files
            .iter()
            .find(|f| f.path == "compose.yaml")
            .expect("compose.yaml");
        let doc: serde_json::Value =
            serde_saphyr::from_str(&file.content).unwrap_or_else(|e| panic!("{case}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{case}: compose.yaml is not valid:\n{}\n{}",
            errors.join("\n"),
            file.content
        );
        let services = doc["services"].as_object().expect("services");
        let me = &services[&g.service.name];
        for dep in me["depends_on"].as_object().expect("depends_on").keys() {
            assert!(
                services[dep].get("healthcheck").is_some(),
                "{case}: {dep} has no healthcheck"
            );
        }
        brokers.insert(g.service.broker.as_str());
    }
    assert_eq!(
        brokers.len(),
        4,
        "fixtures must cover every broker: {brokers:?}"
    );
}
