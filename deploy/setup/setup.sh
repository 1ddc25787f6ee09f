#!/usr/bin/env bash
# One-shot provisioning of the ordertrail compose stack. Every step is idempotent: running it
# again (docker compose up setup kibana-setup, or docker compose run --rm setup) converges to the
# same state and never deletes data.
#
#   setup.sh elasticsearch   (service "setup", before Logstash, Kibana and the services start)
#     1. waits for Elasticsearch
#     2. sets the password of the built-in user kibana_system       (Kibana logs in with it)
#     3. creates/updates role logstash_writer and user logstash_internal (Logstash writes with it)
#     4. puts the ILM policy "ordertrail"             deploy/elasticsearch/ilm-policy.json
#     5. puts the component templates ordertrail-settings and ordertrail-mappings (shared by both
#        index templates)                   deploy/elasticsearch/ordertrail-{settings,mappings}.json
#     6. puts the index templates ordertrail-logs and ordertrail-audit (composed_of the two
#        component templates, which must exist first)
#                                                    deploy/elasticsearch/{logs,audit}-template.json
#     7. creates the data streams ordertrail-logs and ordertrail-audit (if missing), so that the
#        Kibana data view matches something before the first log line arrives
#
#   setup.sh kibana          (service "kibana-setup", once Kibana is healthy)
#     1. waits for Kibana
#     2. imports deploy/kibana/*.ndjson with overwrite=true (fixed ids: re-import replaces)
#     3. makes the "ordertrail" data view the default one
#
# Environment: ELASTIC_PASSWORD (required), KIBANA_SYSTEM_PASSWORD, LOGSTASH_INTERNAL_PASSWORD
# (required by the elasticsearch step), ELASTICSEARCH_URL, KIBANA_URL, DEPLOY_DIR, WAIT_SECONDS.
# Needs bash and curl only (the Elasticsearch image has both).

set -euo pipefail

ES_URL="${ELASTICSEARCH_URL:-http://elasticsearch:9200}"
KIBANA_URL="${KIBANA_URL:-http://kibana:5601}"
DEPLOY_DIR="${DEPLOY_DIR:-/deploy}"
WAIT_SECONDS="${WAIT_SECONDS:-300}"

ILM_POLICY="ordertrail"
# Component templates, put before the index templates that list them in composed_of.
COMPONENT_TEMPLATES=(ordertrail-settings ordertrail-mappings)
# Index template name = data stream name; the file is deploy/elasticsearch/<suffix>-template.json.
INDEX_TEMPLATES=(ordertrail-logs ordertrail-audit)
DATA_STREAMS=(ordertrail-logs ordertrail-audit)
DATA_VIEW_ID="ordertrail"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# JSON string literal for a value (passwords may hold quotes or backslashes).
json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  printf '"%s"' "$s"
}

BODY_FILE="$(mktemp)"
trap 'rm -f "$BODY_FILE"' EXIT

# call METHOD URL [curl args...]: prints the HTTP status (000 if unreachable); body in $BODY_FILE.
call() {
  local method=$1 url=$2
  shift 2
  curl -sS -o "$BODY_FILE" -w '%{http_code}' --max-time 60 \
    -u "elastic:${ELASTIC_PASSWORD}" -X "$method" "$url" "$@" 2>/dev/null || true
}

# expect_2xx WHAT STATUS: fails the setup, with the response body, unless STATUS is 2xx.
expect_2xx() {
  local what=$1 status=$2
  if [[ "$status" != 2?? ]]; then
    log "response: $(head -c 2000 "$BODY_FILE")"
    die "$what failed (HTTP $status)"
  fi
  log "$what: ok"
}

es_json() { # es_json WHAT METHOD PATH JSON-BODY
  expect_2xx "$1" "$(call "$2" "$ES_URL$3" -H 'Content-Type: application/json' --data-binary "$4")"
}

es_file() { # es_file WHAT METHOD PATH FILE
  [[ -r "$4" ]] || die "$1: cannot read $4"
  expect_2xx "$1" "$(call "$2" "$ES_URL$3" -H 'Content-Type: application/json' --data-binary "@$4")"
}

wait_for() { # wait_for WHAT URL: until URL answers 200 (with the elastic credentials)
  local what=$1 url=$2 deadline=$((SECONDS + WAIT_SECONDS)) status
  log "waiting for $what ($url)"
  while :; do
    status="$(call GET "$url")"
    [[ "$status" == 200 ]] && { log "$what is up"; return 0; }
    ((SECONDS < deadline)) || die "$what not ready after ${WAIT_SECONDS}s (last HTTP status $status)"
    sleep 3
  done
}

