#!/usr/bin/env bash
# What one run of the tracer's socket programs costs, in ns, on a loopback ping-pong
# (pingpong.py) with BPF run-time statistics on. Run as root; needs python3 and bpftool.
#
#   tests/src/progcost/progcost.sh TRACER_BIN [ROUND_TRIPS] [-- TRACER_RUN_ARGS...]
#
# e.g. `progcost.sh target/release/tracer 50000 -- --status-only`. Prints the run count and
# ns per run of every program on sock_send_length / sock_recv_length (and their twins).
# Alternate builds or flags several times: the host's speed moves between sittings.
# docs/performance.md ("The eighth round") has results.
set -euo pipefail
bin=$1
n=${2:-50000}
shift $(( $# >= 2 ? 2 : 1 ))
[[ ${1:-} == -- ]] && shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'sysctl -qw kernel.bpf_stats_enabled=0; kill "${tracer:-}" "${pp:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
# The ping-pong waits for a file, so that the tracer can be started on its pid first.
python3 -c "
import os, sys, time
deadline = time.time() + 60
while not os.path.exists('$work/go'):
    if time.time() > deadline:
        sys.exit('progcost: the tracer did not start within 60 s')
    time.sleep(0.01)
os.execvp('python3', ['python3', '$here/pingpong.py', '$n'])
" &
pp=$!
"$bin" run "$@" --pid "$pp" -o "$work/trace.jsonl" --no-socket --duration 300 2>"$work/tracer.log" &
tracer=$!
for _ in $(seq 300); do
    grep -q '"type":"start"' "$work/trace.jsonl" 2>/dev/null && break
    sleep 0.1
done
grep -q '"type":"start"' "$work/trace.jsonl" || { cat "$work/tracer.log" >&2; exit 1; }
sysctl -qw kernel.bpf_stats_enabled=1
bpftool prog show --json >"$work/before.json"
touch "$work/go"
wait "$pp"
bpftool prog show --json >"$work/after.json"
sysctl -qw kernel.bpf_stats_enabled=0
kill -INT "$tracer"
wait "$tracer" || true
python3 - "$work/before.json" "$work/after.json" <<'PY'
import json, sys
before = {p["id"]: p for p in json.load(open(sys.argv[1]))}
for p in json.load(open(sys.argv[2])):
    name = p.get("name", "")
    if not name.endswith(("sock_send_length", "sock_recv_length")):
        continue
    b = before.get(p["id"], {})
    runs = p.get("run_cnt", 0) - b.get("run_cnt", 0)
    ns = p.get("run_time_ns", 0) - b.get("run_time_ns", 0)
    print(f"{name:<28} {runs:>8} runs {ns / max(runs, 1):>8.1f} ns/run")
PY
