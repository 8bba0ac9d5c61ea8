//! The resolved definitions checked against written expectations: buildx's documented
//! `--print` output for its compose example, and the repository's example compose file.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

fn load(file: &str, text: &str, env: &[(&str, &str)]) -> Result<Definition, Error> {
    let env = Env::from_map(
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let mut def = Definition::default();
    load_text(file, text, &env, &mut def)?;
    Ok(def)
}

fn print(def: &Definition) -> Value {
    serde_json::to_value(def).unwrap()
}

/// docs.docker.com, "Building with Bake from a Compose file": the file and the `--print`
/// output shown there.
#[test]
fn buildx_documented_compose_example() {
    let text = r#"
services:
  webapp-dev:
    build: &build-dev
      dockerfile: Dockerfile.webapp
      tags:
        - docker.io/username/webapp:latest
      cache_from:
        - docker.io/username/webapp:cache
      cache_to:
        - docker.io/username/webapp:cache

  webapp-release:
    build:
      <<: *build-dev
      x-bake:
        platforms:
          - linux/amd64
          - linux/arm64

  db:
    image: docker.io/username/db
    build:
      dockerfile: Dockerfile.db
"#;
    let def = load("compose.yaml", text, &[]).unwrap();
    let cache = json!([{"ref": "docker.io/username/webapp:cache", "type": "registry"}]);
    let want = json!({
        "group": {"default": {"targets": ["db", "webapp-dev", "webapp-release"]}},
        "target": {
            "db": {"context": ".", "dockerfile": "Dockerfile.db", "tags": ["docker.io/username/db"]},
            "webapp-dev": {
                "context": ".", "dockerfile": "Dockerfile.webapp",
                "tags": ["docker.io/username/webapp:latest"],
                "cache-from": cache, "cache-to": cache
            },
            "webapp-release": {
                "context": ".", "dockerfile": "Dockerfile.webapp",
                "tags": ["docker.io/username/webapp:latest"],
                "cache-from": cache, "cache-to": cache,
                "platforms": ["linux/amd64", "linux/arm64"]
            }
        }
    });
    assert_eq!(print(&def), want);
}

const EXAMPLE: &str = include_str!("../../../examples/docker-compose.core-services.yml");

/// The examples' compose file: `${VAR:-default}` defaults, `image:` as the tag, the
/// context joined with the file's directory, services without `build:` left out.
#[test]
fn example_compose_file() {
    let def = load("examples/docker-compose.core-services.yml", EXAMPLE, &[]).unwrap();
    let target = |svc: &str| {
        json!({
            "context": format!("examples/{svc}"),
            "dockerfile": "Dockerfile",
            "args": {"BASE_IMAGE": "127.0.0.1:5000/library/node:20-slim"},
            "tags": [format!("127.0.0.1:5000/examples/{svc}:latest")]
        })
    };
    let want = json!({
        "group": {"default": {"targets": ["auth-service", "user-service"]}},
        "target": {"auth-service": target("auth-service"), "user-service": target("user-service")}
    });
    assert_eq!(print(&def), want);
    // The environment overrides the defaults.
    let def = load(
        "examples/docker-compose.core-services.yml",
        EXAMPLE,
        &[("REGISTRY", "127.0.0.1:5000/bake"), ("TAG", "v2")],
    )
    .unwrap();
    assert_eq!(
        def.target["user-service"].tags,
        ["127.0.0.1:5000/bake/examples/user-service:v2"]
    );
}

/// Every compose build field the issue lists, and x-bake.
#[test]
fn compose_fields() {
    let text = r#"
secrets:
  npm:
    file: ./npmrc
  token:
    environment: TOKEN
services:
  app:
    image: reg/app:1
    build:
      context: app
      dockerfile_inline: "FROM scratch\n"
      args: [A=1, FROM_ENV, MISSING]
      target: final
      tags: [reg/app:latest]
      platforms: [linux/amd64]
      labels: {team: core}
      cache_from: ["type=local,src=/tmp/c"]
      cache_to: ["type=local,dest=/tmp/c,mode=max"]
      secrets: [npm, {source: token, target: tok}]
      additional_contexts: {base: "docker-image://busybox"}
      no_cache: true
      pull: false
      x-bake:
        output: [type=registry]
        ssh: [default]
        annotations: ["index:org.opencontainers.image.title=app"]
"#;
    let def = load("dir/compose.yaml", text, &[("FROM_ENV", "e")]).unwrap();
    let want = json!({
        "context": "dir/app",
        "contexts": {"base": "docker-image://busybox"},
        "dockerfile-inline": "FROM scratch\n",
        "args": {"A": "1", "FROM_ENV": "e"},
        "annotations": ["index:org.opencontainers.image.title=app"],
        "cache-from": [{"type": "local", "src": "/tmp/c"}],
        "cache-to": [{"type": "local", "dest": "/tmp/c", "mode": "max"}],
        "labels": {"team": "core"},
        "tags": ["reg/app:1", "reg/app:latest"],
        "target": "final",
        "secret": [{"id": "npm", "src": "dir/npmrc"}, {"id": "tok", "env": "TOKEN"}],
        "ssh": [{"id": "default"}],
        "platforms": ["linux/amd64"],
        "output": [{"type": "registry"}],
        "pull": false,
        "no-cache": true
    });
    assert_eq!(print(&def)["target"]["app"], want);
}

#[test]
fn interpolation() {
    let env = Env::from_map(BTreeMap::from([
        ("SET".to_owned(), "v".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ]));
    let i = |s: &str| compose::interpolate(s, &env);
    assert_eq!(i("${SET}-$SET-$$SET").unwrap(), "v-v-$SET");
    assert_eq!(i("${UNSET:-d}|${EMPTY:-d}|${EMPTY-d}").unwrap(), "d|d|");
    assert_eq!(i("${UNSET:-${SET}x}").unwrap(), "vx");
    assert_eq!(i("${SET:+alt}${UNSET:+alt}").unwrap(), "alt");
    assert!(i("${UNSET:?need it}").unwrap_err().contains("need it"));
    assert!(i("${OPEN").is_err());
}

/// Errors name the file, line and column, and the key.
#[test]
fn errors_have_positions() {
    let text = "services:\n  app:\n    build:\n      context: .\n      colour: red\n";
    let e = load("c.yml", text, &[]).unwrap_err().to_string();
    assert_eq!(
        e,
        "c.yml:5:15: services.app.build.colour: unknown build key"
    );
    let text = "services:\n  app:\n    build:\n      tags: {a: b}\n";
    let e = load("c.yml", text, &[]).unwrap_err().to_string();
    assert!(
        e.starts_with("c.yml:4:13: services.app.build.tags: expected a list"),
        "{e}"
    );
    let e = load(
        "c.yml",
        "services:\n  app:\n    build:\n      args:\n        A: ${X:?set X}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("c.yml:5:12: services.app.build.args.A: required variable X"),
        "{e}"
    );
    let e = load("c.yml", "services: [\n", &[]).unwrap_err().to_string();
    assert!(e.starts_with("c.yml:"), "{e}");
}

#[test]
fn select_and_set() {
    let mut def = load("examples/docker-compose.core-services.yml", EXAMPLE, &[]).unwrap();
    assert_eq!(select(&def, &[]).unwrap(), ["auth-service", "user-service"]);
    assert_eq!(
        select(&def, &["user-service".into()]).unwrap(),
        ["user-service"]
    );
    assert!(matches!(
        select(&def, &["nope".into()]),
        Err(Error::UnknownTarget(_))
    ));
    let all = select(&def, &[]).unwrap();
    apply_set(
        &mut def,
        &all,
        &[
            "*.tags=r/x:1".into(),
            "auth-*.tags=r/x:2".into(),
            "user-service.args.EXTRA=1".into(),
            "*.platform=linux/amd64,linux/arm64".into(),
            "*.no-cache=true".into(),
        ],
    )
    .unwrap();
    assert_eq!(def.target["auth-service"].tags, ["r/x:1", "r/x:2"]);
    assert_eq!(def.target["user-service"].tags, ["r/x:1"]);
    assert_eq!(def.target["user-service"].args["EXTRA"], "1");
    assert_eq!(def.target["auth-service"].platforms.len(), 2);
    assert_eq!(def.target["auth-service"].no_cache, Some(true));
    assert!(apply_set(&mut def, &all, &["*.colour=red".into()]).is_err());
    assert!(apply_set(&mut def, &all, &["zzz.tags=a".into()]).is_err());
}
