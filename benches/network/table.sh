#!/usr/bin/env bash
# Runs issue 15's table in benches/network, one run per row, kadence against libp2p-kad with
# its defaults (and both with alpha 3), and issue 16's rows, the accelerated client beside
# kadence and libp2p-kad (`--only kadence-accel,kadence,kad`; kadence alone at 1,000 nodes),
# then prints the rows as Markdown from the JSON files.
#
#   benches/network/table.sh                 # every row, ~3 h on 2 shared cores
#   ROWS="200-cold 200-warm" benches/network/table.sh   # some rows
#   ROWS="200-accel" benches/network/table.sh            # issue 16's 200-node row
#   benches/network/table.sh --list          # the rows and their commands, nothing run
#   benches/network/table.sh --summary       # only the Markdown, from the rows' last runs
#
# Issue 16's rows: 200-accel (cold, idle timeout 10 s, as 200-cold), 200-accel-silent25 (the
# same, a quarter of the nodes silent after the crawl) and 1000-accel (kadence-accel and
# kadence). Their table shows the accelerated client's latencies against both, its crawl
# (time, requests, bytes, connections open at once, peers per table) and its memory.
#
# Environment:
#   ROWS         rows to run (names below), default all
#   CHURN_WAIT   seconds between the churn and the lookups, default 600: kadence's table refresh
#                interval (libp2p-kad bootstraps every 5 min), so maintenance can act once;
#                120 by default for 200-accel-silent25, whose full tables were crawled before
#   KAD_LOOKUPS  if set, libp2p-kad runs only the first KAD_LOOKUPS lookups in the 500-node rows
#                (its setup takes ~5 min and ~100 KB per connection there): its lookups are
#                reduced, never its configuration, and the row's command says so
#
# Each run writes target/network-bench/LABEL.json and LABEL-{lookup,provide}-cdf.svg; the
# console output of every row goes to target/network-bench/table-ROW.log.
set -euo pipefail
cd "$(dirname "$0")/../.."

COMMON="--lookups 300 --provides 30 --seed 1"
# Issue 16's silent row waits 120 s unless told: the full tables were crawled before the churn.
CHURN_WAIT_ACCEL="${CHURN_WAIT:-120}"
CHURN_WAIT="${CHURN_WAIT:-600}"
PAIR="--only kadence,kad"
ACCEL3="--only kadence-accel,kadence,kad"
KAD500=""
if [ -n "${KAD_LOOKUPS:-}" ]; then
  KAD500="--kad-lookups ${KAD_LOOKUPS}"
fi

# name | arguments | estimated minutes (2 shared cores; kadence + libp2p-kad)
ROW_TABLE="
200-cold|${PAIR} --nodes 200 --idle-timeout 10|3
200-warm|${PAIR} --nodes 200 --idle-timeout 600|3
500-cold|${PAIR} --nodes 500 --idle-timeout 10 ${KAD500}|10
500-warm|${PAIR} --nodes 500 --idle-timeout 600 ${KAD500}|10
200-cold-alpha3|${PAIR} --nodes 200 --idle-timeout 10 --alpha-all 3|3
200-warm-alpha3|${PAIR} --nodes 200 --idle-timeout 600 --alpha-all 3|3
500-cold-alpha3|${PAIR} --nodes 500 --idle-timeout 10 --alpha-all 3 ${KAD500}|10
500-warm-alpha3|${PAIR} --nodes 500 --idle-timeout 600 --alpha-all 3 ${KAD500}|10
200-gone25|${PAIR} --nodes 200 --idle-timeout 10 --churn gone:0.25 --churn-wait ${CHURN_WAIT}|24
200-silent25|${PAIR} --nodes 200 --idle-timeout 10 --churn silent:0.25 --churn-wait ${CHURN_WAIT}|40
200-accel|${ACCEL3} --nodes 200 --idle-timeout 10|8
200-accel-silent25|${ACCEL3} --nodes 200 --idle-timeout 10 --churn silent:0.25 --churn-wait ${CHURN_WAIT_ACCEL}|16
1000-accel|--only kadence-accel,kadence --nodes 1000 --idle-timeout 10|30
"

rows() { printf '%s\n' "$ROW_TABLE" | sed '/^$/d'; }
selected() {
  local name=$1
  [ -z "${ROWS:-}" ] && return 0
  for r in $ROWS; do [ "$r" = "$name" ] && return 0; done
  return 1
}

OUT=target/network-bench
mkdir -p "$OUT"

# The JSON each selected row's last run wrote, named in its log, in the table's order.
row_files() {
  while IFS='|' read -r name _ _; do
    selected "$name" || continue
    log="$OUT/table-$name.log"
    [ -f "$log" ] && sed -n 's/^wrote \(.*network-bench\/.*\.json\)$/\1/p' "$log" | tail -n 1
  done < <(rows)
}

