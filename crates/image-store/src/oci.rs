//! Manifests and image configs as oci-spec's types.
//!
//! Registries serve documents oci-spec's deserialisation refuses though
//! crius has always accepted them: a descriptor without `mediaType`, a
//! manifest without `schemaVersion` or `layers`, an annotation or label
//! that is not a string, an image config without `architecture`, `os` or
//! `rootfs`, or one with an `Env` that is not a list of strings. Rejecting
//! them now would make pulls (and containers) fail that work today, so a
//! document oci-spec cannot read is read here leniently, from its
//! `serde_json::Value`, into the same types: exactly the fields crius reads,
//! with the defaults it has always applied, and nothing else. Either way the
//! rest of the store sees one type.

use std::collections::HashMap;
use std::str::FromStr;

use oci_spec::image::{
    Arch, Config, ConfigBuilder, Descriptor, Digest, ImageConfiguration, ImageConfigurationBuilder,
    ImageManifest, ImageManifestBuilder, MediaType, Os, RootFs, RootFsBuilder,
};
use serde::Deserialize;
use serde_json::Value;

/// The media type of a descriptor that names none.
const DEFAULT_MEDIA_TYPE: &str = "application/octet-stream";

/// The manifest `json` as an [`ImageManifest`]. Errors name the part that
/// is unusable (`"config descriptor"`, `"layer descriptor"`); descriptors
/// are otherwise checked by the caller.
pub(crate) fn manifest(json: &Value) -> Result<ImageManifest, &'static str> {
    match ImageManifest::deserialize(json) {
        Ok(m) => Ok(m),
        Err(e) => {
            tracing::debug!(error = %e, "manifest does not parse as OCI; reading it leniently");
            lenient_manifest(json)
        }
    }
}

/// The image config `bytes` as an [`ImageConfiguration`]; any JSON is an
/// image config (fields of the wrong type read as absent), anything else
/// an error saying so.
pub(crate) fn image_config(bytes: &[u8]) -> Result<ImageConfiguration, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("image config is not JSON: {e}"))?;
    match ImageConfiguration::deserialize(&v) {
        Ok(c) => Ok(c),
        Err(e) => {
            tracing::debug!(error = %e, "image config does not parse as OCI; reading it leniently");
            Ok(lenient_config(&v))
        }
    }
}

/// A descriptor as crius has always read one: a `sha256:` digest of 64
/// lowercase hex digits and a size are required, the media type defaults to
/// `application/octet-stream`, annotations that are not strings are dropped.
fn lenient_descriptor(v: &Value) -> Option<Descriptor> {
    let digest = v["digest"].as_str()?;
    crate::layout::sha256_hex(digest).ok()?;
    let digest = Digest::from_str(digest).ok()?;
    let media_type = v["mediaType"].as_str().unwrap_or(DEFAULT_MEDIA_TYPE);
    let mut d = Descriptor::new(MediaType::from(media_type), v["size"].as_u64()?, digest);
    if let Some(a) = strings(&v["annotations"]) {
        d.set_annotations(Some(a));
    }
    Some(d)
}

/// The string values of a JSON object (None if `v` is no object).
fn strings(v: &Value) -> Option<HashMap<String, String>> {
    v.as_object().map(|o| {
        o.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    })
}

fn lenient_manifest(json: &Value) -> Result<ImageManifest, &'static str> {
    let config = lenient_descriptor(&json["config"]).ok_or("config descriptor")?;
    // Layers that are not a list are no layers, as they always were.
    let layers = json["layers"]
        .as_array()
        .map(|a| a.iter().map(lenient_descriptor).collect::<Option<Vec<_>>>())
        .unwrap_or(Some(Vec::new()))
        .ok_or("layer descriptor")?;
    let schema_version = json["schemaVersion"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(oci_spec::image::SCHEMA_VERSION);
    let mut b = ImageManifestBuilder::default()
        .schema_version(schema_version)
        .config(config)
        .layers(layers);
    if let Some(t) = json["mediaType"].as_str() {
        b = b.media_type(MediaType::from(t));
    }
    if let Some(t) = json["artifactType"].as_str() {
        b = b.artifact_type(MediaType::from(t));
    }
    if let Some(a) = strings(&json["annotations"]) {
        b = b.annotations(a);
    }
    // Every required field is set above.
    b.build().map_err(|_| "manifest")
}

/// The strings of a JSON list (None if `v` is no list).
fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

