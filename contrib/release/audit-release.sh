#!/usr/bin/env bash
# Audit a model release through auditsvc's REST API: upload the model, wait for the verdict,
# download report.pdf and findings.json, and gate on the verdict. Needs bash, curl (7.76 or newer)
# and jq only, so it runs in any CI job. Exit codes are those of `manage.py audit`:
#   0  the audit is done and its verdict is below --fail-on (or no --fail-on was given)
#   1  the audit could not run or finish: server unreachable or failing (5xx), the audit failed or
#      was cancelled, or the verdict did not come within --timeout
#   2  bad input: arguments, files, the token (401), or a request the server refused (400, 404, 413)
#   3  the verdict is at or above --fail-on
# The token comes from AUDITSVC_TOKEN only: it never appears in arguments, process lists or logs.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: audit-release.sh --model FILE (--dataset PROBE.zip | --probe-set ID) --out DIR
                        [--meta model.json] [--url URL] [--profile full|quick] [--release-tag TAG]
                        [--fail-on warn|fail] [--seed N] [--timeout SECONDS] [--poll-max SECONDS]

  --model        the model file (model.pt2, TorchScript .pt/.ts)
  --meta         its model.json (default: model.json beside the model)
  --dataset      the probe set as a zip (<class>/<image>, optional manifest.csv), uploaded
  --probe-set    or the id of a probe set already stored on the server
  --out          directory for report.pdf and findings.json
  --url          the service (default: $AUDITSVC_URL)
  --profile      full (default) or quick
  --release-tag  the release the model ships in, e.g. the git tag
  --fail-on      exit 3 when the verdict is at or above this
  --seed         the audit's seed (default 0)
  --timeout      stop waiting for the verdict after this many seconds (default 3600; exit 1);
                 the audit goes on
  --poll-max     longest wait between two status requests, in seconds (default 30)

environment: AUDITSVC_TOKEN (required; an API token from the portal's "API tokens" page),
             AUDITSVC_URL
exit codes:  0 done, below --fail-on; 3 at or above --fail-on; 2 bad input (arguments, files,
             token, a refused upload); 1 the audit could not run or finish
EOF
}

EXIT_FAILED=1
EXIT_BAD_INPUT=2
EXIT_VERDICT=3

fail() {  # fail CODE MESSAGE: one line on stderr, then exit
    printf 'error: %s\n' "$(printf '%s' "$2" | tr -s '\r\n\t' '   ')" >&2
    exit "$1"
}

url=${AUDITSVC_URL:-} model="" meta="" dataset="" probe_set="" out="" profile="" release_tag=""
fail_on="" seed="" timeout=3600 poll_max=30

while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --model | --meta | --dataset | --probe-set | --out | --url | --profile | --release-tag | --fail-on | \
            --seed | --timeout | --poll-max)
            (($# >= 2)) || fail $EXIT_BAD_INPUT "$1 needs a value"
            option=${1#--} value=$2
            shift 2
            case $option in
                model) model=$value ;; meta) meta=$value ;; dataset) dataset=$value ;;
                probe-set) probe_set=$value ;; out) out=$value ;; url) url=$value ;;
                profile) profile=$value ;; release-tag) release_tag=$value ;; fail-on) fail_on=$value ;;
                seed) seed=$value ;; timeout) timeout=$value ;; poll-max) poll_max=$value ;;
            esac ;;
        *) fail $EXIT_BAD_INPUT "unknown argument ${1:0:60} (--help lists them)" ;;
    esac
done

# --- check everything that can be refused before sending anything ----------------------------

for tool in curl jq; do
    command -v "$tool" >/dev/null || fail $EXIT_FAILED "$tool is not installed"
