#!/usr/bin/env python3
"""Differential test of Dockerfile semantics against the reference BuildKit.

Each case under scripts/difftest/cases/ is built by the reference BuildKit (buildkitd v0.32.2,
Dockerfile frontend 1.26, driven by buildctl) and by rbuild, both to an OCI image layout
(`--output type=oci`), and the two layouts are compared at the OCI level, per platform:

  index      index.json's entries: media type, platform, annotations (image names; the
             creation time only as present, unless `compare-mtimes`)
  manifest   the media types of the manifest and of each layer, the layers' annotations
             (e.g. buildkit/rewritten-timestamp), the number of layers
  config     every field of the image config's `config` object, architecture, os, variant,
             and the history pattern: one line per entry with empty_layer, created_by, comment
  layers     for each layer whose diff ID differs between the two: every tar entry with its
             type, mode, owner, size, sha256 of the content, link target, device numbers,
             xattrs (whiteouts are entries like any other); mtimes only where the case holds a
             `compare-mtimes` file (a SOURCE_DATE_EPOCH case). A layer with the same diff ID in
             both is byte-identical and printed as such.
  attestations  per attestation manifest: its platform's image, artifact type, layers with
             their media types and annotations, and each in-toto statement flattened to one
             `path = value` line per leaf. Masked: the subject and reference digests (shown as
             whether they name the tool's own image), the invocation id and start/finish
             times, the LLB-only parts of mode=max provenance (`llbDefinition`,
             `digestMapping` left out: rbuild has no LLB; its steps are in LLB's op shape,
             not its digests), the step ids keying `buildkit_metadata.layers` and
             `source.locations` (their values are compared as a sorted list), and layer
             descriptors there (named by their place in the image: mtimes and compressors differ).

A case is a directory holding a Dockerfile and its context, and optionally:
  args            build flags on one line, buildx spelling: --build-arg K=V, --target T,
                  --platform P[,P], --secret id=ID,src=FILE (FILE relative to the case),
                  --label K=V, --no-cache, -f NAME (a Dockerfile of another name in the case),
                  --provenance V (buildctl `--opt attest:provenance=V`; the attestation
                  manifests are then compared, see below), --ssh ID=KEYFILE (a private key
                  of the case, forwarded as an agent), --cache-to V / --cache-from V (buildctl
                  --export-cache / --import-cache; `{CACHE}` in V is a registry ref and
                  `{CACHEDIR}` a directory, both of the case and tool), --fresh-cache-dir
                  (rbuild only: an empty --cache-dir, so an imported cache is what it reuses),
                  --shm-size BYTES, --ulimit NAME=SOFT:HARD, --cgroup-parent P,
                  --build-context NAME=docker-image://REF or NAME=DIR (a directory of the
                  case; buildctl: --local NAME=DIR --opt context:NAME=local:NAME)
  output-opts     extra attributes for both OCI outputs, e.g. `rewrite-timestamp=true`
  compare-mtimes  also compare the mtimes of layer entries and the config's created times
  call            a build method instead of an image (`outline`, `targets`): both tools print
                  its text result (rbuild `--call METHOD`, buildctl `--opt
                  requestid=frontend.METHOD`), and the two texts are compared line by line
  expect-fail     both tools must fail; line 1 is a Python regex that rbuild's output must
                  match (say, the `Dockerfile:N` of the failing line); line 2, if present, one
                  that BuildKit's output must match
  setup           images the case builds on, built first by each tool and pushed: one per line,
                  `NAME DIR [flags]` (DIR a directory of the case with its own Dockerfile, the
                  flags as in args); each tool then builds the case with --build-arg
                  NAME=<its own image>, so a Dockerfile can say `ARG NAME` / `FROM $NAME`
  rebuild         the case is built twice by each tool: line 1 holds flags added to the first
                  build, line 2 the flags of the second (args syntax; args apply to both),
                  line 3 `same` or `differs`: whether each tool's second image must have the
                  same layers (diff IDs) as its first (or one such word per layer, for every
                  platform), or `identical`: the same image manifests (the image ID), e.g. a RUN writing random data reused
                  from an imported cache, or run again under --no-cache. The second builds are
                  the ones compared.
  output          `local[,ATTR=V...]`: both tools write a type=local output instead, and the
                  two trees are compared (type, mode, size, content of every entry; the
                  attestation files, provenance*.json and sbom*.spdx.json, as statements)
  stdin-tar       rbuild gets the context as a tar on its standard input (`rbuild build -`);
                  BuildKit the directory (buildctl cannot upload a tar context)
  fixed-mtimes    every file of the context copy gets the mtime 2024-01-01T00:00:00Z (for a
                  case comparing mtimes a COPY keeps: BuildKit caches a COPY by content, so
                  another checkout's mtime would otherwise come back)
  step-names      also compare the step names both print in plain progress (`[stage i/n]
                  INSTRUCTION`, FROM lines left out: BuildKit names the resolved digest there)
  sockets         context paths (one per line) made unix sockets (mode 0600) in the context
                  copy both tools build from
  random          paths (one per line) whose content is random: their size and digest are
                  left out of the listings (the rebuild check still sees them)
  port-of         the BuildKit integration test(s) this case checks the behaviour of, one per
                  line: `dockerfile_copy_test.go testCopyChown` (frontend/dockerfile/ at
                  dockerfile/1.26.0); the suite counts them
  expect-fail-rbuild, expect-fail-buildkit
                  only that tool fails (line 1: a regex its output must match), the other
                  must build; needs a known-diff with the reason
  known-diff      why rbuild deliberately differs from BuildKit here (first line: a summary)
  expected-diff   the changed lines that difference makes (`diff -U0` of BuildKit's listing
                  against rbuild's, without hunk headers); any other difference fails the case

While the suite runs, it serves scripts/difftest/http/ on http://127.0.0.1:18080/ (for ADD of
URLs; without Last-Modified under no-last-modified/) and the repositories made from scripts/difftest/git/NAME/ on git://127.0.0.1:19418/NAME
(for ADD of git sources; see git/README.md).

Prints one line per case (`same`, `known`, `fails` for an expected failure, `DIFF`, `FAIL`)
then a summary; exits 1 when a case differs without being known or fails unexpectedly.
"""

