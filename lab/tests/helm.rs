//! Keeps the Helm chart (`helm/rallypoint`) and its examples honest without
//! Helm, which cannot be installed here.
//!
//! * values: `values.yaml` and every region example (merged over it, as Helm
//!   does) pass `values.schema.json`, and broken documents do not;
//! * templates: read as text, every `.Values` path exists, and every setting
//!   handed to a binary is an environment variable its own `--help` lists;
//! * shape: each template is lowered to YAML with Helm's actions replaced by
//!   markers (`lower`), so containers, probes, ports and Services are checked
//!   as structures, with the markers filled in from each values document;
//! * deployment: relays outlive their drain, WebTransport is UDP with a real
//!   certificate, secrets are only referenced, images are pinned, and the NATS
//!   examples form the super-cluster the collector's stream placement expects.
//!
//! The binaries' `--help` come from the built binaries (`cargo build
//! --workspace --bins`, as for every lab test that starts them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

const BINARIES: [&str; 4] = [
    "rallypoint-relay",
    "rallypoint-collector",
    "rallypoint-dashboard",
    "rallypoint-static",
];

/// The variable holding each binary's HTTP listener (`/healthz`, `/readyz`);
/// the relay's is its admin listener.
fn http_listen_env(binary: &str) -> &'static str {
    match binary {
        "rallypoint-relay" => "RALLYPOINT_ADMIN_LISTEN",
        "rallypoint-collector" => "RALLYPOINT_COLLECTOR_HTTP",
        "rallypoint-dashboard" => "RALLYPOINT_DASHBOARD_LISTEN",
        "rallypoint-static" => "RALLYPOINT_STATIC_LISTEN",
        other => panic!("no HTTP listener known for {other}"),
    }
}

/// Subcommands the chart runs as Jobs (`args` names the subcommand).
const SUBCOMMANDS: [&str; 1] = ["rallypoint-collector setup"];

/// Settings that are file paths whose files must come from a Secret.
const SECRET_FILES: [&str; 7] = [
    "RALLYPOINT_TLS_CERT",
    "RALLYPOINT_TLS_KEY",
    "RALLYPOINT_JWT_PUBLIC_KEY",
    "RALLYPOINT_DASHBOARD_AUTH_USERS_FILE",
    "RALLYPOINT_NATS_CA",
    "RALLYPOINT_NATS_NKEY_FILE",
    "RALLYPOINT_CLICKHOUSE_CA",
];

/// What a relay does after its drain grace period before it exits
/// (relay/src/lib.rs: up to 2 s for the HTTP server, 1 s for the NATS flush).
const RELAY_SHUTDOWN_SECONDS: f64 = 3.0;

fn helm_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm")
}

fn chart_dir() -> PathBuf {
    helm_dir().join("rallypoint")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// YAML into JSON values: the schema validator and the checks work on those.
/// With yaml_serde: serde_yaml is archived, and of its forks yaml_serde is the
/// one the YAML organization keeps releasing (serde_yaml_ng and serde_norway
/// have had no release since 2024).
fn yaml(path: &Path) -> Value {
    yaml_serde::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

fn defaults() -> Value {
    yaml(&chart_dir().join("values.yaml"))
}

fn chart() -> Value {
    yaml(&chart_dir().join("Chart.yaml"))
}

/// The examples of the official NATS chart's values (`nats-<region>.yaml`).
fn nats_examples() -> Vec<(String, Value)> {
    files(&helm_dir().join("examples"), "yaml")
        .into_iter()
        .filter_map(|path| Some((stem(&path).strip_prefix("nats-")?.to_owned(), yaml(&path))))
        .collect()
}

/// Our chart's examples (`<region>.yaml`), as written.
fn region_examples() -> Vec<(String, Value)> {
    files(&helm_dir().join("examples"), "yaml")
        .into_iter()
        .filter(|path| !stem(path).starts_with("nats-"))
        .map(|path| (stem(&path), yaml(&path)))
        .collect()
}

/// Helm's coalescing of user values over the chart's: maps merge, the rest replaces.
fn merge(base: &Value, overlay: &Value) -> Value {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            let mut merged = base.clone();
            for (key, value) in overlay {
                let next = match base.get(key) {
                    Some(old) => merge(old, value),
                    None => value.clone(),
                };
                merged.insert(key.clone(), next);
            }
            Value::Object(merged)
        }
        _ => overlay.clone(),
    }
}

/// Every values document a release can be installed with here: the defaults,
/// and each region's example over them.
fn values_documents() -> Vec<(String, Value)> {
    let defaults = defaults();
    let mut documents = vec![("values.yaml".to_owned(), defaults.clone())];
    for (region, example) in region_examples() {
        documents.push((
            format!("examples/{region}.yaml"),
            merge(&defaults, &example),
        ));
    }
    documents
}

fn lookup<'a>(values: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(values, |node, key| node.as_object()?.get(key))
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

