//! The probe against the real runtimes `make test` installs: Debian's runc
//! 1.1.5 lists `rro` in its features; Debian's crun 1.8.1 has no `features`
//! command, so its features are unknown and reported false.
#![allow(clippy::unwrap_used)]

use crius_oci_runtime::probe::{probe_handler, HostFacts};
use crius_oci_runtime::RuntimeHandlers;
use std::collections::BTreeMap;
use std::path::Path;

fn probes() -> Vec<crius_oci_runtime::Probe> {
    let host = HostFacts::read();
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    let h = RuntimeHandlers::resolve(
        &BTreeMap::new(),
        "runc",
        Path::new("/run/crius-test"),
        &path,
    )
    .unwrap();
    h.handlers
        .values()
        .map(|r| probe_handler(r, &host))
        .collect()
}

#[test]
fn runc_reports_rro_from_its_features() {
    let host = HostFacts::read();
    let runc = probes()
        .into_iter()
        .find(|p| p.name == "runc")
        .expect("runc installed (make test installs it)");
    assert!(runc.features_unknown.is_none(), "{runc:?}");
    let mount_options = runc.mount_options.clone().unwrap();
    assert!(
        mount_options.iter().any(|o| o == "rro"),
        "runc features lack rro: {mount_options:?}"
    );
    let new_kernel = host.kernel.is_some_and(|k| k >= (5, 12));
    assert_eq!(runc.status.recursive_read_only_mounts, new_kernel);
    assert!(runc.status.ready, "{runc:?}");
    assert!(runc.version.as_deref().unwrap_or("").contains("runc"));
    assert!(!runc.status.oci_version.is_empty());
}

#[test]
fn crun_without_features_is_unknown_never_guessed() {
    let Some(crun) = probes().into_iter().find(|p| p.name == "crun") else {
        panic!("crun installed (make test installs it)");
    };
    // Debian's crun 1.8.1 has no `features`; a newer crun would have one.
    if crun.version.as_deref().is_some_and(|v| v.contains("1.8.")) {
        assert!(crun.features_unknown.is_some(), "{crun:?}");
        assert!(!crun.status.recursive_read_only_mounts);
        assert!(!crun.status.user_namespaces);
        assert_eq!(crun.status.oci_version, "1.0.2");
    }
    if !crun.status.ready {
        assert_eq!(crun.status.reason, "UnsupportedCgroupLayout", "{crun:?}");
        assert!(crun.status.message.contains("hybrid"));
    }
}