import argparse
import concurrent.futures
import difflib
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CASES = os.path.join(HERE, "cases")
BUILDCTL = os.environ.get("BUILDCTL", "/var/tmp/reference-buildkit/bin/buildctl")
BUILDKIT_ADDR = os.environ.get("BUILDKIT_ADDR", "unix:///run/reference-buildkitd.sock")
REGISTRY = "127.0.0.1:5000"
HTTP_PORT = 18080
GIT_PORT = 19418
CASE_FILES = {"args", "output-opts", "compare-mtimes", "call", "setup", "expect-fail", "known-diff", "expected-diff",
              "rebuild", "random", "sockets", "fixed-mtimes", "step-names", "output", "stdin-tar",
              "port-of", "expect-fail-rbuild", "expect-fail-buildkit"}


# ----------------------------------------------------------------------------- arguments


class CaseError(Exception):
    pass


def translate_args(case_dir, words):
    """buildx-style flags -> (buildctl flags, rbuild flags)."""
    bk, rb = [], []
    it = iter(words)
    for w in it:
        if "=" in w and w.startswith("--"):
            flag, val = w.split("=", 1)
        else:
            flag = w
            val = None
        def value():
            if val is not None:
                return val
            try:
                return next(it)
            except StopIteration:
                raise CaseError(f"args: {flag} needs a value")
        if flag == "--build-arg":
            v = value()
            bk += ["--opt", f"build-arg:{v}"]
            rb += ["--build-arg", v]
        elif flag == "--target":
            v = value()
            bk += ["--opt", f"target={v}"]
            rb += ["--target", v]
        elif flag == "--platform":
            v = value()
            bk += ["--opt", f"platform={v}"]
            rb += ["--platform", v]
        elif flag in ("-f", "--file"):
            v = value()
            bk += ["--opt", f"filename={v}"]
            rb += ["-f", os.path.join(case_dir, v)]
        elif flag == "--secret":
            v = value()
            fields = dict(f.split("=", 1) for f in v.split(","))
            if "src" in fields:
                fields["src"] = os.path.join(case_dir, fields["src"])
            spec = ",".join(f"{k}={x}" for k, x in fields.items())
            bk += ["--secret", spec]
            rb += ["--secret", spec]
        elif flag == "--label":
            v = value()
            bk += ["--opt", f"label:{v}"]
            rb += ["--label", v]
        elif flag == "--no-cache":
            bk += ["--no-cache"]
            rb += ["--no-cache"]
        elif flag in ("--cache-to", "--cache-from"):
            # {CACHE} in the value: a registry ref of the case and tool; {CACHEDIR}: a
            # directory of the case's run and tool (both filled in by run_case).
            v = value()
            bk += ["--export-cache" if flag == "--cache-to" else "--import-cache", v]
            rb += [flag, v]
        elif flag == "--no-cache-filter":
            v = value()
            bk += ["--opt", f"no-cache={v}"]
            rb += ["--no-cache-filter", v]
        elif flag == "--fresh-cache-dir":
            # rbuild builds with an empty cache directory of its own (BuildKit: no change,
            # its daemon's cache cannot be emptied for one case).
            rb += ["--cache-dir", "{FRESH}"]
        elif flag == "--build-context":
            # NAME=docker-image://REF, or NAME=DIR (a directory of the case: buildctl
            # uploads it as a local and names it with context:NAME=local:NAME).
            v = value()
            name, _, src = v.partition("=")
            if src.startswith("docker-image://"):
                bk += ["--opt", f"context:{name}={src}"]
                rb += ["--build-context", v]
            else:
                path = os.path.join(case_dir, src)
                bk += ["--local", f"{name}={path}", "--opt", f"context:{name}=local:{name}"]
                rb += ["--build-context", f"{name}={path}"]
        elif flag == "--shm-size":
            v = value()
            bk += ["--opt", f"shm-size={v}"]
            rb += ["--shm-size", v]
        elif flag == "--ulimit":
            v = value()
            bk += ["--opt", f"ulimit={v}"]
            rb += ["--ulimit", v]
        elif flag == "--cgroup-parent":
            v = value()
            bk += ["--opt", f"cgroup-parent={v}"]
            rb += ["--cgroup-parent", v]
        elif flag == "--provenance":
            v = value()
            bk += ["--opt", f"attest:provenance={v}"]
            rb += [f"--provenance={v}"]
        elif flag == "--ssh":
            # ID=KEYFILE (relative to the case) or ID alone: an agent with that key.
            v = value()
            sid, _, keys = v.partition("=")
            if keys:
                keys = ",".join(os.path.join(case_dir, k) for k in keys.split(","))
            spec = f"{sid}={keys}" if keys else sid
            bk += ["--ssh", spec]
            rb += ["--ssh", spec]
        else:
            raise CaseError(f"args: flag {flag} is not known to the diff suite")
    return bk, rb