// ---------------------------------------------------------------- schema

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&read(&chart_dir().join("values.schema.json")))
        .expect("values.schema.json is JSON");
    if let Err(e) = jsonschema::draft7::meta::validate(&schema) {
        panic!("values.schema.json is not a draft-07 schema: {e}");
    }
    jsonschema::draft7::new(&schema).expect("values.schema.json compiles")
}

fn schema_errors(validator: &jsonschema::Validator, values: &Value) -> Vec<String> {
    validator
        .iter_errors(values)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn values_and_examples_match_the_schema() {
    let validator = validator();
    let documents = values_documents();
    assert!(documents.len() >= 3, "values.yaml and two region examples");
    for (name, values) in &documents {
        let errors = schema_errors(&validator, values);
        assert!(errors.is_empty(), "{name} breaks the schema:\n{errors:#?}");
    }
}

/// A way to break a good values document.
type Breakage = fn(&mut Value);

#[test]
fn broken_values_are_rejected() {
    let validator = validator();
    let good = defaults();
    // What is wrong, where the schema must say so, how.
    let cases: [(&str, &str, Breakage); 7] = [
        ("missing region", "", |v| {
            v.as_object_mut().unwrap().remove("region");
        }),
        ("unknown key (a typo)", "/relay/ws", |v| {
            v["relay"]["ws"]["replica"] = json!(3);
        }),
        ("wrong type", "/relay/ws/replicas", |v| {
            v["relay"]["ws"]["replicas"] = json!("two");
        }),
        ("a literal secret", "/jwt", |v| {
            v["jwt"]["secret"] = json!("hunter2");
        }),
        ("an unpinned image", "/image/tag", |v| {
            v["image"]["tag"] = json!("latest");
        }),
        (
            "a drain grace the relay cannot parse",
            "/relay/drainGrace",
            |v| {
                v["relay"]["drainGrace"] = json!("10");
            },
        ),
        (
            "a central region without ClickHouse",
            "/clickhouse/url",
            |v| {
                v["central"]["enabled"] = json!(true);
                v["collector"]["regions"] = json!([{"name": "us-east", "replicas": 3}]);
            },
        ),
    ];
    for (what, path, break_it) in cases {
        let mut values = good.clone();
        break_it(&mut values);
        let errors = schema_errors(&validator, &values);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{path}:"))),
            "{what}: expected an error at {path:?}, got {errors:#?}"
        );
    }
}

// ---------------------------------------------------------------- templates as text

fn template_files() -> Vec<PathBuf> {
    let dir = chart_dir().join("templates");
    let mut all = files(&dir, "yaml");
    all.extend(files(&dir, "tpl"));
    all.extend(files(&dir, "txt"));
    all
}