done
[[ -n $url ]] || fail $EXIT_BAD_INPUT "no server: give --url or set AUDITSVC_URL"
[[ $url =~ ^https?://[^[:space:]]+$ ]] || fail $EXIT_BAD_INPUT "--url must start with http:// or https://"
url=${url%/}
token=${AUDITSVC_TOKEN:-}
[[ -n $token ]] || fail $EXIT_BAD_INPUT "AUDITSVC_TOKEN is not set (create a token on the portal's API tokens page)"
# Written into a curl config file below: a key is URL-safe base64, so no quote can end the line early.
[[ $token =~ ^[A-Za-z0-9_.~+/=-]+$ ]] || fail $EXIT_BAD_INPUT "AUDITSVC_TOKEN holds characters no API token has"
[[ -n $model ]] || fail $EXIT_BAD_INPUT "--model is required"
[[ -f $model ]] || fail $EXIT_BAD_INPUT "model $model not found"
meta=${meta:-$(dirname -- "$model")/model.json}
[[ -f $meta ]] || fail $EXIT_BAD_INPUT "model.json $meta not found (give --meta)"
[[ -n $dataset || -n $probe_set ]] || fail $EXIT_BAD_INPUT "give --dataset PROBE.zip or --probe-set ID"
[[ -z $dataset || -z $probe_set ]] || fail $EXIT_BAD_INPUT "give --dataset or --probe-set, not both"
[[ -z $dataset || ! -d $dataset ]] || fail $EXIT_BAD_INPUT "dataset $dataset is a folder: zip it (cd $dataset && zip -qr ../probe.zip .)"
[[ -z $dataset || -f $dataset ]] || fail $EXIT_BAD_INPUT "dataset $dataset not found"
[[ -z $probe_set || $probe_set =~ ^[0-9]+$ ]] || fail $EXIT_BAD_INPUT "--probe-set must be a probe set id"
[[ -n $out ]] || fail $EXIT_BAD_INPUT "--out is required"
[[ -z $profile || $profile == full || $profile == quick ]] || fail $EXIT_BAD_INPUT "--profile must be full or quick"
[[ -z $fail_on || $fail_on == warn || $fail_on == fail ]] || fail $EXIT_BAD_INPUT "--fail-on must be warn or fail"
[[ -z $seed || $seed =~ ^[0-9]+$ ]] || fail $EXIT_BAD_INPUT "--seed must be a whole number"
[[ $timeout =~ ^[0-9]+$ ]] || fail $EXIT_BAD_INPUT "--timeout must be a number of seconds"
[[ $poll_max =~ ^[0-9]+$ && $poll_max -ge 1 ]] || fail $EXIT_BAD_INPUT "--poll-max must be at least 1 second"
mkdir -p -- "$out" 2>/dev/null || fail $EXIT_BAD_INPUT "--out $out cannot be created"
[[ -d $out && -w $out ]] || fail $EXIT_BAD_INPUT "--out $out is not a writable directory"

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
(umask 077 && printf 'header = "Authorization: Token %s"\n' "$token" >"$work/auth")
unset token

# --- HTTP ------------------------------------------------------------------------------------

# request OUTFILE CURL_ARGS...: the answer's body goes to OUTFILE; an HTTP error or a network
# failure ends the script with one line that carries the server's own message.
request() {
    local body=$1 status rc=0 message
    shift
    status=$(curl --silent --show-error --fail-with-body --connect-timeout 30 --config "$work/auth" \
        --output "$body" --write-out '%{http_code}' "$@" 2>"$work/curl.err") || rc=$?
    if ((rc == 0)); then
        [[ $status == 2?? ]] || fail $EXIT_FAILED "unexpected answer from $url (HTTP $status): is it the service's address?"
        return 0
    fi
    ((rc == 22)) || fail $EXIT_FAILED "cannot reach $url: $(tail -n 1 "$work/curl.err")"
    message=$(jq -r 'if type == "object" and (.error | type) == "string" then .error else empty end' \
        "$body" 2>/dev/null) || message=""
    [[ -n $message ]] || message="an answer that is not the API's JSON"
    case $status in
        401) fail $EXIT_BAD_INPUT "the server refused the token (401: $message); check AUDITSVC_TOKEN" ;;
        400 | 413) fail $EXIT_BAD_INPUT "the server refused the upload ($status: $message)" ;;
        4??) fail $EXIT_BAD_INPUT "the server refused the request ($status: $message)" ;;
        *) fail $EXIT_FAILED "the server failed ($status: $message)" ;;
    esac
}

# GET with retries: a restarting server or proxy (connection refused, 502, 503, 504) is waited out.
get() {
    request "$1" --retry 4 --retry-connrefused --max-time 600 "$url$2"
}