# ----------------------------------------------------------------------------- OCI listing


def read_layout(path):
    """An OCI layout tar -> {name: bytes} of its blobs and index.json."""
    files = {}
    with tarfile.open(path) as t:
        for m in t:
            if m.isreg():
                files[m.name.lstrip("./")] = t.extractfile(m).read()
    return files


def blob(files, digest):
    algo, hexd = digest.split(":", 1)
    data = files.get(f"blobs/{algo}/{hexd}")
    if data is None:
        raise CaseError(f"layout lacks blob {digest}")
    return data


def images_of(files):
    """[(platform, manifest, config)] of every image in the layout, attestations left out."""
    out = []

    def walk(desc, dplat=None):
        doc = json.loads(blob(files, desc["digest"]))
        mt = doc.get("mediaType") or desc.get("mediaType")
        if "manifests" in doc:
            for d in doc["manifests"]:
                ann = d.get("annotations") or {}
                if ann.get("vnd.docker.reference.type") == "attestation-manifest":
                    continue
                walk(d, d.get("platform"))
        else:
            cfg = json.loads(blob(files, doc["config"]["digest"]))
            p = f"{cfg.get('os')}/{cfg.get('architecture')}"
            if cfg.get("variant"):
                p += "/" + cfg["variant"]
            out.append((p, doc, cfg, mt, dplat))

    index = json.loads(files["index.json"])
    for d in index.get("manifests", []):
        walk(d)
    return sorted(out, key=lambda x: x[0])


def decompress(data):
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=True).stdout
    return data


TYPES = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l",
         tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c", tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p"}


def layer_entries(data, mtimes, random=frozenset()):
    rows = []
    with tarfile.open(fileobj=io.BytesIO(decompress(data)), mode="r:") as t:
        for m in t:
            name = "/" + m.name.lstrip("./").rstrip("/")
            if name == "/":
                name = "/."
            kind = TYPES.get(m.type, m.type.decode(errors="replace"))
            row = [name, kind, f"{m.mode & 0o7777:04o}", f"{m.uid}:{m.gid}"]
            if m.uname or m.gname:
                row.append(f"names={m.uname}:{m.gname}")
            if m.isreg() and name in random:
                row.append("(random content)")
            elif m.isreg():
                row += [str(m.size), hashlib.sha256(t.extractfile(m).read()).hexdigest()[:16]]
            if m.issym() or m.islnk():
                row.append("-> " + m.linkname)
            if m.ischr() or m.isblk():
                row.append(f"dev={m.devmajor},{m.devminor}")
            for k in sorted(m.pax_headers):
                if k.startswith("SCHILY.xattr."):
                    v = m.pax_headers[k].encode("utf-8", "surrogateescape")
                    row.append(f"xattr {k[13:]}={hashlib.sha256(v).hexdigest()[:8]}")
            if mtimes:
                row.append(f"mtime={int(m.mtime)}")
            rows.append(" ".join(row))
    return sorted(rows)


def listing(files, other_diff_ids, mtimes, random=frozenset()):
    """Listing lines of a layout. other_diff_ids: {platform: [diff IDs]} of the other tool."""
    lines = []
    # index.json's entries: what each names, its platform; the creation time only as set.
    for i, d in enumerate(json.loads(files["index.json"]).get("manifests", [])):
        s = f"index.json {i} {d.get('mediaType')}"
        if d.get("platform"):
            s += f" platform={json.dumps(d['platform'], sort_keys=True)}"
        for k, v in sorted((d.get("annotations") or {}).items()):
            if k == "org.opencontainers.image.created" and not mtimes:
                v = "(set)"
            s += f" {k}={v}"
        lines.append(s)
    for platform, manifest, cfg, mt, dplat in images_of(files):
        pre = f"[{platform}]"
        lines.append(f"{pre} manifest {mt} layers={len(manifest.get('layers') or [])}")
        if dplat:
            lines.append(f"{pre} index platform {json.dumps(dplat, sort_keys=True)}")
        c = cfg.get("config") or {}
        for k in sorted(c):
            v = c[k]
            if v in ("", [], {}, None):
                continue
            lines.append(f"{pre} config {k} = {json.dumps(v, sort_keys=True)}")
        for k in ("architecture", "os", "variant", "os.version", "os.features"):
            if cfg.get(k):
                lines.append(f"{pre} {k} = {json.dumps(cfg[k])}")
        if mtimes and cfg.get("created"):
            lines.append(f"{pre} created = {cfg['created']}")
        for i, h in enumerate(cfg.get("history") or []):
            s = f"{pre} history {'empty ' if h.get('empty_layer') else 'layer '}{h.get('created_by', '')}"
            if h.get("comment"):
                s += f"  # {h['comment']}"
            if mtimes and h.get("created"):
                s += f"  @{h['created']}"
            lines.append(s)
        diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
        theirs = other_diff_ids.get(platform, [])
        for i, ld in enumerate(manifest.get("layers") or []):
            lines.append(f"{pre} layer {i} {ld.get('mediaType')}")
            for k, v in sorted((ld.get("annotations") or {}).items()):
                lines.append(f"{pre} layer {i} annotation {k}={v}")
            if i < len(diff_ids) and i < len(theirs) and diff_ids[i] == theirs[i]:
                lines.append(f"{pre} layer {i} identical")
                continue
            for row in layer_entries(blob(files, ld["digest"]), mtimes, random):
                lines.append(f"{pre} layer {i} {row}")
    return lines + attestation_lines(files)