/// The `.Values` paths (`relay.ws.replicas`) the templates read where
/// `pattern` (whose first group is `.Values…`) matches.
fn values_paths(pattern: &str) -> BTreeSet<String> {
    let pattern =
        Regex::new(&pattern.replace("VALUES", r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")).unwrap();
    template_files()
        .iter()
        .flat_map(|path| {
            pattern
                .captures_iter(&read(path))
                .map(|c| c[1][1..].to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn referenced_paths() -> BTreeSet<String> {
    values_paths("VALUES")
}

/// Every key path of a values document (`relay.ws.replicas`, `relay.ws`, …).
fn key_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            key_paths(child, &path, out);
            out.push(path);
        }
    }
}

#[test]
fn template_value_paths_exist_and_values_are_used() {
    let defaults = defaults();
    let referenced = referenced_paths();
    assert!(referenced.len() > 30, "templates read {referenced:?}");
    let missing: Vec<_> = referenced
        .iter()
        .filter(|path| lookup(&defaults, path).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "templates read values that values.yaml does not have: {missing:?}"
    );

    // The other way round: a value no template reads is a setting that does nothing.
    let mut declared = Vec::new();
    key_paths(&defaults, "", &mut declared);
    let unused: Vec<_> = declared
        .iter()
        .filter(|path| {
            !referenced.iter().any(|r| {
                r == *path
                    || r.starts_with(&format!("{path}."))
                    || path.starts_with(&format!("{r}."))
            })
        })
        .collect();
    assert!(
        unused.is_empty(),
        "values.yaml has values no template reads: {unused:?}"
    );
}

/// What a template `required`s makes `helm install` fail when empty: every
/// region's example must set it.
#[test]
fn required_values_are_set_by_every_region() {
    let required = values_paths(r#"required\s+"[^"]*"\s+VALUES"#);
    for path in ["region", "jwt.secretRef.name", "relay.wt.tls.secretName"] {
        assert!(
            required.contains(path),
            "templates no longer require {path}"
        );
    }
    for (name, values) in values_documents().iter().skip(1) {
        for path in &required {
            let value = lookup(values, path).unwrap_or(&Value::Null);
            assert!(!is_empty(value), "{name} leaves required {path} empty");
        }
    }
}

// ---------------------------------------------------------------- binaries

struct Help {
    /// Every `[env: NAME]` the binary lists, and whether clap hides its value
    /// (`hide_env_values`: the binary's own word that it is a secret).
    env: BTreeMap<String, bool>,
    text: String,
}

static HELP: LazyLock<BTreeMap<&'static str, Help>> = LazyLock::new(|| {
    let env = Regex::new(r"\[env: ([A-Z0-9_]+)(=)?").unwrap();
    BINARIES
        .iter()
        .chain(SUBCOMMANDS.iter())
        .map(|&binary| {
            let mut words = binary.split(' ');
            let program = words.next().unwrap();
            let path = rallypoint_testkit::bins::ours(program).unwrap_or_else(|e| panic!("{e:#}"));
            let output = Command::new(&path)
                .args(words)
                .arg("--help")
                .output()
                .unwrap();
            assert!(output.status.success(), "{binary} --help failed");
            let text = String::from_utf8(output.stdout).unwrap();
            let env = env
                .captures_iter(&text)
                .map(|c| (c[1].to_owned(), c.get(2).is_none()))
                .collect();
            (binary, Help { env, text })
        })
        .collect()
});

/// Variables every binary reads through rallypoint-service rather than clap:
/// the ones its observability module documents.
fn service_env() -> BTreeSet<String> {
    let source =
        read(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../service/src/observability.rs"));
    let name = Regex::new(r"`([A-Z][A-Z0-9_]+)`").unwrap();
    source
        .lines()
        .filter(|line| line.starts_with("//!"))
        .flat_map(|line| {
            name.captures_iter(line)
                .map(|c| c[1].to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

// ---------------------------------------------------------------- templates as YAML

static ACTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{\{-?(.*?)-?\}\}").unwrap());
static COMMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)\{\{-?\s*/\*.*?\*/\s*-?\}\}").unwrap());
static ACTIONS_ONLY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\{\{.*?\}\}\s*)+$").unwrap());
static BLOCK_INCLUDE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\{\{-?\s*include\s+"([^"]+)"\s+\.\s*(?:\|\s*n?indent\s+(\d+)\s*)?-?\}\}$"#)
        .unwrap()
});
static MARKER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"⟦(\d+)⟧").unwrap());

/// The `define`s of `_helpers.tpl`, by name.
fn defines() -> BTreeMap<String, String> {
    let text = COMMENT
        .replace_all(&read(&chart_dir().join("templates/_helpers.tpl")), "")
        .into_owned();
    let open = Regex::new(r"^\s*(if|range|with|define|block)\b").unwrap();
    let mut defines = BTreeMap::new();
    let mut stack: Vec<(String, usize)> = Vec::new();
    for action in ACTION.captures_iter(&text) {
        let whole = action.get(0).unwrap();
        let inner = action[1].trim();
        if let Some(keyword) = open.captures(inner) {
            let name = match &keyword[1] {
                "define" => inner.split('"').nth(1).unwrap().to_owned(),
                _ => String::new(),
            };
            stack.push((name, whole.end()));
        } else if inner == "end" {
            let (name, start) = stack.pop().expect("balanced actions");
            if !name.is_empty() {
                defines.insert(name, text[start..whole.start()].to_owned());
            }
        }
    }
    assert!(stack.is_empty(), "_helpers.tpl has an unclosed block");
    defines
}

/// A template as YAML documents; `⟦n⟧` in a scalar stands for `actions[n]`.
struct Shape {
    file: String,
    docs: Vec<Value>,
    actions: Vec<String>,
}

/// Lowers a template to YAML: lines of control actions (`if`, `end`, `with`,
/// `toYaml … | nindent`) go, a block `include` of a helper is replaced by the
/// helper (lowered too), and inline actions become markers. Conditions are
/// not evaluated, so both sides of an `if` are in the shape.
fn lower(
    text: &str,
    defines: &BTreeMap<String, String>,
    actions: &mut Vec<String>,
    out: &mut String,
) {
    let text = COMMENT.replace_all(text, "");
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if ACTIONS_ONLY.is_match(trimmed) {
            if let Some(include) = BLOCK_INCLUDE.captures(trimmed) {
                let body = defines
                    .get(&include[1])
                    .unwrap_or_else(|| panic!("no define {}", &include[1]));
                let indent = match include.get(2) {
                    Some(n) => n.as_str().parse().unwrap(),
                    None => line.len() - line.trim_start().len(),
                };
                let mut lowered = String::new();
                lower(body, defines, actions, &mut lowered);
                for body_line in lowered.lines() {
                    out.push_str(&" ".repeat(indent));
                    out.push_str(body_line);
                    out.push('\n');
                }
            }
            continue;
        }
        let line = ACTION.replace_all(line, |action: &regex::Captures| {
            actions.push(action[1].trim().to_owned());
            format!("⟦{}⟧", actions.len() - 1)
        });
        assert!(!line.contains("{{"), "an action spans lines: {line}");
        out.push_str(&line);
        out.push('\n');
    }
}

