#!/usr/bin/env bash
# Runs the workload's scenarios (bench/WORKLOAD.md) on evoq, the floor and cqrs-es in
# one session, alternating the peers run by run, then prints the medians as a markdown table.
#
#   bash bench/compare.sh [RUNS] [OUT]     (default: 5 runs, bench-results.jsonl)
#
# cqrs-es takes about 40 s per run of scenario b (its MemStore re-reads and copies the whole
# stream twice per command): it runs b in the first CQRS_B_RUNS rounds only (default 3).
#
# Needs jq. Every line of OUT is the workload's JSON line with the scenario name added
# (`"scenario":"a64"`); a run that fails its checks prints no line and is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
OUT="${2:-bench-results.jsonl}"
CQRS_B_RUNS="${CQRS_B_RUNS:-3}"

cargo build --release -q -p evoq-bench
cargo build --release -q --manifest-path bench/cqrs-es/Cargo.toml
EVOQ=./target/release/evoq-bench
CQRS=./bench/cqrs-es/target/release/evoq-bench-cqrs-es

declare -A SIZE=(
  [a2]="--accounts 1000 --commands-per-account 100 --concurrency 2"
  [a64]="--accounts 1000 --commands-per-account 100 --concurrency 64"
  [b]="--accounts 10 --commands-per-account 10000 --concurrency 2"
  [c2]="--accounts 100000 --commands-per-account 5 --concurrency 2"
  [c64]="--accounts 100000 --commands-per-account 5 --concurrency 64"
)
SCENARIOS=(a2 a64 b c2 c64)

: > "$OUT"
record() { # scenario, command...
  local scenario="$1"
  shift
  local line
  if line=$("$@" --store memory); then
    jq -c --arg s "$scenario" '. + {scenario: $s}' <<< "$line" >> "$OUT"
  else
    echo "run failed: $scenario $*" >&2
  fi
}

for run in $(seq "$RUNS"); do
  echo "round $run of $RUNS" >&2
  for scenario in "${SCENARIOS[@]}"; do
    # shellcheck disable=SC2086
    record "$scenario" $EVOQ --peer evoq ${SIZE[$scenario]}
    # shellcheck disable=SC2086
    record "$scenario" $EVOQ --peer floor ${SIZE[$scenario]}
    if [[ "$scenario" != b || "$run" -le "$CQRS_B_RUNS" ]]; then
      # shellcheck disable=SC2086
      record "$scenario" $CQRS ${SIZE[$scenario]}
    fi
  done
  # Telemetry: evoq with a tracing subscriber at INFO, next to the runs without.
  # shellcheck disable=SC2086
  record a64-telemetry $EVOQ --peer evoq --telemetry ${SIZE[a64]}
  # shellcheck disable=SC2086
  record a64-no-telemetry $EVOQ --peer evoq ${SIZE[a64]}
done

jq -rs '
  def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
  group_by(.scenario + "/" + .peer)
  | map({
      scenario: .[0].scenario, peer: .[0].peer, runs: length,
      cmds: (map(.cmds_per_sec) | median),
      p50: (map(.p50_us) | median), p99: (map(.p99_us) | median),
      rss: (map(.peak_rss_kb) | median),
      first: (map(.mean_us_by_stream_decile[0]) | median),
      last: (map(.mean_us_by_stream_decile[9]) | median)
    })
  | (["scenario", "peer", "runs", "cmds/s", "p50 µs", "p99 µs", "peak RSS KiB",
      "decile 1 µs", "decile 10 µs"] | "| " + join(" | ") + " |"),
    "|---|---|---|---|---|---|---|---|---|",
    (.[] | "| \(.scenario) | \(.peer) | \(.runs) | \(.cmds) | \(.p50) | \(.p99) | \(.rss) | \(.first) | \(.last) |")
' "$OUT"