def image_manifest_digests(files):
    """{manifest digest: platform} of the layout's images."""
    out = {}

    def walk(desc):
        doc = json.loads(blob(files, desc["digest"]))
        if "manifests" in doc:
            for d in doc["manifests"]:
                walk(d)
        elif "config" in doc:
            cfg = json.loads(blob(files, doc["config"]["digest"]))
            if cfg.get("os") and cfg.get("os") != "unknown":
                p = f"{cfg.get('os')}/{cfg.get('architecture')}"
                if cfg.get("variant"):
                    p += "/" + cfg["variant"]
                out[desc["digest"]] = p

    for d in json.loads(files["index.json"]).get("manifests", []):
        walk(d)
    return out


LLB_ONLY = ("llbDefinition", "digestMapping")


def normalize_statement(st, own, layer_names):
    """An in-toto statement with what cannot be equal between two builders masked.
    own: the tool's image manifest digests; layer_names: {compressed layer digest: name}."""
    def layer(d):
        # A layer by its place in the image: compressed digests differ between compressors.
        return {"layer": layer_names.get(d.get("digest"), "(not in the image)"),
                "mediaType": d.get("mediaType")}

    def mask(v, path):
        key = path[-1] if path else ""
        if key in ("invocationId", "startedOn", "finishedOn"):
            return "(set)" if v else v
        if path[-2:] == ["buildkit_metadata", "layers"] and isinstance(v, dict):
            return sorted(json.dumps([[layer(d) for d in chain] for chain in x], sort_keys=True)
                          for x in v.values())
        if path[-2:] == ["source", "locations"] and isinstance(v, dict):
            return sorted(json.dumps(x, sort_keys=True) for x in v.values())
        if isinstance(v, dict):
            return {k: mask(x, path + [k]) for k, x in v.items() if k not in LLB_ONLY}
        if isinstance(v, list):
            return [mask(x, path + [str(i)]) for i, x in enumerate(v)]
        return v
    st = mask(st, [])
    for sub in st.get("subject") or []:
        for algo, d in (sub.get("digest") or {}).items():
            sub["digest"][algo] = "(this image)" if f"{algo}:{d}" in own else "(another)"
    return st


def flatten(v, prefix, out):
    if isinstance(v, dict) and v:
        for k in sorted(v):
            flatten(v[k], f"{prefix}.{k}", out)
    elif isinstance(v, list) and v and not all(isinstance(x, str) for x in v):
        for i, x in enumerate(v):
            flatten(x, f"{prefix}[{i}]", out)
    else:
        out.append(f"{prefix} = {json.dumps(v, sort_keys=True)}")


def attestation_lines(files):
    """Listing lines of the layout's attestation manifests (see the module doc)."""
    images = image_manifest_digests(files)
    layer_names = {}
    for platform, manifest, cfg, _, _ in images_of(files):
        for i, ld in enumerate(manifest.get("layers") or []):
            layer_names.setdefault(ld["digest"], f"{platform} layer {i}")
    lines = []

    def walk(doc):
        for d in doc.get("manifests") or []:
            ann = d.get("annotations") or {}
            if ann.get("vnd.docker.reference.type") == "attestation-manifest":
                ref = ann.get("vnd.docker.reference.digest", "")
                pre = f"[attestation of {images.get(ref, 'another manifest')}]"
                att = json.loads(blob(files, d["digest"]))
                lines.append(f"{pre} manifest {att.get('mediaType')} artifactType={att.get('artifactType')} "
                             f"platform={json.dumps(d.get('platform'), sort_keys=True)} "
                             f"layers={len(att.get('layers') or [])}")
                for i, ld in enumerate(att.get("layers") or []):
                    lines.append(f"{pre} layer {i} {ld.get('mediaType')}")
                    for k, v in sorted((ld.get("annotations") or {}).items()):
                        lines.append(f"{pre} layer {i} annotation {k}={v}")
                    if ld.get("mediaType") == "application/vnd.in-toto+json":
                        st = normalize_statement(json.loads(blob(files, ld["digest"])), images, layer_names)
                        out = []
                        flatten(st, "", out)
                        lines.extend(f"{pre} layer {i} {l.lstrip('.')}" for l in out)
            elif d.get("mediaType", "").endswith(("index.v1+json", "manifest.list.v2+json")):
                walk(json.loads(blob(files, d["digest"])))

    walk(json.loads(files["index.json"]))
    return lines


def local_listing(root):
    """Listing lines of a type=local output directory."""
    lines = []
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        for n in sorted(dirs + names):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            mode = f"{st.st_mode & 0o7777:04o}"
            if os.path.islink(p):
                lines.append(f"{rel} l {mode} -> {os.readlink(p)}")
            elif os.path.isdir(p):
                lines.append(f"{rel} d {mode}")
            elif re.fullmatch(r"(provenance|sbom)(\..+)?\.json", n):
                lines.append(f"{rel} f {mode} (attestation)")
                out = []
                flatten(normalize_statement(json.load(open(p)), {}, {}), "", out)
                lines += [f"{rel} {l.lstrip('.')}" for l in out]
            else:
                data = open(p, "rb").read()
                lines.append(f"{rel} f {mode} {len(data)} {hashlib.sha256(data).hexdigest()[:16]}")
    return lines


