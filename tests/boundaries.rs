//! Roles do not reach into each other (ADR 0001): no crate of the workspace but the two that
//! compose roles (the `shoal` binary, and `shoal-bench`, which runs the same wiring) names a role crate (command-api, query-api, projector, worker) other than itself in
//! its `Cargo.toml`, not even as a dev-dependency. What two roles share lives in `shoal-api`
//! (API conventions) or `shoal-infra` (storage and the read model); the binary composes them.

use std::process::Command;

use serde_json::Value;

/// The role crates: each runs on its own in production, and none may depend on another.
const ROLES: [&str; 4] = [
    "shoal-command-api",
    "shoal-query-api",
    "shoal-projector",
    "shoal-worker",
];

/// The packages that wire the roles together: the `shoal` binary, and the benchmark binary,
/// which runs the roles through the binary's own wiring (its library target).
const COMPOSERS: [&str; 2] = ["shoal", "shoal-bench"];

/// The workspace's packages with the workspace packages each names in its `Cargo.toml`
/// (name, dependency kind), as `cargo metadata` reports them.
fn workspace_dependencies() -> Vec<(String, Vec<(String, String)>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|package| {
            let dependencies = package["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter_map(|d| {
                    let name = d["name"].as_str()?;
                    names.contains(&name).then(|| {
                        let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                        (name.to_owned(), kind)
                    })
                })
                .collect();
            (
                package["name"].as_str().expect("name").to_owned(),
                dependencies,
            )
        })
        .collect()
}

#[test]
fn no_crate_but_the_binary_depends_on_a_role() {
    let packages = workspace_dependencies();
    for role in ROLES {
        assert!(
            packages.iter().any(|(name, _)| name == role),
            "{role} is not in the workspace any more: update this test and ADR 0001"
        );
    }
    let mut violations = Vec::new();
    for (package, dependencies) in &packages {
        if COMPOSERS.contains(&package.as_str()) {
            continue;
        }
        for (dependency, kind) in dependencies {
            if dependency != package && ROLES.contains(&dependency.as_str()) {
                violations.push(format!("{package} -> {dependency} ({kind})"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "roles must not depend on each other, and shared crates not on roles (ADR 0001); put \
         what they share in shoal-api or shoal-infra and compose the roles in the binary:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn shared_crates_depend_only_inwards() {
    let packages = workspace_dependencies();
    let allowed: [(&str, &[&str]); 3] = [
        ("shoal-domain", &[]),
        ("shoal-infra", &["shoal-domain", "shoal-infra"]),
        ("shoal-api", &["shoal-domain", "shoal-infra"]),
    ];
    for (crate_name, inwards) in allowed {
        let (_, dependencies) = packages
            .iter()
            .find(|(name, _)| name == crate_name)
            .unwrap_or_else(|| panic!("{crate_name} is not in the workspace"));
        for (dependency, kind) in dependencies {
            assert!(
                inwards.contains(&dependency.as_str()),
                "{crate_name} depends on {dependency} ({kind}); it may depend only on {inwards:?}"
            );
        }
    }
}
