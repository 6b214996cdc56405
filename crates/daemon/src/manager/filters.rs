//! List filters of ListPodSandbox, ListContainers and the stats lists (pure).

use std::collections::HashMap;

/// Every selector pair is present in `labels` with the same value.
pub fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// An id filter: empty matches all; otherwise the id or an id prefix.
pub fn id_matches(filter: &str, id: &str) -> bool {
    filter.is_empty() || id.starts_with(filter)
}

/// A container against the id, pod and label parts of a filter (what
/// ListContainers' and ListContainerStats' filters share).
pub fn container_matches(
    (id, pod, labels): (&str, &str, &HashMap<String, String>),
    (f_id, f_pod, f_labels): (&str, &str, &HashMap<String, String>),
) -> bool {
    id_matches(f_id, id) && id_matches(f_pod, pod) && labels_match(f_labels, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &[(&str, &str)]) -> HashMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_table() {
        let labels = m(&[("app", "web"), ("tier", "front")]);
        for (sel, want) in [
            (m(&[]), true),
            (m(&[("app", "web")]), true),
            (m(&[("app", "web"), ("tier", "front")]), true),
            (m(&[("app", "db")]), false),
            (m(&[("missing", "")]), false),
        ] {
            assert_eq!(labels_match(&sel, &labels), want, "{sel:?}");
        }
    }

    #[test]
    fn id_table() {
        assert!(id_matches("", "abc"));
        assert!(id_matches("ab", "abc"));
        assert!(id_matches("abc", "abc"));
        assert!(!id_matches("abd", "abc"));
    }

    #[test]
    fn container_table() {
        let l = m(&[("app", "web")]);
        let c = ("c123", "p456", &l);
        let none = m(&[]);
        for (f, want) in [
            (("", "", &none), true),
            (("c1", "", &none), true),
            (("", "p4", &l), true),
            (("c1", "p4", &l), true),
            (("c2", "", &none), false),
            (("", "p5", &none), false),
            (("", "", &m(&[("app", "db")])), false),
        ] {
            assert_eq!(container_matches(c, f), want, "{f:?}");
        }
    }
}
