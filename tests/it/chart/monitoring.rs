//! The chart: the ServiceMonitor and the alerts.

use super::*;

#[test]
fn service_monitor_scrapes_the_metrics_port_when_enabled() {
    if !tools(&["helm"]) {
        return;
    }
    let off = Scenario::new("self-managed", Platform::OpenShiftValue).render();
    assert!(off.of_kind("ServiceMonitor").is_empty(), "off by default");

    let r = Scenario::new("self-managed", Platform::Kubernetes)
        .with("serviceMonitor.labels.release=prometheus")
        .render();
    let monitor = r.one("ServiceMonitor");
    let service = r.one("Service");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let service_labels: BTreeMap<&str, &str> = service["metadata"]["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    assert!(selects(&monitor["spec"]["selector"], &service_labels));
    assert_eq!(
        strings(&monitor["spec"]["namespaceSelector"]["matchNames"]),
        [NAMESPACE]
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == endpoint["port"] && p["targetPort"] == "metrics")
    );
}

/// Every vector selector of an alert expression.
#[derive(Default)]
struct Selectors(Vec<promql_parser::parser::VectorSelector>);

impl promql_parser::util::ExprVisitor for Selectors {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, Self::Error> {
        use promql_parser::parser::Expr;
        match expr {
            Expr::VectorSelector(selector) => self.0.push(selector.clone()),
            Expr::MatrixSelector(matrix) => self.0.push(matrix.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// The names of the series keyhook's `/metrics` exposes once each metric
/// has been recorded (labelled families print nothing before their first
/// series).
fn exported_series() -> BTreeSet<String> {
    use keyhook::metrics::{CertKind, Metrics};
    let metrics = Metrics::new();
    metrics.secrets.set_exporting(true);
    metrics
        .certs
        .set_not_after(CertKind::Serving, 1_900_000_000);
    metrics.http.route("/mutate-pod", 200).record(200, 0.001);
    metrics
        .providers
        .record_build("vault", "shop/vault".into(), false);
    metrics
        .encode()
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(String::from)
        .collect()
}

#[test]
fn alerts_are_promql_over_this_releases_metrics() {
    if !tools(&["helm"]) {
        return;
    }
    use promql_parser::label::MatchOp;
    let off = Scenario::new("self-managed", Platform::OpenShiftValue).render();
    assert!(off.of_kind("PrometheusRule").is_empty(), "off by default");

    let r = Scenario::new("self-managed", Platform::Kubernetes)
        .with("prometheusRule.labels.release=prometheus")
        .render();
    let rule = r.one("PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let exported = exported_series();
    let alerts = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(alerts.len(), 8);
    for alert in alerts {
        let name = alert["alert"].as_str().unwrap();
        let expr = promql_parser::parser::parse(alert["expr"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: not PromQL: {e}"));
        let mut selectors = Selectors::default();
        promql_parser::util::walk_expr(&mut selectors, &expr).unwrap();
        assert!(!selectors.0.is_empty(), "{name} selects nothing");
        for selector in &selectors.0 {
            let metric = selector.name.as_deref().unwrap_or_default();
            assert!(
                exported.contains(metric),
                "{name}: `{metric}` is not a series keyhook exports: {exported:?}"
            );
            // The ServiceMonitor's target labels pin the series to this release.
            for (label, value) in [("job", FULLNAME), ("namespace", NAMESPACE)] {
                assert!(
                    selector
                        .matchers
                        .matchers
                        .iter()
                        .any(|m| m.name == label && m.value == value && m.op == MatchOp::Equal),
                    "{name}: `{metric}` is not selected by {label}={value}"
                );
            }
        }
        assert_eq!(alert["labels"]["severity"], "warning", "{name}");
        assert!(
            alert["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{name}"
        );
    }
}
