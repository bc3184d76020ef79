//! Which namespaces a store admits.
//!
//! A SecretStore admits only its own namespace. A ClusterSecretStore with no
//! `spec.conditions` admits all; otherwise a namespace is admitted when any
//! condition has a matching `namespaceSelector`, lists it in `namespaces`, or
//! has a `namespaceRegexes` entry matching its name (unanchored, as upstream).

use std::collections::BTreeMap;

use super::{Store, StoreKind};
use crate::apis::common::LabelSelector;

/// Decides whether `store` may be used from `namespace`, whose labels are
/// `labels` (`None` when the namespace is unknown). `Err` carries the reason
/// for the refusal, worded for an error message.
pub fn admits(
    store: &Store,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<(), String> {
    match store.kind {
        StoreKind::SecretStore => {
            if store.namespace.as_deref() == Some(namespace) {
                Ok(())
            } else {
                Err("a SecretStore is usable only from its own namespace".to_string())
            }
        }
        StoreKind::ClusterSecretStore if store.conditions.is_empty() => Ok(()),
        StoreKind::ClusterSecretStore => {
            for condition in &store.conditions {
                if condition
                    .namespaces
                    .iter()
                    .flatten()
                    .any(|n| n == namespace)
                {
                    return Ok(());
                }
                if let (Some(selector), Some(labels)) = (&condition.namespace_selector, labels)
                    && selector_matches(selector, labels)
                {
                    return Ok(());
                }
                // Patterns were compiled when the store was parsed; one that
                // fails here cannot admit anything.
                if condition
                    .namespace_regexes
                    .iter()
                    .flatten()
                    .filter_map(|p| regex::Regex::new(p).ok())
                    .any(|re| re.is_match(namespace))
                {
                    return Ok(());
                }
            }
            let unknown = if labels.is_none()
                && store
                    .conditions
                    .iter()
                    .any(|c| c.namespace_selector.is_some())
            {
                " (the namespace's labels are unknown)"
            } else {
                ""
            };
            Err(format!("no entry of spec.conditions matches it{unknown}"))
        }
    }
}

/// Kubernetes label-selector semantics: every `matchLabels` pair and every
/// `matchExpressions` requirement must hold; an empty selector matches all.
fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|req| {
        let value = labels.get(&req.key);
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}