setup_elasticsearch() {
  : "${KIBANA_SYSTEM_PASSWORD:?KIBANA_SYSTEM_PASSWORD is not set}"
  : "${LOGSTASH_INTERNAL_PASSWORD:?LOGSTASH_INTERNAL_PASSWORD is not set}"

  wait_for "Elasticsearch" "$ES_URL/_cluster/health?wait_for_status=yellow&timeout=10s"

  es_json "password of kibana_system" POST "/_security/user/kibana_system/_password" \
    "{\"password\":$(json_string "$KIBANA_SYSTEM_PASSWORD")}"

  # Least privilege for Logstash: write documents into ordertrail-* data streams (auto_configure
  # creates a data stream from its template on first write), nothing else.
  es_json "role logstash_writer" PUT "/_security/role/logstash_writer" '{
    "cluster": ["monitor"],
    "indices": [
      {
        "names": ["ordertrail-*"],
        "privileges": ["create_doc", "auto_configure", "view_index_metadata"]
      }
    ],
    "metadata": {"managed_by": "ordertrail deploy/setup/setup.sh"}
  }'

  es_json "user logstash_internal" PUT "/_security/user/logstash_internal" \
    "{\"password\":$(json_string "$LOGSTASH_INTERNAL_PASSWORD"),\"roles\":[\"logstash_writer\"],\"full_name\":\"ordertrail Logstash writer\",\"metadata\":{\"managed_by\":\"ordertrail deploy/setup/setup.sh\"}}"

  es_file "ILM policy $ILM_POLICY" PUT "/_ilm/policy/$ILM_POLICY" \
    "$DEPLOY_DIR/elasticsearch/ilm-policy.json"

  # PUT creates or replaces: rerunning converges. Component templates first: Elasticsearch
  # rejects an index template whose composed_of names a component template that does not exist.
  local name
  for name in "${COMPONENT_TEMPLATES[@]}"; do
    es_file "component template $name" PUT "/_component_template/$name" \
      "$DEPLOY_DIR/elasticsearch/$name.json"
  done
  for name in "${INDEX_TEMPLATES[@]}"; do
    es_file "index template $name" PUT "/_index_template/$name" \
      "$DEPLOY_DIR/elasticsearch/${name#ordertrail-}-template.json"
  done

  # A changed template applies to the next backing index; to apply it now on a running stack:
  #   POST ordertrail-logs/_rollover   (and ordertrail-audit)
  local ds status
  for ds in "${DATA_STREAMS[@]}"; do
    status="$(call GET "$ES_URL/_data_stream/$ds")"
    if [[ "$status" == 200 ]]; then
      log "data stream $ds: exists"
      continue
    fi
    status="$(call PUT "$ES_URL/_data_stream/$ds")"
    if [[ "$status" == 400 ]] && grep -q 'resource_already_exists_exception' "$BODY_FILE"; then
      log "data stream $ds: exists"
      continue
    fi
    expect_2xx "data stream $ds" "$status"
  done

  log "Elasticsearch is provisioned"
}

setup_kibana() {
  wait_for "Kibana" "$KIBANA_URL/api/status"

  local file status found=0
  for file in "$DEPLOY_DIR"/kibana/*.ndjson; do
    [[ -e "$file" ]] || continue
    found=1
    status="$(call POST "$KIBANA_URL/api/saved_objects/_import?overwrite=true" \
      -H 'kbn-xsrf: true' --form "file=@$file")"
    expect_2xx "import $(basename "$file")" "$status"
    # The import API answers 200 even when single objects fail: check the verdict too.
    if ! grep -Eq '"success"[[:space:]]*:[[:space:]]*true' "$BODY_FILE"; then
      log "response: $(head -c 4000 "$BODY_FILE")"
      die "import $(basename "$file") reported errors"
    fi
  done
  ((found)) || die "no saved objects found in $DEPLOY_DIR/kibana/*.ndjson"

  # Nice to have: Discover opens on the ordertrail data view. Not fatal if this API differs.
  status="$(call POST "$KIBANA_URL/api/data_views/default" -H 'kbn-xsrf: true' \
    -H 'Content-Type: application/json' \
    --data-binary "{\"data_view_id\":\"$DATA_VIEW_ID\",\"force\":true}")"
  if [[ "$status" == 2?? ]]; then
    log "default data view: $DATA_VIEW_ID"
  else
    log "warning: could not set the default data view (HTTP $status); continuing"
  fi

  log "Kibana is provisioned: dashboard http://localhost:5601/app/dashboards#/view/ordertrail-overview"
}

main() {
  : "${ELASTIC_PASSWORD:?ELASTIC_PASSWORD is not set}"
  case "${1:-}" in
    elasticsearch) setup_elasticsearch ;;
    kibana) setup_kibana ;;
    all) setup_elasticsearch; setup_kibana ;;
    *) die "usage: setup.sh elasticsearch|kibana|all" ;;
  esac
}

main "$@"