def diff_ids_of(files):
    return {p: (cfg.get("rootfs") or {}).get("diff_ids") or [] for p, _, cfg, _, _ in images_of(files)}


# ----------------------------------------------------------------------------- servers


def start_http():
    root = os.path.join(HERE, "http")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=root, **kw)

        def log_message(self, *a):
            pass

        def send_header(self, key, value):
            # Files under no-last-modified/ are served without Last-Modified (a source
            # whose time then comes from its content, e.g. an archive's newest file).
            if key == "Last-Modified" and self.path.startswith("/no-last-modified/"):
                return
            super().send_header(key, value)

    try:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), Handler)
    except OSError as e:
        # Another difftest (another checkout) serves the same fixtures; ours would be equal.
        print(f"difftest: not serving http on 127.0.0.1:{HTTP_PORT} ({e}); using the server there",
              file=sys.stderr)
        return None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def make_git_repos(work):
    """Each directory under git/ becomes a bare repository with one commit (fixed dates) and
    the tag v1; a `history` file in it (not committed) lists further commits, if any."""
    src = os.path.join(HERE, "git")
    base = os.path.join(work, "git")
    os.makedirs(base, exist_ok=True)
    if not os.path.isdir(src):
        return base
    env = dict(os.environ, GIT_AUTHOR_NAME="difftest", GIT_AUTHOR_EMAIL="d@example.invalid",
               GIT_COMMITTER_NAME="difftest", GIT_COMMITTER_EMAIL="d@example.invalid",
               GIT_AUTHOR_DATE="2025-01-01T00:00:00Z", GIT_COMMITTER_DATE="2025-01-01T00:00:00Z",
               GIT_CONFIG_NOSYSTEM="1", HOME=work)
    for name in sorted(os.listdir(src)):
        d = os.path.join(src, name)
        if not os.path.isdir(d):
            continue
        wt = os.path.join(work, "git-wt", name)
        shutil.copytree(d, wt, symlinks=True)

        def git(*a):
            subprocess.run(["git", "-C", wt, *a], env=env, check=True, capture_output=True)
        git("init", "-q", "-b", "main")
        git("add", "-A")
        git("commit", "-q", "-m", f"{name}: difftest fixture")
        git("tag", "-a", "v1", "-m", "v1")
        git("branch", "other")
        subprocess.run(["git", "clone", "-q", "--bare", wt, os.path.join(base, name + ".git")],
                       env=env, check=True, capture_output=True)
        open(os.path.join(base, name + ".git", "git-daemon-export-ok"), "w").close()
    return base


def start_git_daemon(base):
    if shutil.which("git") is None:
        return None
    p = subprocess.Popen(["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={GIT_PORT}",
                          f"--base-path={base}", "--export-all", base],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p


# ----------------------------------------------------------------------------- one case


def run(cmd, log, timeout=900, stdout_to=None, stdin_from=None):
    """Runs cmd with its output in log; with stdout_to, its standard output goes there alone;
    with stdin_from, that file is its standard input."""
    with open(log, "wb") as f:
        f.write(("$ " + shlex.join(cmd) + "\n").encode())
        f.flush()
        out = open(stdout_to, "wb") if stdout_to else f
        try:
            stdin = open(stdin_from, "rb") if stdin_from else subprocess.DEVNULL
            r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if out is f else f,
                               stdin=stdin, timeout=timeout)
            if stdin_from:
                stdin.close()
            return r.returncode
        except subprocess.TimeoutExpired:
            f.write(b"\n[difftest] timed out\n")
            return 124
        finally:
            if out is not f:
                out.close()


def first_error(log):
    text = open(log, errors="replace").read().splitlines()
    for line in text:
        if re.search(r"error|failed", line, re.I) and not line.startswith("$ "):
            return line.strip()[:200]
    return (text[-1] if text else "").strip()[:200]