fn shapes() -> Vec<Shape> {
    let defines = defines();
    files(&chart_dir().join("templates"), "yaml")
        .iter()
        .map(|path| {
            let mut actions = Vec::new();
            let mut text = String::new();
            lower(&read(path), &defines, &mut actions, &mut text);
            let docs = yaml_serde::Deserializer::from_str(&text)
                .map(|doc| {
                    serde::Deserialize::deserialize(doc).unwrap_or_else(|e| {
                        panic!("{} is not YAML once lowered: {e}\n{text}", path.display())
                    })
                })
                .filter(|doc: &Value| !doc.is_null())
                .collect();
            Shape {
                file: stem(path),
                docs,
                actions,
            }
        })
        .collect()
}

/// One value of a template action: a `.Values`/`.Chart` path or a string,
/// through `required`, `join`, `default` and `quote`. None for anything else
/// (an `include`, a variable), which the checks then cannot see through.
fn eval(action: &str, values: &Value, chart: &Value) -> Option<String> {
    let term = |term: &str| -> Option<Value> {
        let term = term.trim();
        if let Some(path) = term.strip_prefix(".Values.") {
            lookup(values, path).cloned()
        } else if term == ".Chart.AppVersion" {
            Some(chart["appVersion"].clone())
        } else {
            serde_json::from_str::<String>(term).ok().map(Value::String)
        }
    };
    let mut commands = action.split('|');
    let first = commands.next()?.trim();
    let required = Regex::new(r#"^required\s+"[^"]*"\s+(.+)$"#).unwrap();
    let join = Regex::new(r#"^join\s+("[^"]*")\s+(.+)$"#).unwrap();
    let mut value = if let Some(c) = required.captures(first) {
        term(&c[1])?
    } else if let Some(c) = join.captures(first) {
        let separator: String = serde_json::from_str(&c[1]).ok()?;
        let items: Option<Vec<String>> = term(&c[2])?
            .as_array()?
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect();
        Value::String(items?.join(&separator))
    } else {
        term(first)?
    };
    for command in commands.map(str::trim) {
        match command.split_once(' ') {
            Some(("default", fallback)) if is_empty(&value) => value = term(fallback)?,
            Some(("default", _)) => {}
            None if command == "quote" || command == "toString" => {}
            _ => return None,
        }
    }
    Some(match value {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

impl Shape {
    /// A scalar of this shape as Helm would render it with `values`.
    fn render(&self, scalar: &Value, values: &Value, chart: &Value) -> Option<String> {
        let text = match scalar {
            Value::String(s) => s.clone(),
            Value::Number(n) => return Some(n.to_string()),
            _ => return None,
        };
        let mut rendered = String::new();
        let mut last = 0;
        for marker in MARKER.captures_iter(&text) {
            let whole = marker.get(0).unwrap();
            rendered.push_str(&text[last..whole.start()]);
            let action = &self.actions[marker[1].parse::<usize>().unwrap()];
            rendered.push_str(&eval(action, values, chart)?);
            last = whole.end();
        }
        rendered.push_str(&text[last..]);
        Some(rendered)
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> {
        self.docs.iter().filter(move |doc| doc["kind"] == kind)
    }
}

/// A container of one of our binaries, in the Deployment that runs it.
struct Container<'a> {
    shape: &'a Shape,
    deployment: &'a Value,
    container: &'a Value,
    binary: String,
}

impl Container<'_> {
    fn label(&self) -> String {
        format!(
            "{}/{}",
            self.shape.file,
            self.container["name"].as_str().unwrap_or("?")
        )
    }

    fn env(&self) -> impl Iterator<Item = &Value> {
        self.container["env"].as_array().into_iter().flatten()
    }

    fn env_value(&self, name: &str) -> Option<&Value> {
        self.env()
            .find(|e| e["name"] == name)
            .map(|e| &e["value"])
            .filter(|v| !v.is_null())
    }

    fn pod(&self) -> &Value {
        &self.deployment["spec"]["template"]["spec"]
    }

    fn port(&self, name: &str) -> &Value {
        self.container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{}: no container port {name}", self.label()))
    }
}

/// Every container of every `kind` workload, with the program its image runs.
fn workload_containers<'a>(
    shapes: &'a [Shape],
    kind: &'static str,
) -> impl Iterator<Item = (&'a Shape, &'a Value, &'a Value, String)> {
    let image = Regex::new(r"/(rallypoint-[a-z]+):").unwrap();
    shapes.iter().flat_map(move |shape| {
        let image = image.clone();
        shape.of_kind(kind).flat_map(move |workload| {
            let image = image.clone();
            workload["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |container| {
                    let program = image
                        .captures(container["image"].as_str().unwrap())
                        .map(|c| image_binary(&c[1]).to_owned())
                        .unwrap_or_else(|| panic!("{}: not one of our images", shape.file));
                    (shape, workload, container, program)
                })
        })
    })
}

/// The binary an image runs: its name, but for the browser app's image
/// (images/web.Containerfile), whose server is rallypoint-static.
fn image_binary(image: &str) -> &str {
    match image {
        "rallypoint-web" => "rallypoint-static",
        other => other,
    }
}

/// Containers of Jobs, each running one of [`SUBCOMMANDS`].
fn job_containers(shapes: &[Shape]) -> Vec<Container<'_>> {
    let mut found = Vec::new();
    for (shape, job, container, program) in workload_containers(shapes, "Job") {
        let args: Vec<&str> = container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().unwrap())
            .collect();
        let binary = format!("{program} {}", args.join(" "));
        assert!(
            SUBCOMMANDS.contains(&binary.as_str()),
            "{}: a Job runs {binary}, not a known subcommand",
            shape.file
        );
        found.push(Container {
            shape,
            deployment: job,
            container,
            binary,
        });
    }
    assert_eq!(found.len(), SUBCOMMANDS.len(), "a Job per subcommand");
    found
}

