#!/bin/bash
# make fuzz: builds every cargo-fuzz project of the repository and runs each
# target for FUZZ_SECONDS (default 600) with FUZZ_JOBS targets at a time
# (default 1), seeded from the test vectors where a corpus exists. Writes a
# table (runs, coverage, crashes) to fuzz/last-run.md and fails if any target
# crashed, leaked or timed out.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-1}
projects="store/fuzz cpg/fuzz ipc/fuzz rrd/fuzz fsproto/fuzz"
export RUSTC_BOOTSTRAP=1 # cargo-fuzz needs -Zsanitizer; stable Rust with this works

cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
out=$(mktemp -d /tmp/pmxcfs-fuzz.XXXXXX)
targets=()
for project in $projects; do
    (cd "$project" && cargo fuzz build -O >"$out/build-${project%%/*}.log" 2>&1) || {
        echo "build of $project failed: $out/build-${project%%/*}.log" >&2
        exit 1
    }
    for target in $(cd "$project" && cargo fuzz list); do
        targets+=("$project:$target")
    done
done

run_one() {
    local project=${1%%:*} target=${1##*:}
    local log="$out/${project%%/*}-$target.log"
    mkdir -p "$root/$project/corpus/$target"
    (cd "$root/$project" && cargo fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1) && echo ok >"$log.status" || echo failed >"$log.status"
}

running=0
for entry in "${targets[@]}"; do
    run_one "$entry" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

failed=0
{
    echo "# Last \`make fuzz\` run"
    echo
    echo "$(date -u +%Y-%m-%d), ${seconds} s per target, ${jobs} at a time on $(nproc) CPUs."
    echo
    echo "| project | target | runs | coverage (edges) | result |"
    echo "|---|---|---|---|---|"
    for entry in "${targets[@]}"; do
        project=${entry%%:*} target=${entry##*:}
        log="$out/${project%%/*}-$target.log"
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
        status=$(cat "$log.status")
        [ "$status" = ok ] || failed=1
        echo "| $project | $target | ${runs:-?} | ${cov:-?} | $status |"
    done
} >fuzz/last-run.md
cat fuzz/last-run.md
echo "logs: $out"
exit $failed
