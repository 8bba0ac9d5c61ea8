//! HCL and JSON bake files checked against buildx's documented `--print` output
//! (docs/bake-reference.md) and the behaviour it describes.

use serde_json::{Value, json};

use super::*;

fn env(vars: &[(&str, &str)]) -> Env {
    Env::from_map(
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

fn load(files: &[(&str, &str)], vars: &[(&str, &str)]) -> Result<Definition, Error> {
    let env = env(vars);
    let mut def = Definition::default();
    for (f, text) in files {
        load_text(f, text, &env, &mut def)?;
    }
    Ok(def)
}

/// `--print NAMES` as the CLI does it.
fn print(def: &Definition, names: &[&str]) -> Value {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let selected = select(def, &names).unwrap();
    serde_json::to_value(printed(def, &names, &selected)).unwrap()
}

/// "target.inherits": the last of `inherits` wins a conflict; maps merge.
#[test]
fn documented_inherits() {
    let text = r#"
target "app-dev" {
  args = {
    GO_VERSION = "1.20"
    BUILDX_EXPERIMENTAL = 1
  }
  tags = ["docker.io/username/myapp"]
  dockerfile = "app.Dockerfile"
  labels = {
    "org.opencontainers.image.source" = "https://github.com/username/myapp"
  }
}

target "_release" {
  args = {
    BUILDKIT_CONTEXT_KEEP_GIT_DIR = 1
    BUILDX_EXPERIMENTAL = 0
  }
}

target "app-release" {
  inherits = ["app-dev", "_release"]
  platforms = ["linux/amd64", "linux/arm64"]
}
"#;
    let def = load(&[("docker-bake.hcl", text)], &[]).unwrap();
    let want = json!({
        "group": {"default": {"targets": ["app-release"]}},
        "target": {"app-release": {
            "context": ".",
            "dockerfile": "app.Dockerfile",
            "args": {"BUILDKIT_CONTEXT_KEEP_GIT_DIR": "1", "BUILDX_EXPERIMENTAL": "0", "GO_VERSION": "1.20"},
            "labels": {"org.opencontainers.image.source": "https://github.com/username/myapp"},
            "tags": ["docker.io/username/myapp"],
            "platforms": ["linux/amd64", "linux/arm64"]
        }}
    });
    assert_eq!(print(&def, &["app-release"]), want);
}

/// "target.matrix": one target per value, a group named after the block.
#[test]
fn documented_matrix() {
    let text = r#"
target "app" {
  name = "app-${tgt}"
  matrix = {
    tgt = ["foo", "bar"]
  }
  target = tgt
}
"#;
    let def = load(&[("docker-bake.hcl", text)], &[]).unwrap();
    let want = json!({
        "group": {"app": {"targets": ["app-foo", "app-bar"]}, "default": {"targets": ["app"]}},
        "target": {
            "app-bar": {"context": ".", "dockerfile": "Dockerfile", "target": "bar"},
            "app-foo": {"context": ".", "dockerfile": "Dockerfile", "target": "foo"}
        }
    });
    assert_eq!(print(&def, &["app"]), want);
    // Multiple axes, and maps as values.
    let text = r#"
target "app" {
  name = "app-${tgt}-${replace(version, ".", "-")}"
  matrix = {
    tgt = ["foo", "bar"]
    version = ["1.0", "2.0"]
  }
  target = tgt
  args = { VERSION = version }
}
target "item" {
  name = "item-${item.tgt}-${replace(item.version, ".", "-")}"
  matrix = {
    item = [{ tgt = "foo", version = "1.0" }, { tgt = "bar", version = "2.0" }]
  }
  args = { VERSION = item.version }
}
"#;
    let def = load(&[("docker-bake.hcl", text)], &[]).unwrap();
    assert_eq!(
        def.group["app"].targets,
        ["app-foo-1-0", "app-foo-2-0", "app-bar-1-0", "app-bar-2-0"]
    );
    assert_eq!(def.target["app-bar-2-0"].args["VERSION"], "2.0");
    assert_eq!(def.group["item"].targets, ["item-foo-1-0", "item-bar-2-0"]);
    assert_eq!(def.target["item-bar-2-0"].args["VERSION"], "2.0");
}

/// Variables: defaults, the environment, typed CSV and JSON overrides, user functions,
/// built-ins, `timestamp()` fixed by SOURCE_DATE_EPOCH.
#[test]
fn variables_functions_and_env() {
    let text = r#"
variable "TAG" { default = "latest" }
variable "TAGS" {
  default = ["latest"]
  type = list(string)
}
variable "PUSH" { default = false }
variable "N" {
  type = number
  default = 1
}
variable "REPO" { default = "docker.io/username/webapp" }
variable "FULL" { default = "${REPO}:${TAG}" }
function "increment" {
  params = [number]
  result = number + 1
}
function "tagged" {
  params = [repo]
  variadic_params = tags
  result = [for t in tags : "${repo}:${t}"]
}
target "webapp-dev" {
  tags = concat([FULL], [for tag in TAGS : "${REPO}:${tag}"], tagged("r/x", "a", "b"))
  args = {
    buildno = "${increment(123)}"
    n = N * 2
    push = PUSH
    up = upper("abc")
    eq = equal(TAG, "latest")
    ne = notequal(TAG, "latest")
    when = timestamp()
    joined = join(",", sort(keys({ b = 1, a = 2 })))
    fmt = format("%s-%03d", "v", 7)
    local = BAKE_LOCAL_PLATFORM
  }
  no-cache = PUSH
}
"#;
    let def = load(&[("docker-bake.hcl", text)], &[("SOURCE_DATE_EPOCH", "0")]).unwrap();
    let t = &def.target["webapp-dev"];
    assert_eq!(
        t.tags,
        [
            "docker.io/username/webapp:latest",
            "docker.io/username/webapp:latest",
            "r/x:a",
            "r/x:b"
        ]
    );
    let arg = |k: &str| t.args[k].as_str();
    assert_eq!(arg("buildno"), "124");
    assert_eq!(arg("n"), "2");
    assert_eq!(arg("push"), "false");
    assert_eq!(arg("up"), "ABC");
    assert_eq!((arg("eq"), arg("ne")), ("true", "false"));
    assert_eq!(arg("when"), "1970-01-01T00:00:00Z");
    assert_eq!(arg("joined"), "a,b");
    assert_eq!(arg("fmt"), "v-007");
    assert!(arg("local").starts_with("linux/"), "{}", arg("local"));
    assert_eq!(t.no_cache, Some(false));
    // The environment overrides, typed by the default or the declared type.
    let def = load(
        &[("docker-bake.hcl", text)],
        &[
            ("TAG", "dev"),
            ("TAGS", "dev,2"),
            ("PUSH", "true"),
            ("N", "5"),
        ],
    )
    .unwrap();
    let t = &def.target["webapp-dev"];
    assert_eq!(
        t.tags[..3],
        [
            "docker.io/username/webapp:dev",
            "docker.io/username/webapp:dev",
            "docker.io/username/webapp:2"
        ]
    );
    assert_eq!(t.no_cache, Some(true));
    assert_eq!(t.args["n"], "10");
    assert_eq!(t.args["eq"], "false");
    let def = load(&[("docker-bake.hcl", text)], &[("TAGS_JSON", r#"["a,b"]"#)]).unwrap();
    assert_eq!(
        def.target["webapp-dev"].tags[1],
        "docker.io/username/webapp:a,b"
    );
    let vars: Vec<&str> = def.variables.iter().map(|v| v.name.as_str()).collect();
    assert!(vars.contains(&"TAGS") && vars.contains(&"FULL"), "{vars:?}");
    let tags = def.variables.iter().find(|v| v.name == "TAGS").unwrap();
    assert_eq!(tags.type_name, "list(string)");
    // A bad override names the variable.
    let e = load(&[("docker-bake.hcl", text)], &[("N", "many")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("variable N") && e.contains("not a number"),
        "{e}"
    );
}

/// Every target field, as `--print` writes it.
#[test]
fn every_target_field() {
    let text = r#"
group "default" {
  targets = ["all"]
}
target "all" {
  description = "every field"
  context = "app"
  contexts = { base = "docker-image://busybox" }
  dockerfile = "app.Dockerfile"
  args = { A = "1", UNSET = null }
  annotations = ["index:org.opencontainers.image.title=app"]
  cache-from = ["user/app:cache", "type=local,src=/tmp/c"]
  cache-to = [{ type = "local", dest = "/tmp/c", mode = "max" }]
  labels = { team = "core" }
  tags = ["reg/app:1"]
  target = "final"
  secret = ["id=npm,src=./npmrc", "type=env,id=tok,env=TOKEN"]
  ssh = ["default", "key=/k1,/k2"]
  platforms = ["linux/amd64", "linux/arm64"]
  output = ["type=registry", { type = "local", dest = "out" }]
  pull = true
  no-cache = false
}
"#;
    let def = load(&[("docker-bake.hcl", text)], &[]).unwrap();
    let want = json!({
        "description": "every field",
        "context": "app",
        "contexts": {"base": "docker-image://busybox"},
        "dockerfile": "app.Dockerfile",
        "args": {"A": "1"},
        "annotations": ["index:org.opencontainers.image.title=app"],
        "cache-from": [{"type": "registry", "ref": "user/app:cache"}, {"type": "local", "src": "/tmp/c"}],
        "cache-to": [{"type": "local", "dest": "/tmp/c", "mode": "max"}],
        "labels": {"team": "core"},
        "tags": ["reg/app:1"],
        "target": "final",
        "secret": [{"id": "npm", "src": "./npmrc"}, {"type": "env", "id": "tok", "env": "TOKEN"}],
        "ssh": [{"id": "default"}, {"id": "key", "paths": "/k1,/k2"}],
        "platforms": ["linux/amd64", "linux/arm64"],
        "output": [{"type": "registry"}, {"type": "local", "dest": "out"}],
        "pull": true,
        "no-cache": false
    });
    let p = print(&def, &[]);
    assert_eq!(p["target"]["all"], want);
    assert_eq!(p["group"], json!({"default": {"targets": ["all"]}}));
}

/// The JSON form of the documented example, and a compose file overridden by HCL
/// (`tags` replaced, `labels` merged), as "File format" shows.
#[test]
fn json_files_and_merging() {
    let text = r#"{
  "variable": {"TAG": {"default": "latest"}},
  "group": {"default": {"targets": ["webapp"]}},
  "target": {"webapp": {"dockerfile": "Dockerfile", "tags": ["docker.io/username/webapp:${TAG}"]}}
}"#;
    let def = load(&[("docker-bake.json", text)], &[("TAG", "v2")]).unwrap();
    assert_eq!(
        print(&def, &[]),
        json!({
            "group": {"default": {"targets": ["webapp"]}},
            "target": {"webapp": {"context": ".", "dockerfile": "Dockerfile", "tags": ["docker.io/username/webapp:v2"]}}
        })
    );
    let compose = "services:\n  webapp:\n    build:\n      context: .\n      tags:\n        - bar\n      labels:\n        com.example.foo: \"foo\"\n        com.example.name: \"Alice\"\n";
    let hcl = "target \"webapp\" {\n  tags = [\"foo\"]\n  labels = {\n    \"com.example.bar\" = \"bar\"\n    \"com.example.name\" = \"Bob\"\n  }\n}\n";
    let def = load(&[("compose.yaml", compose), ("docker-bake.hcl", hcl)], &[]).unwrap();
    assert_eq!(
        print(&def, &["webapp"])["target"]["webapp"],
        json!({
            "context": ".", "dockerfile": "Dockerfile", "tags": ["foo"],
            "labels": {"com.example.foo": "foo", "com.example.bar": "bar", "com.example.name": "Bob"}
        })
    );
}

/// Errors name the file, line and column, and the key.
#[test]
fn errors_have_positions() {
    let e = |text: &str| load(&[("b.hcl", text)], &[]).unwrap_err().to_string();
    assert_eq!(
        e("target \"a\" {\n  colour = \"red\"\n}\n"),
        "b.hcl:2:3: target.a.colour: unsupported argument: an argument named \"colour\" is not expected here"
    );
    assert_eq!(
        e("target \"a\" {\n  tags = \"x\"\n}\n"),
        "b.hcl:2:3: target.a.tags: expected a list of strings, found string"
    );
    let m = e("target \"a\" {\n  dockerfile-inline = \"FROM ${BASE_IMAGE}\"\n}\n");
    assert!(
        m.starts_with(
            "b.hcl:2:3: target.a.dockerfile-inline: there is no variable named \"BASE_IMAGE\""
        ),
        "{m}"
    );
    let m = e("target \"a\" {\n  tags = [\n");
    assert!(m.starts_with("b.hcl:2:12: "), "{m}");
    let m = e("thing \"a\" {}\n");
    assert!(m.starts_with("b.hcl:1:1: thing: unknown block type"), "{m}");
    let m = e("variable \"A\" { default = B }\nvariable \"B\" { default = A }\n");
    assert!(m.contains("variable cycle"), "{m}");
    let m = e("target \"a\" { inherits = [\"nope\"] }\n");
    assert!(
        m.starts_with("b.hcl:1:1: target.a.inherits: failed to find target \"nope\""),
        "{m}"
    );
    let m = e("target \"a\" { network = \"host\" }\n");
    assert!(
        m.contains("target.a.network: not supported by rbuild yet"),
        "{m}"
    );
    let m = load(
        &[(
            "b.json",
            "{\n  \"target\": {\n    \"a\": {\"tags\": 1}\n  }\n}",
        )],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        m.starts_with("b.json:3:11: target.a.tags: expected a list of strings"),
        "{m}"
    );
    // No default group and no target "default": buildx's error.
    let def = load(&[("b.hcl", "target \"a\" {}\n")], &[]).unwrap();
    assert!(matches!(select(&def, &[]), Err(Error::UnknownTarget(n)) if n == "default"));
}

const EXAMPLE_HCL: &str = include_str!("../../../examples/docker-bake.hcl");
const EXAMPLE_COMPOSE: &str = include_str!("../../../examples/docker-compose.core-services.yml");

/// The examples' bake file builds what their compose file builds: the same targets,
/// field for field, with the same environment overrides.
#[test]
fn example_hcl_matches_compose_file() {
    for vars in [
        &[][..],
        &[("REGISTRY", "127.0.0.1:5000/bake"), ("TAG", "v2")][..],
    ] {
        let hcl = load(&[("examples/docker-bake.hcl", EXAMPLE_HCL)], vars).unwrap();
        let compose = load(
            &[("examples/docker-compose.core-services.yml", EXAMPLE_COMPOSE)],
            vars,
        )
        .unwrap();
        let h = print(&hcl, &[]);
        let c = print(&compose, &[]);
        assert_eq!(h["target"], c["target"], "{vars:?}");
        assert_eq!(
            h["group"]["services"],
            json!({"targets": ["auth-service", "user-service"]})
        );
    }
}