fn containers(shapes: &[Shape]) -> Vec<Container<'_>> {
    let mut found = Vec::new();
    for (shape, deployment, container, binary) in workload_containers(shapes, "Deployment") {
        assert!(
            BINARIES.contains(&binary.as_str()),
            "unknown binary {binary}"
        );
        found.push(Container {
            shape,
            deployment,
            container,
            binary,
        });
    }
    let binaries: BTreeSet<_> = found.iter().map(|c| c.binary.as_str()).collect();
    assert_eq!(
        binaries.len(),
        BINARIES.len(),
        "a Deployment per binary: {binaries:?}"
    );
    found
}

#[test]
fn templates_set_only_real_settings() {
    let shapes = shapes();
    let service_env = service_env();
    for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "RUST_LOG"] {
        assert!(
            service_env.contains(name),
            "rallypoint-service no longer documents {name}"
        );
    }
    for container in containers(&shapes)
        .into_iter()
        .chain(job_containers(&shapes))
    {
        let help = &HELP[container.binary.as_str()];
        // Arguments name a Job's subcommand and nothing else.
        let subcommand: Vec<&str> = container.binary.split(' ').skip(1).collect();
        let args: Vec<&str> = container.container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(
            args,
            subcommand,
            "{}: settings go in env",
            container.label()
        );
        let mut seen = BTreeSet::new();
        for entry in container.env() {
            let name = entry["name"].as_str().unwrap();
            // Both sides of every `if` are in the shape, so a name set twice
            // here is set twice in some real rendering too.
            assert!(seen.insert(name), "{} sets {name} twice", container.label());
            let secret = match help.env.get(name) {
                Some(&secret) => secret,
                None if service_env.contains(name) => false,
                None => panic!(
                    "{} sets {name}, which `{} --help` does not list",
                    container.label(),
                    container.binary
                ),
            };
            // A value clap hides is a secret: it comes from a Secret, never from values.
            if secret {
                assert!(
                    entry["value"].is_null() && entry["valueFrom"]["secretKeyRef"].is_object(),
                    "{}: {name} must come from a secretKeyRef",
                    container.label()
                );
            }
        }
    }
}

#[test]
fn probes_use_the_binaries_http_listener() {
    let shapes = shapes();
    let chart = chart();
    let documents = values_documents();
    for container in containers(&shapes) {
        let label = container.label();
        let help = &HELP[container.binary.as_str()];
        // The web server is ready while it serves a valid candidate list
        // (503 otherwise), the others when their /readyz says so.
        let ready = if container.binary == "rallypoint-static" {
            "/candidates.json"
        } else if help.text.contains("/readyz") {
            "/readyz"
        } else {
            "/healthz"
        };
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", ready)] {
            let get = &container.container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{label}: {probe}");
            assert_eq!(
                get["port"], "http",
                "{label}: {probe} is not on the http port"
            );
        }
        let listen_env = http_listen_env(&container.binary);
        assert!(
            help.env.contains_key(listen_env),
            "{listen_env} is not in --help"
        );
        let listen = container
            .env_value(listen_env)
            .unwrap_or_else(|| panic!("{label} does not set {listen_env}"));
        let port = &container.port("http")["containerPort"];
        for (name, values) in &documents {
            let shape = container.shape;
            let listen = shape
                .render(listen, values, &chart)
                .expect("listen address renders");
            let port = shape.render(port, values, &chart).expect("port renders");
            // The binaries' defaults listen on 127.0.0.1, which the kubelet cannot reach.
            assert_eq!(listen, format!("0.0.0.0:{port}"), "{name}: {label}");
        }
    }
}

fn relays<'a>(containers: &'a [Container<'a>]) -> Vec<&'a Container<'a>> {
    let relays: Vec<_> = containers
        .iter()
        .filter(|c| c.binary == "rallypoint-relay")
        .collect();
    assert_eq!(relays.len(), 2, "a WebSocket and a WebTransport relay");
    relays
}

#[test]
fn relays_outlive_their_drain() {
    let shapes = shapes();
    let containers = containers(&shapes);
    let chart = chart();
    for (name, values) in values_documents() {
        for relay in relays(&containers) {
            let shape = relay.shape;
            let grace = relay
                .env_value("RALLYPOINT_DRAIN_GRACE")
                .expect("drain grace is set");
            let grace = shape.render(grace, &values, &chart).unwrap();
            let grace = rallypoint_service::parse_duration(&grace)
                .unwrap_or_else(|e| panic!("{name}: the relay cannot parse its drain grace: {e}"));
            let termination = shape
                .render(
                    &relay.pod()["terminationGracePeriodSeconds"],
                    &values,
                    &chart,
                )
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name}: {} has no termination grace", relay.label()));
            assert!(
                termination > grace.as_secs_f64() + RELAY_SHUTDOWN_SECONDS,
                "{name}: {}: Kubernetes kills the relay after {termination} s, before its \
                 {grace:?} drain and shutdown are over",
                relay.label()
            );
        }
    }
}