/// The keys of a Go `map[string]struct{}` (`ExposedPorts`, `Volumes`).
fn keys(v: &Value) -> Option<Vec<String>> {
    v.as_object().map(|o| o.keys().cloned().collect())
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// The fields of the execution config crius and the CRI read; strings
/// where strings belong, everything else as absent.
fn lenient_exec_config(c: &Value) -> Config {
    let mut b = ConfigBuilder::default();
    if let Some(v) = string(&c["User"]) {
        b = b.user(v);
    }
    if let Some(v) = keys(&c["ExposedPorts"]) {
        b = b.exposed_ports(v);
    }
    if let Some(v) = string_list(&c["Env"]) {
        b = b.env(v);
    }
    if let Some(v) = string_list(&c["Entrypoint"]) {
        b = b.entrypoint(v);
    }
    if let Some(v) = string_list(&c["Cmd"]) {
        b = b.cmd(v);
    }
    if let Some(v) = keys(&c["Volumes"]) {
        b = b.volumes(v);
    }
    if let Some(v) = string(&c["WorkingDir"]) {
        b = b.working_dir(v);
    }
    if let Some(v) = strings(&c["Labels"]) {
        b = b.labels(v);
    }
    if let Some(v) = string(&c["StopSignal"]) {
        b = b.stop_signal(v);
    }
    // Every field has a default.
    b.build().unwrap_or_default()
}

/// An image config oci-spec refuses, read the way crius always read image
/// configs. `architecture` and `os` are empty strings when not strings;
/// `history` and the other fields no one reads are left out.
fn lenient_config(v: &Value) -> ImageConfiguration {
    let rootfs = RootFsBuilder::default()
        .typ(string(&v["rootfs"]["type"]).unwrap_or_else(|| "layers".to_string()))
        .diff_ids(string_list(&v["rootfs"]["diff_ids"]).unwrap_or_default())
        .build()
        .unwrap_or_else(|_| RootFs::default());
    let mut b = ImageConfigurationBuilder::default()
        .architecture(Arch::from(v["architecture"].as_str().unwrap_or("")))
        .os(Os::from(v["os"].as_str().unwrap_or("")))
        .rootfs(rootfs);
    if v["config"].is_object() {
        b = b.config(lenient_exec_config(&v["config"]));
    }
    if let Some(c) = string(&v["created"]) {
        b = b.created(c);
    }
    if let Some(a) = string(&v["author"]) {
        b = b.author(a);
    }
    // Every required field is set above.
    b.build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn conforming_manifests_parse_as_oci() {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D1, "size": 7},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D2, "size": 9}],
        });
        let got = manifest(&m).unwrap();
        assert_eq!(
            got.config().media_type().to_string(),
            "application/vnd.docker.container.image.v1+json"
        );
        assert_eq!(got.layers()[0].size(), 9);
        assert_eq!(got.layers()[0].digest().to_string(), D2);
    }

    #[test]
    fn what_oci_spec_refuses_is_read_as_before() {
        // No schemaVersion, no mediaType on the config, a non-string
        // annotation, layers that are not a list.
        let m = json!({
            "config": {"digest": D1, "size": 2, "annotations": {"n": 1, "s": "x"}},
            "layers": "none",
            "artifactType": "application/vnd.test",
            "annotations": {"a": "b", "n": 5},
        });
        let got = manifest(&m).unwrap();
        assert_eq!(got.config().media_type().to_string(), DEFAULT_MEDIA_TYPE);
        assert_eq!(
            got.config().annotations().clone().unwrap(),
            HashMap::from([("s".to_string(), "x".to_string())])
        );
        assert!(got.layers().is_empty());
        assert_eq!(
            got.artifact_type().as_ref().map(|t| t.to_string()),
            Some("application/vnd.test".to_string())
        );
        assert_eq!(
            got.annotations().clone().unwrap(),
            HashMap::from([("a".to_string(), "b".to_string())])
        );
        for (m, want) in [
            (json!({"layers": []}), "config descriptor"),
            (
                json!({"config": {"digest": "sha256:abc", "size": 1}}),
                "config descriptor",
            ),
            (
                json!({"config": {"digest": D1, "size": -1}}),
                "config descriptor",
            ),
            (
                json!({"config": {"digest": D1, "size": 1}, "layers": [{"digest": D2}]}),
                "layer descriptor",
            ),
        ] {
            assert_eq!(manifest(&m).unwrap_err(), want, "{m}");
        }
    }

    #[test]
    fn image_configs_conforming_or_not() {
        let c = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"User": "1000", "Env": ["A=1"], "Cmd": null, "ExposedPorts": {"80/tcp": {}},
                       "Labels": {"l": "v"}, "StopSignal": "SIGINT"},
            "rootfs": {"type": "layers", "diff_ids": [D1]},
        });
        let got = image_config(&serde_json::to_vec(&c).unwrap()).unwrap();
        let exec = got.config().clone().unwrap();
        assert_eq!(exec.user().as_deref(), Some("1000"));
        assert_eq!(exec.cmd(), &None);
        assert_eq!(exec.exposed_ports().clone().unwrap(), vec!["80/tcp"]);
        assert_eq!(got.rootfs().diff_ids(), &vec![D1.to_string()]);

        // Refused by oci-spec (no architecture, an Env of mixed types, a
        // diff ID that is no string): read as crius always read it.
        let c = json!({
            "config": {"User": "u", "Env": ["A=1", 5], "Entrypoint": "sh", "WorkingDir": "/w",
                       "Volumes": {"/v": null}, "Labels": {"l": 1, "k": "v"}},
            "rootfs": {"diff_ids": [D1, 7, D2]},
        });
        let got = image_config(&serde_json::to_vec(&c).unwrap()).unwrap();
        let exec = got.config().clone().unwrap();
        assert_eq!(exec.user().as_deref(), Some("u"));
        assert_eq!(exec.env().clone().unwrap(), vec!["A=1"]);
        assert_eq!(exec.entrypoint(), &None);
        assert_eq!(exec.working_dir().as_deref(), Some("/w"));
        assert_eq!(exec.volumes().clone().unwrap(), vec!["/v"]);
        assert_eq!(
            exec.labels().clone().unwrap(),
            HashMap::from([("k".to_string(), "v".to_string())])
        );
        assert_eq!(
            got.rootfs().diff_ids(),
            &vec![D1.to_string(), D2.to_string()]
        );
        assert_eq!(got.architecture().to_string(), "");

        // Any JSON is a config; anything else is refused, saying so.
        let got = image_config(b"[1, 2]").unwrap();
        assert!(got.config().is_none() && got.rootfs().diff_ids().is_empty());
        let e = image_config(b"{not json").unwrap_err();
        assert!(e.starts_with("image config is not JSON: "), "{e}");
    }
}