summary() {
  # shellcheck disable=SC2046 # one file per line, no spaces in the labels
  python3 - $(row_files) <<'PY'
import json, sys

runs = []
for path in sys.argv[1:]:
    with open(path) as f:
        runs.append((path, json.load(f)))

def num(v, d=0):
    return "n/a" if v is None else f"{v:.{d}f}"

def ratio(a, b):
    return "n/a" if a is None or b in (None, 0) else f"{a / b:.2f}"

def accel_row(run):
    """Issue 16: the accelerated client beside kadence and libp2p-kad, from one run."""
    c = run["config"]
    by = {r["network"]: r for r in run["results"]}
    a, k, l = by["kadence-accel"], by.get("kadence"), by.get("kad")
    get = lambda r, f: None if r is None else r.get(f)
    def pair(r, f1, f2, d=0):
        return "-" if r is None else f"{num(r.get(f1), d)} / {num(r.get(f2), d)}"
    def trio(f, d=0):
        return " / ".join("-" if r is None else num(r.get(f), d) for r in (a, k, l))
    name = f'{c["nodes"]} nodes, idle {c["idle_timeout_s"]} s'
    if c.get("churn"):
        ch = c["churn"]
        name += f', {ch["share"] * 100:.0f}% {ch["mode"]} after the crawl, wait {c["churn_wait_s"]} s'
    rev = run.get("revision") or "?"
    rev = rev[:7] + ("-dirty" if rev.endswith("-dirty") else "")
    return (
        f'| {name} '
        f'| {pair(a, "latency_ms_p50", "latency_ms_p95")} '
        f'| {pair(k, "latency_ms_p50", "latency_ms_p95")} '
        f'| {pair(l, "latency_ms_p50", "latency_ms_p95")} '
        f'| {ratio(a["latency_ms_p50"], get(l, "latency_ms_p50"))} / {ratio(a["latency_ms_p50"], get(k, "latency_ms_p50"))} '
        f'| {trio("recall_mean", 3)} '
        f'| {trio("provide_ms_p50")} '
        f'| {trio("find_ms_p50")} '
        f'| {trio("placement_mean", 1)} '
        f'| {num(a["accelerated_lookups"], 2)} / {num(a["accelerated_provides"], 2)} / {num(a["accelerated_finds"], 2)} '
        f'| {num(a["crawl_s_mean"], 1)} / {num(a["crawl_s_max"], 1)} '
        f'| {num(a["crawl_requests_mean"])} / {num(a["crawl_kib_mean"])} '
        f'| {num(a["crawl_peak_connections_mean"])} / {num(a["crawl_peak_connections_max"])} '
        f'| {num(a["crawl_table_peers_mean"], 1)} '
        f'| {num(a["table_bytes_per_peer"])} / {num(a["table_kib_per_node"], 1)} '
        f'| {trio("heap_kib_peak_per_node")} '
        f'| {ratio(a["cpu_ms_per_lookup"], get(l, "cpu_ms_per_lookup"))} / {ratio(a["cpu_ms_per_lookup"], get(k, "cpu_ms_per_lookup"))} '
        f'| {rev} |')

plain, churned, accel = [], [], []
for _, run in runs:
    c = run["config"]
    if "kadence-accel" in c.get("networks", []):
        accel.append(accel_row(run))
        continue
    k, l = run["results"][0], run["results"][1]
    idle = c["idle_timeout_s"]
    state = "cold, " if idle <= 10 else "warm, " if idle >= 600 else ""
    name = f'{c["nodes"]} nodes, {state}idle {idle} s'
    if c.get("alpha_all"):
        name += f', both with alpha {c["alpha_all"]}'
    if c.get("kad_lookups"):
        name += f', libp2p-kad {c["kad_lookups"]} lookups'
    rev = run.get("revision") or "?"
    rev = rev[:7] + ("-dirty" if rev.endswith("-dirty") else "")
    if c.get("churn"):
        ch = c["churn"]
        churned.append(
            f'| {ch["share"] * 100:.0f}% {ch["mode"]}, {c["nodes"]} nodes, wait {c["churn_wait_s"]} s '
            f'| {num(k["latency_ms_p50"])} / {num(k["latency_ms_p95"])} '
            f'| {num(k["recall_mean"], 3)} '
            f'| {num(k["placement_min"])} / {num(k["placement_mean"], 1)} / {num(k["placement_at_least_18"], 2)} '
            f'| {num(k["stale_entries_at_end"], 3)} '
            f'| {num(l["latency_ms_p50"])} / {num(l["latency_ms_p95"])} '
            f'| {num(l["recall_mean"], 3)} '
            f'| {num(l["placement_min"])} / {num(l["placement_mean"], 1)} / {num(l["placement_at_least_18"], 2)} '
            f'| {num(l["stale_entries_at_end"], 3)} | {rev} |')
        continue
    plain.append(
        f'| {name} '
        f'| {num(k["latency_ms_p50"])} / {num(k["latency_ms_p95"])} '
        f'| {num(l["latency_ms_p50"])} / {num(l["latency_ms_p95"])} '
        f'| {ratio(k["latency_ms_p50"], l["latency_ms_p50"])} / {ratio(k["latency_ms_p95"], l["latency_ms_p95"])} '
        f'| {num(k["recall_mean"], 3)} / {num(l["recall_mean"], 3)} '
        f'| {ratio(k["provide_ms_p50"], l["provide_ms_p50"])} '
        f'| {num(k["placement_min"])} / {num(k["placement_mean"], 1)} '
        f'| {num(k["find_success"], 2)} / {num(l["find_success"], 2)} '
        f'| {ratio(k["cpu_ms_per_lookup"], l["cpu_ms_per_lookup"])} '
        f'| {ratio(k["heap_kib_peak_per_node"], l["heap_kib_peak_per_node"])} '
        f'| {num(k["connected_per_node"])} -> {num(k["connected_end_per_node"])} / {num(l["connected_per_node"])} -> {num(l["connected_end_per_node"])} '
        f'| {num(k["dials_per_lookup"], 1)} / {num(l["dials_per_lookup"], 1)} '
        f'| {rev} |')

print("| network | kadence p50 / p95 (ms) | libp2p-kad p50 / p95 (ms) | ratio p50 / p95 "
      "| recall kadence / libp2p-kad | provide p50 ratio | kadence placement min / mean "
      "| find-providers kadence / libp2p-kad | CPU per lookup ratio | heap per node ratio "
      "| connected per node, first lookup -> end (kadence / libp2p-kad) "
      "| new connections per lookup (kadence / libp2p-kad) | revision |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
print("\n".join(plain))
print()
print("| churn | kadence p50 / p95 (ms) | recall vs live peers | placement min / mean / share >= 18 "
      "| stale table entries at the end | libp2p-kad p50 / p95 (ms) | recall "
      "| placement min / mean / share >= 18 | stale table entries at the end | revision |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
print("\n".join(churned))
if accel:
    print()
    print("| network | accelerated p50 / p95 (ms) | kadence p50 / p95 (ms) | libp2p-kad p50 / p95 (ms) "
          "| accelerated p50 ratio vs libp2p-kad / vs kadence "
          "| recall accelerated / kadence / libp2p-kad | provide p50 (ms) accelerated / kadence / libp2p-kad "
          "| find-providers to the provider p50 (ms) | placement mean "
          "| accelerated share: lookups / provides / finds "
          "| crawl s mean / max | crawl requests / KiB (network) per crawl "
          "| connections open at once per node in a crawl, mean / max | full-table peers per node "
          "| full table bytes per peer / KiB per node | heap peak per node (KiB) "
          "| CPU per lookup ratio vs libp2p-kad / vs kadence | revision |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(accel))
PY
}

case "${1:-}" in
  --list)
    total=0
    while IFS='|' read -r name args minutes; do
      selected "$name" || continue
      total=$((total + minutes))
      echo "$name (~${minutes} min): cargo bench --bench network -- $COMMON $args"
    done < <(rows)
    echo "estimated total: ~${total} min"
    exit 0
    ;;
  --summary)
    summary
    exit 0
    ;;
  "") ;;
  *)
    echo "usage: $0 [--list|--summary]" >&2
    exit 2
    ;;