/// The volume a path is mounted from, if the container mounts one there.
fn volume_of<'a>(container: &'a Container<'_>, path: &str) -> Option<&'a Value> {
    let mount = container.container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))?;
    container.pod()["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount["name"])
}

#[test]
fn webtransport_is_udp_with_certificates_from_secrets() {
    let shapes = shapes();
    let containers = containers(&shapes);
    let chart = chart();
    let wt = relays(&containers)
        .into_iter()
        .find(|c| c.env_value("RALLYPOINT_TRANSPORTS") == Some(&json!("wt")))
        .expect("a relay serving WebTransport");

    assert_eq!(wt.port("wt")["protocol"], "UDP");
    let services: Vec<_> = wt.shape.of_kind("Service").collect();
    assert_eq!(services.len(), 1, "one Service for the WebTransport relays");
    for port in services[0]["spec"]["ports"].as_array().unwrap() {
        assert_eq!(port["protocol"], "UDP", "WebTransport is QUIC: {port}");
        assert_eq!(port["targetPort"], "wt");
    }
    let listen = wt
        .env_value("RALLYPOINT_WT_LISTEN")
        .expect("WT listen address");
    for (name, values) in values_documents() {
        let listen = wt.shape.render(listen, &values, &chart).unwrap();
        let port = wt
            .shape
            .render(&wt.port("wt")["containerPort"], &values, &chart)
            .unwrap();
        assert_eq!(listen, format!("0.0.0.0:{port}"), "{name}");
    }

    assert!(
        wt.env()
            .all(|e| !e["name"].as_str().unwrap().starts_with("RALLYPOINT_DEV_")),
        "production relays never use the development identity"
    );
    for container in containers.iter().chain(&job_containers(&shapes)) {
        for name in SECRET_FILES {
            let Some(path) = container.env_value(name) else {
                continue;
            };
            let path = path.as_str().unwrap();
            let volume = volume_of(container, path)
                .unwrap_or_else(|| panic!("{}: {name}={path} is not mounted", container.label()));
            assert!(
                volume["secret"]["secretName"].is_string(),
                "{}: {name} must come from a Secret volume, not {volume}",
                container.label()
            );
        }
    }
    for name in ["RALLYPOINT_TLS_CERT", "RALLYPOINT_TLS_KEY"] {
        assert!(
            wt.env_value(name).is_some(),
            "the WebTransport relay needs {name}"
        );
    }
}

/// Secrets are referenced, never carried: no template makes a Secret, and no
/// value in values.yaml holds one (only names of Secrets and of their keys).
#[test]
fn secrets_are_only_referenced() {
    for shape in shapes() {
        assert_eq!(
            shape.of_kind("Secret").count(),
            0,
            "{} makes a Secret",
            shape.file
        );
    }
    let secretish = Regex::new(r"(?i)password|passwd|secret|token|jwt|private|credential").unwrap();
    let defaults = defaults();
    let mut paths = Vec::new();
    key_paths(&defaults, "", &mut paths);
    for path in paths {
        let key = path.rsplit('.').next().unwrap();
        // Objects (`jwt.secretRef`, `imagePullSecrets: [{name}]`) hold
        // references; so does a `secretName`. Other values hold what they say.
        // Label names hold dots (`app.kubernetes.io/name`): a label map's
        // keys are names, not settings, and are not reachable by dotted path.
        let Some(value) = lookup(&defaults, &path) else {
            continue;
        };
        let holds_references = value.is_object()
            || value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_object));
        if secretish.is_match(key) && key != "secretName" && !holds_references {
            panic!("values.yaml has {path}: a secret belongs in a Secret, named by a secretRef");
        }
    }
}

#[test]
fn images_are_pinned() {
    let shapes = shapes();
    let chart = chart();
    for container in containers(&shapes) {
        for (name, values) in values_documents() {
            let image = container
                .shape
                .render(&container.container["image"], &values, &chart)
                .unwrap();
            let (repository, tag) = image.rsplit_once(':').unwrap();
            let (_, image_name) = repository.rsplit_once('/').unwrap();
            assert_eq!(image_binary(image_name), container.binary, "{image}");
            assert!(
                !tag.is_empty() && tag != "latest",
                "{name}: {image} is not pinned"
            );
        }
    }
    let image = &defaults()["image"];
    assert_eq!(image["registry"], "ghcr.io/rallypoint");
    assert_eq!(image["tag"], "", "by default the tag is the appVersion");
    assert_eq!(chart["appVersion"], "0.1.0");
}

