#!/usr/bin/env bash
# Checks the Compose deployment without a Docker engine. Run from anywhere:
#   deploy/validate.sh
# Needs python3; uses docker-compose (Debian: apt-get install docker-compose) or `docker compose`
# when present, PyYAML when importable, shellcheck when present, and skips what is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
status=0
say() { printf '[validate] %s\n' "$*"; }

# 1. The compose file, interpolated with .env.example, as Compose itself reads it.
compose=()
if command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
fi
if ((${#compose[@]})); then
  for profile in "" test; do
    args=(--env-file .env.example)
    [[ -n "$profile" ]] && args+=(--profile "$profile")
    if "${compose[@]}" "${args[@]}" config -q; then
      say "compose config ok (${compose[*]}${profile:+, profile $profile})"
    else
      say "compose config FAILED"; status=1
    fi
  done
else
  say "skip: neither docker-compose nor docker compose found"
fi

# 2. JSON, YAML and NDJSON files parse; saved objects are consistent; both templates agree.
python3 - <<'PY' || status=1
import glob, json, sys

ok = True
def fail(msg):
    global ok
    ok = False
    print(f"[validate] FAILED: {msg}")

for path in sorted(glob.glob("deploy/**/*.json", recursive=True)):
    try:
        json.load(open(path))
    except Exception as e:
        fail(f"{path}: {e}")

try:
    import yaml
    for path in sorted(glob.glob("deploy/**/*.y*ml", recursive=True)) + ["docker-compose.yml"]:
        try:
            yaml.safe_load(open(path))
        except Exception as e:
            fail(f"{path}: {e}")
except ImportError:
    print("[validate] skip: PyYAML not installed (pip install pyyaml)")

objects = []
for path in sorted(glob.glob("deploy/kibana/*.ndjson")):
    for n, line in enumerate(open(path), 1):
        if not line.strip():
            continue
        try:
            objects.append(json.loads(line))
        except Exception as e:
            fail(f"{path}:{n}: {e}")
known = {(o.get("type"), o.get("id")) for o in objects}
for o in objects:
    attrs = o.get("attributes", {})
    for key in ("visState", "uiStateJSON", "panelsJSON", "optionsJSON", "fieldFormatMap"):
        if key in attrs:
            try:
                json.loads(attrs[key])
            except Exception as e:
                fail(f"{o['id']}.{key}: {e}")
    meta = attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON")
    if meta:
        ref_name = json.loads(meta).get("indexRefName")
        if ref_name and not any(r["name"] == ref_name for r in o.get("references", [])):
            fail(f"{o['id']}: no reference named {ref_name}")
    for ref in o.get("references", []):
        if (ref["type"], ref["id"]) not in known:
            fail(f"{o['id']}: reference to missing {ref['type']} {ref['id']}")

logs = json.load(open("deploy/elasticsearch/logs-template.json"))
audit = json.load(open("deploy/elasticsearch/audit-template.json"))
if logs["template"] != audit["template"]:
    fail("logs-template.json and audit-template.json differ in 'template' (settings/mappings)")

print("[validate] json/yaml/ndjson ok" if ok else "[validate] json/yaml/ndjson FAILED")
sys.exit(0 if ok else 1)
PY

# 3. The setup script.
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck deploy/setup/setup.sh deploy/validate.sh; then say "shellcheck ok"; else status=1; fi
else
  bash -n deploy/setup/setup.sh && say "bash -n ok (shellcheck not installed)" || status=1
fi

exit "$status"