esac

total=0
while IFS='|' read -r name _ minutes; do
  selected "$name" && total=$((total + minutes))
done < <(rows)
available_gib=$(awk '/MemAvailable/ {printf "%d", $2 / 1048576}' /proc/meminfo)
echo "table: estimated ~${total} min; ${available_gib} GiB of memory available"
if [ "$available_gib" -lt 16 ] && rows | cut -d'|' -f1 | grep -q '^500-' && { [ -z "${ROWS:-}" ] || [[ " $ROWS" == *" 500-"* ]]; }; then
  # Measured at 40 and 200 nodes: ~48 KiB per connection end, and libp2p-kad's bootstrap
  # connects nearly every pair, so ~13 GiB at 500 nodes.
  echo "table: WARNING: libp2p-kad's 500-node runs hold ~13 GiB at their peak" >&2
fi

cargo bench --bench network --no-run
started=$(date +%s)
while IFS='|' read -r name args minutes; do
  selected "$name" || continue
  echo
  echo "== $name (~${minutes} min), $(( ($(date +%s) - started) / 60 )) min in"
  # shellcheck disable=SC2086 # the arguments are words on purpose
  cargo bench --bench network -- $COMMON $args </dev/null 2>&1 | tee "$OUT/table-$name.log"
done < <(rows)
echo
echo "table: done in $(( ($(date +%s) - started) / 60 )) min"
echo
summary