/// The collector and the dashboard run only where `central.enabled`.
#[test]
fn central_parts_are_toggled() {
    let guard =
        Regex::new(r"(?s)^\{\{-\s*if\s+\.Values\.central\.enabled\s*\}\}.*\{\{-\s*end\s*\}\}$")
            .unwrap();
    for file in ["collector.yaml", "dashboard.yaml"] {
        let text = read(&chart_dir().join("templates").join(file));
        let text = COMMENT.replace_all(&text, "");
        assert!(
            guard.is_match(text.trim()),
            "{file} is not wrapped in `if .Values.central.enabled`"
        );
    }
    let central: Vec<_> = region_examples()
        .into_iter()
        .filter(|(_, v)| v["central"]["enabled"] == true)
        .map(|(region, _)| region)
        .collect();
    assert_eq!(central.len(), 1, "exactly one central region: {central:?}");
}

// ---------------------------------------------------------------- the super-cluster

#[test]
fn nats_examples_form_the_super_cluster() {
    let nats = nats_examples();
    let regions: BTreeSet<String> = region_examples().into_iter().map(|(r, _)| r).collect();
    let clusters: BTreeSet<String> = nats.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(clusters, regions, "a NATS example per region example");

    let mut servers = BTreeMap::new();
    let mut prefixes = BTreeSet::new();
    let advertised: BTreeMap<_, _> = nats
        .iter()
        .map(|(region, v)| {
            (
                region.clone(),
                v["config"]["gateway"]["merge"]["advertise"].clone(),
            )
        })
        .collect();
    for (region, values) in &nats {
        let config = &values["config"];
        assert_eq!(config["jetstream"]["enabled"], true, "{region}: JetStream");
        assert_eq!(config["cluster"]["enabled"], true, "{region}: a cluster");
        assert_eq!(config["gateway"]["enabled"], true, "{region}: a gateway");
        // Streams are placed by cluster name = region, and a gateway is named
        // after its cluster.
        assert_eq!(config["cluster"]["merge"]["name"], region.as_str());
        assert_eq!(config["gateway"]["merge"]["name"], region.as_str());
        let mut named = BTreeSet::from([region.clone()]);
        for gateway in config["gateway"]["merge"]["gateways"].as_array().unwrap() {
            let other = gateway["name"].as_str().unwrap().to_owned();
            let url = format!("nats://{}", advertised[&other].as_str().unwrap());
            assert_eq!(
                gateway["url"],
                url.as_str(),
                "{region} dials {other} where it advertises"
            );
            named.insert(other);
        }
        assert_eq!(named, regions, "{region}'s gateways name every region");
        let prefix = config["serverNamePrefix"].as_str().unwrap_or("");
        assert!(
            !prefix.is_empty() && prefixes.insert(prefix),
            "{region}: server names collide"
        );
        servers.insert(
            region.clone(),
            config["cluster"]["replicas"].as_u64().unwrap(),
        );
    }
    assert_eq!(servers["us-east"], 3);
    assert_eq!(servers["singapore"], 2);
    let total: u64 = servers.values().sum();
    assert!(
        total % 2 == 1,
        "the JetStream meta group needs an odd size, has {total}"
    );

    for (region, values) in region_examples() {
        assert_eq!(
            values["region"],
            region.as_str(),
            "{region}.yaml names its region"
        );
        rallypoint_protocol::subjects::validate_region(&region).unwrap();
    }
    // The collector creates each regional stream in its region's cluster and
    // the central one in its own: no more replicas than the cluster has
    // servers, and an odd number (R2 stops when either server does).
    let (central, values) = region_examples()
        .into_iter()
        .find(|(_, v)| v["central"]["enabled"] == true)
        .expect("a central region");
    let collector = &values["collector"];
    let mut streams = vec![(
        "TELEMETRY".to_owned(),
        central.clone(),
        collector["centralReplicas"].as_u64().unwrap(),
    )];
    for stream in collector["regions"].as_array().unwrap() {
        let region = stream["name"].as_str().unwrap().to_owned();
        streams.push((
            format!("the regional stream of {region}"),
            region,
            stream["replicas"].as_u64().unwrap(),
        ));
    }
    let sourced: BTreeSet<String> = streams.iter().skip(1).map(|s| s.1.clone()).collect();
    assert_eq!(sourced, regions, "the collector sources every region");
    for (stream, cluster, replicas) in streams {
        let servers = servers[&cluster];
        assert!(
            replicas <= servers && replicas % 2 == 1,
            "{stream}: R{replicas} on {servers} servers"
        );
    }
}