# answer FILTER: a value from the last answer about the audit.
answer() {
    jq -r "$1" "$work/audit.json" 2>/dev/null || fail $EXIT_FAILED "the answer from $url is not the API's JSON"
}

upper() {
    printf '%s' "$1" | tr '[:lower:]' '[:upper:]'
}

# curl -F reads ';' and ',' in a file name as options: quote the name.
form_file() {
    local escaped=${2//\\/\\\\}
    printf '%s=@"%s"' "$1" "${escaped//\"/\\\"}"
}

# --- submit, wait, download -------------------------------------------------------------------

fields=(-F "$(form_file model "$model")" -F "$(form_file meta "$meta")")
if [[ -n $dataset ]]; then fields+=(-F "$(form_file dataset "$dataset")"); fi
if [[ -n $probe_set ]]; then fields+=(-F "probe_set=$probe_set"); fi
if [[ -n $profile ]]; then fields+=(-F "profile=$profile"); fi
if [[ -n $seed ]]; then fields+=(-F "seed=$seed"); fi
if [[ -n $release_tag ]]; then fields+=(--form-string "release_tag=$release_tag"); fi
fields+=(-F "priority=release")   # a release gate: it starts before interactive audits and scheduled re-audits

request "$work/audit.json" "${fields[@]}" "$url/api/v1/audits"
audit_id=$(answer '.id')
[[ $audit_id =~ ^[0-9]+$ ]] || fail $EXIT_FAILED "the answer from $url holds no audit id"
portal=$(answer '.links.portal')
if [[ $(answer '.existing') == true ]]; then
    printf 'audit %s: an identical audit was already queued or running; following it (%s)\n' "$audit_id" "$portal" >&2
else
    printf 'audit %s: queued (%s)\n' "$audit_id" "$portal" >&2
fi

delay=1 shown="" waiting_since=$SECONDS
while :; do
    get "$work/audit.json" "/api/v1/audits/$audit_id"
    status=$(answer '.status')
    case $status in
        done | failed | cancelled) break ;;
    esac
    percent=$(answer '.progress * 100 | floor')
    line="$status: $(answer '.stage // ""')"
    position=$(answer '.queue_position // ""')
    if [[ $status == queued && -n $position && $position != 0 ]]; then
        line="queued, $position ahead"
    fi
    if [[ $line != "$shown" ]]; then
        printf '[%3d%%] %s\n' "$percent" "$line" >&2
        shown=$line
    fi
    if ((SECONDS - waiting_since + delay > timeout)); then
        fail $EXIT_FAILED "audit $audit_id has not finished after $timeout s (it goes on: $portal)"
    fi
    sleep "$delay"
    delay=$((delay * 2 > poll_max ? poll_max : delay * 2))
done

message=$(answer '.message // ""')
[[ $status == "done" ]] || fail $EXIT_FAILED "audit $audit_id $status${message:+: $message}"

for name in report.pdf findings.json; do
    get "$work/$name" "/api/v1/audits/$audit_id/$name"
    mv -f -- "$work/$name" "$out/$name"
done

verdict=$(answer '.verdict // "pass"')
report_url=$(answer '.links.report // .links.portal')
printf 'verdict: %s (%s findings)\n' "$(upper "$verdict")" "$(jq '.findings | length' "$out/findings.json")"
printf '  %s\n' "$report_url" "$out/report.pdf" "$out/findings.json"

# In GitHub Actions: step outputs for later steps, and the verdict on the run's summary page.
if [[ -n ${GITHUB_OUTPUT:-} ]]; then
    printf 'audit-id=%s\nverdict=%s\nreport-url=%s\n' "$audit_id" "$verdict" "$report_url" >>"$GITHUB_OUTPUT"
fi
if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then
    printf '### Model audit: %s\n\n[Audit %s](%s)\n' "$(upper "$verdict")" "$audit_id" "$report_url" >>"$GITHUB_STEP_SUMMARY"
fi

rank() {
    case $1 in warn) echo 1 ;; fail) echo 2 ;; *) echo 0 ;; esac
}
if [[ -n $fail_on ]] && (($(rank "$verdict") >= $(rank "$fail_on"))); then
    exit $EXIT_VERDICT
fi
