//! The Helm charts rendered by real Helm: `helm/tools/render.py` renders every
//! `helm/examples/*.yaml` with Helm v4's library (helm-python-sdk), our chart
//! with the region examples and the official NATS chart
//! (`../shared/vendor/nats-chart` beside the repository) with the NATS
//! examples; lints them (`helm lint --strict`) and validates every manifest
//! strictly against the Kubernetes 1.31 schemas (kubernetes-validate), plus
//! the checks the API server would make that the schemas cannot (Services and
//! probes aimed at ports that exist, no duplicate keys, ...).
//!
//! `lab/tests/helm.rs` reads the templates as text and checks them against the
//! binaries; this is what Helm and Kubernetes make of them. The Python tools
//! come from `scripts/setup.sh test`. The tests below also break a copy of the
//! chart in each way the check must catch, so it is known to be able to fail.
//!
//! From the rendered manifests, the browser app's candidate list (a ConfigMap)
//! is checked against the relays Helm renders: the same regions as the relays
//! and the collector, and each `relay_id` a Service of that region's relays
//! carrying the candidate's transport.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "prometheus/promtool.rs"]
mod promtool;

use rallypoint_client::{CandidateList, TransportKind};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// Runs the render check; (passed, everything it printed).
fn render(args: &[&Path]) -> (bool, String) {
    let script = repo().join("helm/tools/render.py");
    let output = Command::new("python3")
        .arg(&script)
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 {}: {e} (run scripts/setup.sh test)",
                script.display()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Renders every example after replacing `from` with `to` in a copy of
/// us-east.yaml: (the scratch directory, with the manifests under `out/`;
/// whether the check passed; what it printed).
fn render_us_east_with(tag: &str, from: &str, to: &str) -> (PathBuf, bool, String) {
    let dir = std::env::temp_dir().join(format!("rallypoint-helm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (examples, out) = (dir.join("examples"), dir.join("out"));
    copy_dir(&repo().join("helm/examples"), &examples);
    let path = examples.join("us-east.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "us-east.yaml no longer has {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    let (passed, output) = render(&[Path::new("--examples"), &examples, Path::new("--out"), &out]);
    (dir, passed, output)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of `helm/rallypoint` with one template edited: `from` (which must
/// be there) replaced by `to`. Removed when dropped.
struct BrokenChart(PathBuf);

impl BrokenChart {
    fn new(name: &str, template: &str, from: &str, to: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("rallypoint-helm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let chart = dir.join("rallypoint");
        copy_dir(&repo().join("helm/rallypoint"), &chart);
        let path = chart.join("templates").join(template);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{template} no longer has {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        BrokenChart(dir)
    }

    fn chart(&self) -> PathBuf {
        self.0.join("rallypoint")
    }
}

impl Drop for BrokenChart {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_fails(broken: &BrokenChart, expected: &str) {
    let (passed, output) = render(&[Path::new("--chart"), &broken.chart()]);
    assert!(!passed, "the check passed a broken chart:\n{output}");
    assert!(
        output.contains(expected),
        "the check failed, but not with {expected:?}:\n{output}"
    );
}

#[test]
fn every_example_renders_lints_and_validates_with_real_helm() {
    let (passed, output) = render(&[]);
    println!("{output}");
    assert!(
        passed,
        "helm/examples do not render, lint or validate with real Helm \
         (python3 helm/tools/render.py --out DIR writes the manifests):\n{output}"
    );
    for example in [
        "us-east.yaml",
        "singapore.yaml",
        "nats-us-east.yaml",
        "nats-singapore.yaml",
    ] {
        assert!(
            output.contains(&format!("ok   {example} ")),
            "{example} was not rendered:\n{output}"
        );
    }
}

#[test]
fn a_template_helm_cannot_render_fails_the_check() {
    let broken = BrokenChart::new(
        "template",
        "relay-pdb.yaml",
        "maxUnavailable: {{ .Values.relay.podDisruptionBudget.maxUnavailable }}",
        "maxUnavailable: {{ .Values.relay.podDisruptionBudget.maxUnavailable }",
    );
    assert_fails(&broken, "helm template failed");
}

#[test]
fn a_manifest_kubernetes_would_reject_fails_the_check() {
    // An unknown field (strict validation) ...
    let broken = BrokenChart::new("field", "relay-ws.yaml", "maxSurge: 1", "maxSurges: 1");
    assert_fails(&broken, "'maxSurges' was unexpected");
    // ... and a wrong type.
    let broken = BrokenChart::new(
        "type",
        "relay-wt.yaml",
        "containerPort: {{ .Values.relay.wt.udpPort }}",
        "containerPort: \"{{ .Values.relay.wt.udpPort }}\"",
    );
    assert_fails(&broken, "'4433' is not of type 'integer'");
}

#[test]
fn a_service_aimed_at_a_port_no_relay_has_fails_the_check() {
    let broken = BrokenChart::new(
        "port",
        "relay-ws.yaml",
        "targetPort: public",
        "targetPort: admin",
    );
    assert_fails(
        &broken,
        "targets 'admin'/TCP, which no selected container has",
    );
}

#[test]
fn a_candidate_list_without_its_own_region_fails_the_check() {
    let dir = std::env::temp_dir().join(format!("rallypoint-helm-examples-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&repo().join("helm/examples"), &dir);
    let path = dir.join("singapore.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let from = "    - name: singapore\n";
    assert!(
        text.contains(from),
        "singapore.yaml no longer lists singapore's candidates"
    );
    std::fs::write(&path, text.replacen(from, "    - name: elsewhere\n", 1)).unwrap();
    let (passed, output) = render(&[Path::new("--examples"), &dir]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !passed,
        "the check passed a region missing from its own candidate list:\n{output}"
    );
    assert!(
        output.contains("candidates.regions must list this region, singapore"),
        "{output}"
    );
}

// ---------------------------------------------------------------- the candidate list

/// Every manifest Helm rendered from one region example (`render.py --out`).
fn manifests(dir: &Path) -> Vec<Value> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let doc: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !doc.is_null() {
                docs.push(doc);
            }
        }
    }
    docs
}

/// The ConfigMap whose name ends in `suffix`.
fn config_map<'a>(docs: &'a [Value], suffix: &str) -> Option<&'a Value> {
    docs.iter().find(|d| {
        d["kind"] == "ConfigMap" && d["metadata"]["name"].as_str().unwrap().ends_with(suffix)
    })
}

fn env<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// The Deployments a Service's selector picks.
fn selected<'a>(service: &Value, docs: &'a [Value]) -> Vec<&'a Value> {
    let selector = service["spec"]["selector"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .filter(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
        })
        .collect()
}

#[test]
fn the_candidate_list_names_the_relays_regions_and_services() {
    let out = std::env::temp_dir().join(format!("rallypoint-helm-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (passed, output) = render(&[Path::new("--out"), &out]);
    assert!(passed, "{output}");

    let examples: Vec<String> = std::fs::read_dir(repo().join("helm/examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && !name.starts_with("nats-"))
        .map(|name| name.trim_end_matches(".yaml").to_owned())
        .collect();
    let mut lists = BTreeMap::new();
    let mut relay_regions = BTreeSet::new();
    let mut telemetry_regions = BTreeSet::new();
    for example in &examples {
        let docs = manifests(&out.join(example).join("rallypoint/templates"));
        let region = docs
            .iter()
            .filter(|d| d["kind"] == "Deployment")
            .find_map(|d| env(d, "RALLYPOINT_REGION"))
            .unwrap_or_else(|| panic!("{example}: no relay"))
            .to_owned();
        relay_regions.insert(region.clone());
        if let Some(regions) = docs
            .iter()
            .find_map(|d| env(d, "RALLYPOINT_TELEMETRY_REGIONS"))
        {
            telemetry_regions.extend(
                regions
                    .split(',')
                    .map(|r| r.split(':').next().unwrap().to_owned()),
            );
        }

        let config_map = config_map(&docs, "-candidates")
            .unwrap_or_else(|| panic!("{example}: no candidate list ConfigMap"));
        let json = config_map["data"]["candidates.json"]
            .as_str()
            .unwrap_or_else(|| panic!("{example}: the ConfigMap has no candidates.json"));
        let list = CandidateList::parse(json)
            .unwrap_or_else(|e| panic!("{example}: the browser app refuses the list: {e}\n{json}"));

        // This region's candidates are its relay Services, one per transport.
        let own: Vec<_> = list
            .candidates
            .iter()
            .filter(|c| c.region == region)
            .collect();
        for transport in [TransportKind::WebSocket, TransportKind::WebTransport] {
            let candidates: Vec<_> = own.iter().filter(|c| c.transport == transport).collect();
            assert_eq!(
                candidates.len(),
                1,
                "{example}: {region} needs one {transport:?} candidate: {own:?}"
            );
            let candidate = candidates[0];
            let service = docs
                .iter()
                .find(|d| {
                    d["kind"] == "Service" && d["metadata"]["name"] == candidate.relay_id.as_str()
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{example}: relay_id {} is no Service Helm renders",
                        candidate.relay_id
                    )
                });
            let (transports, protocol) = match transport {
                TransportKind::WebSocket => ("ws", "TCP"),
                TransportKind::WebTransport => ("wt", "UDP"),
            };
            let relays = selected(service, &docs);
            assert!(
                !relays.is_empty(),
                "{example}: Service {} selects no relay",
                candidate.relay_id
            );
            for relay in relays {
                assert_eq!(
                    env(relay, "RALLYPOINT_TRANSPORTS"),
                    Some(transports),
                    "{example}: {} is not a {transports} relay",
                    candidate.relay_id
                );
                assert_eq!(env(relay, "RALLYPOINT_REGION"), Some(region.as_str()));
            }
            assert!(
                service["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["protocol"] == protocol),
                "{example}: Service {} has no {protocol} port for {transport:?}",
                candidate.relay_id
            );
        }
        lists.insert(example.clone(), list);
    }
    let _ = std::fs::remove_dir_all(&out);

    let first = lists.values().next().unwrap();
    for (example, list) in &lists {
        assert_eq!(
            list, first,
            "{example} has another candidate list than the other regions"
        );
    }
    let candidate_regions: BTreeSet<String> =
        first.candidates.iter().map(|c| c.region.clone()).collect();
    assert_eq!(
        candidate_regions, relay_regions,
        "candidates and relays name other regions"
    );
    assert_eq!(
        telemetry_regions, relay_regions,
        "the collector and the relays name other regions"
    );
}

// ---------------------------------------------------------------- Prometheus

/// The alert rules the chart ships (`files/rallypoint-rules.yml`), parsed.
fn alert_rules() -> Value {
    let text =
        std::fs::read_to_string(repo().join("helm/rallypoint/files/rallypoint-rules.yml")).unwrap();
    yaml_serde::from_str(&text).unwrap()
}

/// The port named `name` of a Deployment's first container.
fn container_port(deployment: &Value, name: &str) -> Option<u64> {
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["containerPort"]
        .as_u64()
}

fn component(deployment: &Value) -> &str {
    deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        .as_str()
        .unwrap_or_default()
}

/// Relays and the collector serve /metrics on the port named `http`.
const SCRAPED: [&str; 3] = ["relay-ws", "relay-wt", "collector"];

#[test]
fn relay_and_collector_pods_are_annotated_for_scraping_and_the_rules_ship_unchanged() {
    let out = std::env::temp_dir().join(format!("rallypoint-helm-scrape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (passed, output) = render(&[Path::new("--out"), &out]);
    assert!(passed, "{output}");
    let docs = manifests(&out.join("us-east/rallypoint/templates"));
    let _ = std::fs::remove_dir_all(&out);

    let mut annotated = BTreeSet::new();
    for deployment in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        let component = component(deployment);
        if !SCRAPED.contains(&component) {
            assert!(
                annotations["prometheus.io/scrape"].is_null(),
                "{component} serves no /metrics but asks to be scraped"
            );
            continue;
        }
        let port = container_port(deployment, "http").expect("a port named http");
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{component}");
        assert_eq!(
            annotations["prometheus.io/port"],
            port.to_string(),
            "{component}"
        );
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{component}");
        annotated.insert(component.to_owned());
    }
    assert_eq!(annotated, BTreeSet::from(SCRAPED.map(String::from)));

    // us-east ships the rules as a ConfigMap, exactly the rules file.
    let config_map =
        config_map(&docs, "-alert-rules").expect("us-east renders the alert rules ConfigMap");
    let shipped: Value =
        yaml_serde::from_str(config_map["data"]["rallypoint-rules.yml"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, alert_rules());
}

#[test]
fn operator_options_render_pod_monitors_and_the_rules_as_a_prometheus_rule() {
    // us-east with the Prometheus Operator's objects instead of annotations.
    let from = "metrics:\n  rules:\n    configMap: true\n";
    let to = "metrics:\n  podAnnotations: false\n  podMonitor:\n    enabled: true\n    \
              interval: 30s\n    labels: {release: kube-prometheus-stack}\n  rules:\n    \
              configMap: false\n    prometheusRule: true\n    labels: {release: kube-prometheus-stack}\n";
    let (dir, _, output) = render_us_east_with("operator", from, to);
    let docs = manifests(&dir.join("out/us-east/rallypoint/templates"));
    let rule_file = dir.join("prometheus-rule.yml");

    // Helm renders and lints them, and everything else validates strictly;
    // the Kubernetes schemas do not know the Operator's kinds, checked below.
    let problems: Vec<&str> = output.lines().filter(|l| l.starts_with("  - ")).collect();
    assert!(
        problems.len() == 3
            && problems.iter().all(|p| {
                p.contains("Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1")
                    || p.contains("Couldn't find schema for kind PrometheusRule with api version monitoring.coreos.com/v1")
            }),
        "problems beyond the Operator's kinds:\n{output}"
    );

    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    let monitors: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "PodMonitor").collect();
    assert_eq!(
        monitors.len(),
        2,
        "a PodMonitor for relays, one for the collector"
    );
    let mut scraped = BTreeSet::new();
    for monitor in monitors {
        let name = monitor["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            monitor["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
        let selector = &monitor["spec"]["selector"];
        let picks = |labels: &Value| {
            selector["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &labels[k] == v)
                && selector["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|e| {
                        assert_eq!(e["operator"], "In", "{name}");
                        e["values"]
                            .as_array()
                            .unwrap()
                            .contains(&labels[e["key"].as_str().unwrap()])
                    })
        };
        let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
        assert_eq!(endpoint["path"], "/metrics", "{name}");
        assert_eq!(endpoint["interval"], "30s", "{name}");
        let job = endpoint["relabelings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["targetLabel"] == "job")
            .and_then(|r| r["replacement"].as_str())
            .unwrap_or_else(|| panic!("{name}: no job label"));
        for deployment in deployments
            .iter()
            .filter(|d| picks(&d["spec"]["template"]["metadata"]["labels"]))
        {
            let component = component(deployment);
            let port = endpoint["port"].as_str().unwrap();
            assert!(
                container_port(deployment, port).is_some(),
                "{name}: {component} has no port {port}"
            );
            // The alert rules select relay and collector jobs by name.
            let kind = if component.starts_with("relay") {
                "relay"
            } else {
                component
            };
            assert!(
                job.contains(kind),
                "{name}: {component} scraped as job {job}"
            );
            assert!(
                scraped.insert(component.to_owned()),
                "{component} scraped twice"
            );
        }
    }
    assert_eq!(scraped, BTreeSet::from(SCRAPED.map(String::from)));
    assert!(
        deployments.iter().all(|d| {
            d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"].is_null()
        }),
        "scrape annotations with PodMonitors: every pod would be scraped twice"
    );

    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(
        rule["spec"],
        alert_rules(),
        "the PrometheusRule is the rules file"
    );
    // Its spec is a rules file: promtool checks it as one. JSON is YAML.
    std::fs::write(&rule_file, rule["spec"].to_string()).unwrap();
    let check = promtool::check_rules(&rule_file);
    let _ = std::fs::remove_dir_all(&dir);
    match check {
        Ok(text) => assert!(text.contains("SUCCESS: 12 rules found"), "{text}"),
        Err(e) => panic!("promtool on the PrometheusRule's spec:\n{e}"),
    }
}

/// Every pod of ours (Deployments and the setup Job) is selected by exactly
/// one NetworkPolicy that restricts both directions, and the policies say
/// what the trust model says: only the ingress namespace reaches the
/// dashboard, relays reach only NATS (and DNS), nobody but the collector,
/// the dashboard reach ClickHouse's port.
#[test]
fn network_policies_cover_every_pod_and_allow_only_what_each_needs() {
    let out = std::env::temp_dir().join(format!("rallypoint-helm-netpol-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (passed, output) = render(&[Path::new("--out"), &out]);
    assert!(passed, "{output}");
    let docs = manifests(&out.join("us-east/rallypoint/templates"));
    let _ = std::fs::remove_dir_all(&out);

    let policies: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    let pods = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "Job");
    let mut by_component = BTreeMap::new();
    for pod in pods {
        let labels = &pod["spec"]["template"]["metadata"]["labels"];
        let component = labels["app.kubernetes.io/component"].as_str().unwrap();
        let matching: Vec<&&Value> = policies
            .iter()
            .filter(|p| {
                p["spec"]["podSelector"]["matchLabels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &labels[k] == v)
            })
            .collect();
        assert_eq!(matching.len(), 1, "{component}: one policy selects it");
        let types = &matching[0]["spec"]["policyTypes"];
        assert_eq!(
            types,
            &json!(["Ingress", "Egress"]),
            "{component}: both directions"
        );
        by_component.insert(component.to_owned(), (*matching[0]).clone());
    }
    let egress_ports = |component: &str| -> BTreeSet<u64> {
        by_component[component]["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| rule["ports"].as_array().unwrap().iter())
            .map(|p| p["port"].as_u64().unwrap())
            .collect()
    };
    // DNS everywhere; us-east exports OTLP (port 4318) from every part.
    let with =
        |ports: &[u64]| -> BTreeSet<u64> { [53, 4318].iter().chain(ports).copied().collect() };
    for relay in ["relay-ws", "relay-wt"] {
        assert_eq!(egress_ports(relay), with(&[4222]), "{relay}");
    }
    // ClickHouse over HTTPS; the setup Job migrates its schema.
    assert_eq!(egress_ports("collector"), with(&[4222, 8443]));
    assert_eq!(egress_ports("collector-setup"), with(&[4222, 8443]));
    assert_eq!(egress_ports("dashboard"), with(&[8443]));
    let dashboard_in = &by_component["dashboard"]["spec"]["ingress"];
    assert_eq!(dashboard_in.as_array().unwrap().len(), 1);
    assert_eq!(
        dashboard_in[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx",
        "only the ingress controller reaches the dashboard"
    );
    assert!(
        by_component["collector-setup"]["spec"]["ingress"].is_null(),
        "nothing reaches the setup Job"
    );
}

/// The pod spec of a Deployment or Job, or of a CronJob's Job.
fn pod_spec(doc: &Value) -> &Value {
    match doc["kind"].as_str() {
        Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &doc["spec"]["template"]["spec"],
    }
}

#[test]
fn a_clickhouse_cluster_reaches_every_part_that_opens_the_schema() {
    // us-east (where the collector and dashboard run) on a clustered ClickHouse.
    let from = "  database: rallypoint\n";
    let clustered = "  database: rallypoint\n  cluster: rallypoint\n";
    let (dir, passed, output) = render_us_east_with("cluster", from, clustered);
    assert!(passed, "{output}");

    let docs = manifests(&dir.join("out/us-east/rallypoint/templates"));
    let mut opened = Vec::new();
    for doc in &docs {
        let Some(containers) = pod_spec(doc)["containers"].as_array() else {
            continue;
        };
        for container in containers {
            let env = container["env"].as_array().cloned().unwrap_or_default();
            let value = |name: &str| {
                env.iter()
                    .find(|e| e["name"] == name)
                    .and_then(|e| e["value"].as_str())
                    .map(str::to_owned)
            };
            if value("RALLYPOINT_CLICKHOUSE_URL").is_some() {
                assert_eq!(
                    value("RALLYPOINT_CLICKHOUSE_CLUSTER").as_deref(),
                    Some("rallypoint"),
                    "{} {}",
                    doc["kind"],
                    doc["metadata"]["name"]
                );
                opened.push(format!(
                    "{}/{}",
                    doc["kind"].as_str().unwrap(),
                    container["name"].as_str().unwrap()
                ));
            }
        }
    }
    opened.sort();
    // The collector, its setup Job and daily CronJob, and the dashboard.
    assert_eq!(opened.len(), 4, "{opened:?}");

    // A name that cannot go into DDL unquoted is refused by the chart.
    let unquotable = "  database: rallypoint\n  cluster: \"rp; DROP\"\n";
    let (dir, passed, output) = render_us_east_with("cluster", from, unquotable);
    assert!(!passed && output.contains("cluster"), "{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dashboard's planning figure reaches it only when a region sets it:
/// unset, the binary's own default applies.
#[test]
fn the_dashboards_participants_per_relay_core_is_rendered_only_when_set() {
    let dashboard_env = |dir: &Path| {
        let docs = manifests(&dir.join("out/us-east/rallypoint/templates"));
        let dashboard = docs
            .iter()
            .find(|d| d["kind"] == "Deployment" && component(d) == "dashboard")
            .expect("us-east (the central region) renders the dashboard")
            .clone();
        env(&dashboard, "RALLYPOINT_PARTICIPANTS_PER_RELAY_CORE").map(str::to_owned)
    };
    let (unset, passed, output) =
        render_us_east_with("per-core-unset", "dashboard:\n", "dashboard:\n");
    assert!(passed, "{output}");
    assert_eq!(dashboard_env(&unset), None);
    let (set, passed, output) = render_us_east_with(
        "per-core-set",
        "dashboard:\n",
        "dashboard:\n  participantsPerRelayCore: 120\n",
    );
    assert!(passed, "{output}");
    assert_eq!(dashboard_env(&set).as_deref(), Some("120"));
    let (zero, passed, output) = render_us_east_with(
        "per-core-zero",
        "dashboard:\n",
        "dashboard:\n  participantsPerRelayCore: 0\n",
    );
    assert!(
        !passed,
        "0 participants per relay core was accepted:\n{output}"
    );
    for dir in [unset, set, zero] {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