/// Every region's NATS runs TLS on client ports, routes and gateways (the
/// last two verifying each other), and holds the users and permissions the
/// code and the local stack use — no anonymous user, nothing broader.
#[test]
fn nats_examples_are_secured_like_the_local_stack() {
    use rallypoint_testkit::nats::access::{ACCOUNT, roles};
    let nats = nats_examples();
    let regions: Vec<String> = nats.iter().map(|(r, _)| r.clone()).collect();
    let expected: BTreeSet<String> = roles(&regions)
        .iter()
        .map(|role| role.permissions().to_json().to_string())
        .collect();
    for (region, values) in &nats {
        let config = &values["config"];
        assert_eq!(
            config["nats"]["tls"]["enabled"], true,
            "{region}: client TLS"
        );
        for link in ["cluster", "gateway"] {
            let tls = &config[link]["tls"];
            assert_eq!(tls["enabled"], true, "{region}: {link} TLS");
            assert_eq!(tls["merge"]["verify"], true, "{region}: {link} mutual TLS");
            assert!(tls["merge"]["ca_file"].is_string(), "{region}: {link} CA");
        }
        let merge = &config["merge"];
        assert!(
            merge["no_auth_user"].is_null() && merge["authorization"].is_null(),
            "{region}: nobody is anonymous"
        );
        let accounts = merge["accounts"].as_object().expect("accounts");
        assert_eq!(accounts.len(), 1, "{region}: one account");
        let users = accounts[ACCOUNT]["users"].as_array().expect("users");
        let found: BTreeSet<String> = users
            .iter()
            .map(|user| {
                let key = user["nkey"].as_str().unwrap();
                assert!(
                    key.starts_with('U') && nkeys::KeyPair::from_public_key(key).is_ok(),
                    "{region}: {key} is a user's public NKey"
                );
                user["permissions"].to_string()
            })
            .collect();
        assert_eq!(
            found, expected,
            "{region}: permissions differ from the code's"
        );
    }
}

/// The cert-manager examples issue exactly the Secrets the NATS and
/// rallypoint examples mount, for the names clients reach the servers by:
/// a renamed Secret or a new gateway address must change both sides.
#[test]
fn cert_manager_examples_issue_what_the_charts_mount() {
    let dir = helm_dir().join("examples/cert-manager");
    let mut regions = 0;
    for path in files(&dir, "yaml") {
        let region = stem(&path);
        regions += 1;
        let documents: Vec<Value> = read(&path)
            .split("\n---\n")
            .map(|doc| yaml_serde::from_str(doc).unwrap_or_else(|e| panic!("{region}: {e}")))
            .collect();
        let issuers: BTreeSet<&str> = documents
            .iter()
            .filter(|d| d["kind"] == "ClusterIssuer")
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect();
        let certificates: BTreeMap<&str, &Value> = documents
            .iter()
            .filter(|d| d["kind"] == "Certificate")
            .map(|d| (d["spec"]["secretName"].as_str().unwrap(), &d["spec"]))
            .collect();
        for (secret, spec) in &certificates {
            assert!(
                issuers.contains(spec["issuerRef"]["name"].as_str().unwrap()),
                "{region}: {secret} names an issuer the example does not define"
            );
        }
        let names = |secret: &str| -> (Vec<String>, Vec<String>) {
            let spec = certificates
                .get(secret)
                .unwrap_or_else(|| panic!("{region}: no Certificate writes {secret}"));
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect()
            };
            (strings(&spec["dnsNames"]), strings(&spec["usages"]))
        };

        // NATS: every link's Secret, the client Service's name, the gateway's
        // advertised name; a client certificate too (mutual TLS between servers).
        let nats = yaml(&helm_dir().join(format!("examples/nats-{region}.yaml")));
        for link in ["nats", "cluster", "gateway"] {
            let secret = nats["config"][link]["tls"]["secretName"].as_str().unwrap();
            let (dns, usages) = names(secret);
            assert!(
                usages.contains(&"client auth".to_owned()),
                "{region}: {secret} {usages:?}"
            );
            let gateway = nats["config"]["gateway"]["merge"]["advertise"]
                .as_str()
                .unwrap();
            let gateway = gateway.rsplit_once(':').unwrap().0;
            assert!(
                dns.iter().any(|d| d == gateway),
                "{region}: {secret} lacks {gateway}"
            );
        }
        let ours = merge(
            &defaults(),
            &yaml(&helm_dir().join(format!("examples/{region}.yaml"))),
        );
        for url in ours["nats"]["urls"].as_array().unwrap() {
            let host = url.as_str().unwrap().trim_start_matches("tls://");
            let host = host.rsplit_once(':').unwrap().0;
            let (dns, _) = names("nats-server-tls");
            assert!(
                dns.iter().any(|d| d == host),
                "{region}: nats-server-tls lacks {host}"
            );
        }

        // ClickHouse, where this region runs the collector and dashboard.
        if let Some(url) = ours["clickhouse"]["url"].as_str().filter(|u| !u.is_empty()) {
            let host = url
                .trim_start_matches("https://")
                .split([':', '/'])
                .next()
                .unwrap();
            assert!(url.starts_with("https://"), "{region}: {url}");
            let (dns, usages) = names("clickhouse-server-tls");
            assert!(
                dns.iter().any(|d| d == host),
                "{region}: clickhouse-server-tls lacks {host}"
            );
            assert!(usages.contains(&"server auth".to_owned()));
            assert!(
                ours["clickhouse"]["ca"]["secretName"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            );
        }
    }
    assert!(regions >= 1, "no cert-manager example in {}", dir.display());
}