def run_case(name, rbuild, work, cache_dir):
    d = os.path.join(CASES, name)
    out = os.path.join(work, name)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    words = []
    if os.path.exists(os.path.join(d, "args")):
        words = shlex.split(open(os.path.join(d, "args")).read())
    try:
        bk_args, rb_args = translate_args(d, words)
    except CaseError as e:
        return name, "FAIL", str(e), 0
    oopts = ""
    if os.path.exists(os.path.join(d, "output-opts")):
        oopts = "," + open(os.path.join(d, "output-opts")).read().strip()
    mtimes = os.path.exists(os.path.join(d, "compare-mtimes"))
    # The context is copied without the case's own control files, so neither tool sees them.
    ctx = os.path.join(out, "context")
    shutil.rmtree(ctx, ignore_errors=True)
    shutil.copytree(d, ctx, symlinks=True, ignore=lambda _d, names: [
        n for n in names if _d == d and n in CASE_FILES])
    if os.path.exists(os.path.join(d, "fixed-mtimes")):
        # Every context file at one mtime (2024-01-01), whatever the checkout gave it.
        for root, dirs, names in os.walk(ctx):
            for n in names + dirs:
                os.utime(os.path.join(root, n), (1704067200, 1704067200), follow_symlinks=False)
    if os.path.exists(os.path.join(d, "sockets")):
        # Unix sockets git cannot hold: made in the context copy before the builds.
        for rel in open(os.path.join(d, "sockets")).read().split():
            path = os.path.join(ctx, rel)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(path)
            os.chmod(path, 0o600)
    bk_tar, rb_tar = os.path.join(out, "buildkit.tar"), os.path.join(out, "rbuild.tar")
    setup_path = os.path.join(d, "setup")
    if os.path.exists(setup_path):
        for line in open(setup_path):
            words = shlex.split(line)
            if not words or words[0].startswith("#"):
                continue
            if len(words) < 2:
                return name, "FAIL", f"setup: {line.strip()!r} is not NAME DIR [flags]", 0
            var, sub = words[0], os.path.join(ctx, words[1])
            try:
                sbk, srb = translate_args(sub, words[2:])
            except CaseError as e:
                return name, "FAIL", f"setup: {e}", 0
            for tool in ("buildkit", "rbuild"):
                ref = f"{REGISTRY}/difftest/{name}-{var.lower()}:{tool}"
                log = os.path.join(out, f"setup-{var}-{tool}.log")
                if tool == "buildkit":
                    cmd = [BUILDCTL, "--addr", BUILDKIT_ADDR, "build", "--progress", "plain",
                           "--frontend", "dockerfile.v0", "--local", f"context={sub}",
                           "--local", f"dockerfile={sub}", "--output",
                           f"type=image,name={ref},push=true,registry.insecure=true", *sbk]
                else:
                    cmd = [rbuild, "build", "--progress", "plain", "--network", "host",
                           "--cache-dir", cache_dir, "-o", f"type=registry,name={ref}", *srb, sub]
                if run(cmd, log) != 0:
                    return name, "FAIL", f"setup {var} by {tool}: {first_error(log)}", 0
                if tool == "buildkit":
                    bk_args += ["--opt", f"build-arg:{var}={ref}"]
                else:
                    rb_args += ["--build-arg", f"{var}={ref}"]
    call = None
    if os.path.exists(os.path.join(d, "call")):
        call = open(os.path.join(d, "call")).read().strip()
        if call not in ("outline", "targets"):
            return name, "FAIL", f"call: {call!r} is not outline or targets", 0
    if "--opt" in bk_args and not any(a.startswith("filename=") for a in bk_args) and \
            any(a.startswith("attest:") for a in bk_args):
        bk_args += ["--opt", "filename=Dockerfile"]  # as buildx sends it: the config source path
    local_out = None
    if os.path.exists(os.path.join(d, "output")):
        words = open(os.path.join(d, "output")).read().strip().split(",")
        if words[0] != "local":
            return name, "FAIL", "output: only `local[,ATTR=V...]`", 0
        local_out = ",".join(words[1:])
        local_out = "," + local_out if local_out else ""
        for tool in ("buildkit", "rbuild"):
            shutil.rmtree(os.path.join(out, f"{tool}-local"), ignore_errors=True)
    bk_out = ["--opt", f"requestid=frontend.{call}"] if call else \
        ["--output", f"type=oci,dest={bk_tar}{oopts}"]
    rb_out = ["--call", call] if call else ["-o", f"type=oci,dest={rb_tar}{oopts}"]
    if local_out is not None:
        bk_out = ["--output", f"type=local,dest={os.path.join(out, 'buildkit-local')}{local_out}"]
        rb_out = ["-o", f"type=local,dest={os.path.join(out, 'rbuild-local')}{local_out}"]
    bk_cmd = [BUILDCTL, "--addr", BUILDKIT_ADDR, "build", "--progress", "plain",
              "--frontend", "dockerfile.v0", "--local", f"context={ctx}", "--local", f"dockerfile={ctx}",
              *bk_out, *bk_args]
    rb_cmd = [rbuild, "build", "--progress", "plain", "--network", "host", "--cache-dir", cache_dir,
              *rb_out, *[a.replace(d, ctx) for a in rb_args], ctx]
    bk_log, rb_log = os.path.join(out, "buildkit.log"), os.path.join(out, "rbuild.log")
    bk_txt, rb_txt = os.path.join(out, "buildkit.txt"), os.path.join(out, "rbuild.txt")
    fills = {}
    for tool in ("buildkit", "rbuild"):
        cache_path = os.path.join(out, f"cache-{tool}")
        shutil.rmtree(cache_path, ignore_errors=True)
        fills[tool] = {"{CACHE}": f"{REGISTRY}/difftest/{name}-cache:{tool}", "{CACHEDIR}": cache_path}

    def fill(cmd, tool, fresh):
        cmd = [functools.reduce(lambda a, kv: a.replace(*kv), fills[tool].items(), w) for w in cmd]
        if "{FRESH}" in cmd:
            # The flag's own --cache-dir replaces the suite's one.
            i = cmd.index("--cache-dir")
            del cmd[i:i + 2]
            cmd = [fresh if w == "{FRESH}" else w for w in cmd]
        return cmd

    rebuild = None
    if os.path.exists(os.path.join(d, "rebuild")):
        rl = open(os.path.join(d, "rebuild")).read().splitlines() + ["", "", ""]
        if not rl[2].split() or any(w not in ("same", "differs", "identical") for w in rl[2].split()) or \
                ("identical" in rl[2] and rl[2].split() != ["identical"]):
            return name, "FAIL", "rebuild: line 3 must be `identical`, `same` or `differs` (or one per layer)", 0
        try:
            first = translate_args(d, shlex.split(rl[0]))
            second = translate_args(d, shlex.split(rl[1]))
        except CaseError as e:
            return name, "FAIL", f"rebuild: {e}", 0
        rebuild = " ".join(rl[2].split())
        firsts = {"buildkit": os.path.join(out, "first-buildkit.tar"), "rbuild": os.path.join(out, "first-rbuild.tar")}
        for tool, cmd, extra, tar in (("buildkit", bk_cmd, first[0], bk_tar), ("rbuild", rb_cmd, first[1], rb_tar)):
            log = os.path.join(out, f"first-{tool}.log")
            c = fill([w.replace(tar, firsts[tool]) for w in cmd[:-1 if tool == "rbuild" else None]] + extra +
                     ([cmd[-1]] if tool == "rbuild" else []), tool, os.path.join(out, "fresh-first"))
            if run(c, log) != 0:
                return name, "FAIL", f"first build by {tool}: {first_error(log)}", time.time() - start
        bk_cmd = bk_cmd + second[0]
        rb_cmd = rb_cmd[:-1] + second[1] + rb_cmd[-1:]
    fresh = os.path.join(out, "fresh-cache")
    shutil.rmtree(fresh, ignore_errors=True)
    bk_rc = run(fill(bk_cmd, "buildkit", fresh), bk_log, stdout_to=bk_txt if call else None)
    stdin_tar = None
    if os.path.exists(os.path.join(d, "stdin-tar")):
        # rbuild reads the context as a tar on its standard input (`-`); buildctl cannot
        # upload a tar context, so BuildKit builds the same files from the directory.
        stdin_tar = os.path.join(out, "context.tar")
        with tarfile.open(stdin_tar, "w") as t:
            for n in sorted(os.listdir(ctx)):
                t.add(os.path.join(ctx, n), arcname=n)
        rb_cmd = rb_cmd[:-1] + ["-"]
    rb_rc = run(fill(rb_cmd, "rbuild", fresh), rb_log, stdout_to=rb_txt if call else None,
                stdin_from=stdin_tar)
    secs = time.time() - start

    for tool, ctl, rc, log, other_rc in (("rbuild", "expect-fail-rbuild", rb_rc, rb_log, bk_rc),
                                         ("BuildKit", "expect-fail-buildkit", bk_rc, bk_log, rb_rc)):
        path = os.path.join(d, ctl)
        if not os.path.exists(path):
            continue
        if not os.path.exists(os.path.join(d, "known-diff")):
            return name, "FAIL", f"{ctl} needs a known-diff file with the reason", secs
        pat = open(path).readline().rstrip("\n")
        other, other_log = ("BuildKit", bk_log) if tool == "rbuild" else ("rbuild", rb_log)
        if rc == 0:
            return name, "FAIL", f"expected {tool} to fail, but it built it", secs
        if other_rc != 0:
            return name, "FAIL", f"expected {other} to build it: {first_error(other_log)}", secs
        if pat and not re.search(pat, open(log, errors="replace").read()):
            return name, "FAIL", f"{tool} failed, but its output does not match /{pat}/: {first_error(log)}", secs
        return name, "known", open(os.path.join(d, "known-diff")).readline().strip(), secs

    expect_fail = os.path.join(d, "expect-fail")
    if os.path.exists(expect_fail):
        pats = [p for p in open(expect_fail).read().splitlines()]
        if bk_rc == 0:
            return name, "FAIL", "expected to fail, but BuildKit built it", secs
        if rb_rc == 0:
            return name, "FAIL", "expected to fail, but rbuild built it", secs
        rb_text = open(rb_log, errors="replace").read()
        if pats and pats[0] and not re.search(pats[0], rb_text):
            return name, "FAIL", f"rbuild failed, but its output does not match /{pats[0]}/: {first_error(rb_log)}", secs
        if len(pats) > 1 and pats[1] and not re.search(pats[1], open(bk_log, errors="replace").read()):
            return name, "FAIL", f"BuildKit failed, but its output does not match /{pats[1]}/: {first_error(bk_log)}", secs
        return name, "fails", first_error(rb_log), secs
    if bk_rc != 0:
        return name, "FAIL", "buildkit: " + first_error(bk_log), secs
    if rb_rc != 0:
        return name, "FAIL", "rbuild: " + first_error(rb_log), secs

    if os.path.exists(os.path.join(d, "step-names")):
        def names(log):
            found = set()
            for line in open(log, errors="replace"):
                m = re.match(r"#\d+ (\[[^\]]+ \d+/\d+\] (\S+).*?)\s*$", line)
                if m and m.group(2) != "FROM":
                    found.add(m.group(1))
            return found
        bk_names, rb_names = names(bk_log), names(rb_log)
        if not bk_names:
            return name, "FAIL", "BuildKit's progress names no step", secs
        if bk_names != rb_names:
            return name, "DIFF", f"step names: BuildKit {sorted(bk_names - rb_names)}, rbuild {sorted(rb_names - bk_names)}", secs
    if local_out is not None:
        bk_list = local_listing(os.path.join(out, "buildkit-local"))
        rb_list = local_listing(os.path.join(out, "rbuild-local"))
        for tool, lines in (("buildkit", bk_list), ("rbuild", rb_list)):
            with open(os.path.join(out, tool + ".txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
    elif call:
        bk_list = open(bk_txt, errors="replace").read().splitlines()
        rb_list = open(rb_txt, errors="replace").read().splitlines()
        if not bk_list:
            return name, "FAIL", f"BuildKit printed no {call} result", secs
    else:
        random = frozenset()
        if os.path.exists(os.path.join(d, "random")):
            random = frozenset(l.strip() for l in open(os.path.join(d, "random")) if l.strip())
        try:
            bk_files, rb_files = read_layout(bk_tar), read_layout(rb_tar)
            bk_list = listing(bk_files, diff_ids_of(rb_files), mtimes, random)
            rb_list = listing(rb_files, diff_ids_of(bk_files), mtimes, random)
            if rebuild:
                for tool, files in (("BuildKit", bk_files), ("rbuild", rb_files)):
                    before, after = diff_ids_of(read_layout(firsts[tool.lower()])), diff_ids_of(files)
                    words = rebuild.split()
                    if words == ["identical"]:
                        ok = sorted(image_manifest_digests(read_layout(firsts[tool.lower()]))) == \
                            sorted(image_manifest_digests(files))
                    elif len(words) == 1:
                        ok = (before == after) == (words[0] == "same")
                    else:
                        ok = sorted(before) == sorted(after) and all(
                            len(b) == len(words) == len(after[p]) and
                            all((x == y) == (w == "same") for x, y, w in zip(b, after[p], words))
                            for p, b in before.items())
                    if not ok:
                        return name, "FAIL", f"{tool}'s second build's layers are not `{rebuild}` as its first's", secs
        except (CaseError, tarfile.TarError, KeyError, ValueError, OSError) as e:
            return name, "FAIL", f"cannot read an output: {e}", secs
        for tool, lines in (("buildkit", bk_list), ("rbuild", rb_list)):
            with open(os.path.join(out, tool + ".txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
    known = os.path.join(d, "known-diff")
    if bk_list == rb_list:
        note = "; marked known-diff but the same: remove the file" if os.path.exists(known) else ""
        return name, "same" if not note else "FAIL", note.lstrip("; "), secs
    delta = [l for l in difflib.unified_diff(bk_list, rb_list, lineterm="", n=0)
             if l[:1] in "+-" and l[:3] not in ("---", "+++")]
    with open(os.path.join(out, "diff.txt"), "w") as f:
        f.write("\n".join(delta) + "\n")
    if os.path.exists(known):
        exp_path = os.path.join(d, "expected-diff")
        expected = open(exp_path).read().splitlines() if os.path.exists(exp_path) else None
        if expected == delta:
            return name, "known", open(known).readline().strip(), secs
        return name, "DIFF", "not the expected-diff of this known case; - buildkit, + rbuild\n" + \
            "\n".join("    " + l for l in delta[:30]), secs
    return name, "DIFF", "- buildkit, + rbuild\n" + "\n".join("    " + l for l in delta[:30]), secs


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description="rbuild vs the reference BuildKit, case by case")
    ap.add_argument("--rbuild", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "rbuild"))
    ap.add_argument("--keep", help="keep logs, layouts and listings in this directory")
    ap.add_argument("-j", "--jobs", type=int, default=3, help="cases built at once (default 3)")
    ap.add_argument("--cache-dir", default="/var/tmp/difftest-cache", help="rbuild's cache")
    ap.add_argument("cases", nargs="*", help="case names (default: all)")
    a = ap.parse_args()
    if not os.access(a.rbuild, os.X_OK):
        print(f"no rbuild binary at {a.rbuild} (cargo build --release -p rbuild)", file=sys.stderr)
        return 2
    names = a.cases or sorted(n for n in os.listdir(CASES) if os.path.isdir(os.path.join(CASES, n)))
    for n in names:
        if not os.path.isfile(os.path.join(CASES, n, "Dockerfile")) and not os.path.isdir(os.path.join(CASES, n)):
            print(f"no case named {n}", file=sys.stderr)
            return 2
    if subprocess.run([BUILDCTL, "--addr", BUILDKIT_ADDR, "debug", "workers"], capture_output=True).returncode != 0:
        print(f"the reference BuildKit does not answer at {BUILDKIT_ADDR} (scripts/testenv/up.sh)", file=sys.stderr)
        return 2
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
        work = os.path.abspath(a.keep)
    else:
        work = tempfile.mkdtemp(prefix="rbuild-difftest.")
    srv = start_http()
    git = start_git_daemon(make_git_repos(work))
    counts = {"same": 0, "known": 0, "fails": 0, "DIFF": 0, "FAIL": 0}
    t0 = time.time()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as ex:
            futs = [(n, ex.submit(run_case, n, a.rbuild, work, a.cache_dir)) for n in names]
            for n, f in futs:
                try:
                    name, status, detail, secs = f.result()
                except Exception as e:  # a harness bug must not hide the other cases
                    name, status, detail, secs = n, "FAIL", f"difftest error: {e!r}", 0
                counts[status] += 1
                line = f"{name:34} {status:5} ({secs:.0f}s)"
                if detail:
                    line += (": " if "\n" not in detail else "; ") + detail
                print(line, flush=True)
    finally:
        if srv is not None:
            srv.shutdown()
        if git:
            git.terminate()
            git.wait()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    ported = set()
    for n in names:
        f = os.path.join(CASES, n, "port-of")
        if os.path.exists(f):
            ported.update(l.strip() for l in open(f) if l.strip() and not l.startswith("#"))
    print(f"summary: {len(names)} cases ({len(ported)} BuildKit integration tests ported) "
          f"in {time.time() - t0:.0f}s: {counts['same']} same, "
          f"{counts['known']} known differences, {counts['fails']} fail in both as expected, "
          f"{counts['DIFF']} differ, {counts['FAIL']} failed")
    if a.keep:
        print(f"logs, layouts and listings in {work}")
    return 1 if counts["DIFF"] or counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
