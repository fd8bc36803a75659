#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer).
#
#   ./scripts/fuzz.sh            each target for a fixed number of inputs from a fixed
#                                seed: the bounded, repeatable run the test command makes
#   ./scripts/fuzz.sh long [S]   each target for S seconds (default 3600), keeping what
#                                it finds in fuzz/corpus/ (docs/testing.md)
#
# cargo-fuzz is installed from crates.io when missing. Its builds use unstable rustc
# flags, which RUSTC_BOOTSTRAP=1 allows on this stable toolchain. No sanitizer: the
# code is safe Rust, and what the targets look for are panics (overflow and bounds
# checks stay on: cargo-fuzz builds with debug assertions).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

# Target and how many inputs the bounded run tries: about 15 s each on a 2-core machine.
targets=(
    "record_batch 500000"
    "request_frame 3000000"
    "response_frame 2500000"
    "controller_frame 1000000"
    "segment_recovery 10000"
    "plugin_answer 2000000"
)

cargo fuzz build --sanitizer none --fuzz-dir fuzz

mode="${1:-bounded}"
for entry in "${targets[@]}"; do
    read -r target runs <<<"$entry"
    if [ "$mode" = long ]; then
        cargo fuzz run --sanitizer none --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
            -max_total_time="${2:-3600}" -rss_limit_mb=2048
    else
        # A scratch copy of the committed seeds, so the run neither changes the tree nor
        # depends on what earlier runs found; a fixed seed and count make it repeatable.
        scratch="$(mktemp -d)"
        cp -r "fuzz/corpus/$target/." "$scratch/"
        log="$scratch.log"
        echo "fuzz.sh: $target, $runs inputs"
        if ! cargo fuzz run --sanitizer none --fuzz-dir fuzz "$target" "$scratch" -- \
            -runs="$runs" -seed=1 -max_total_time=120 -rss_limit_mb=2048 \
            -artifact_prefix="$PWD/fuzz/artifacts/$target-" >"$log" 2>&1; then
            grep -E 'panicked|SUMMARY|Test unit' "$log" >&2 || tail -n 20 "$log" >&2
            echo "fuzz.sh: $target found a failing input (fuzz/artifacts/); reproduce with" \
                "RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --fuzz-dir fuzz $target FILE" >&2
            rm -rf "$scratch" "$log"
            exit 1
        fi
        grep -E '^Done' "$log" || true
        rm -rf "$scratch" "$log"
    fi
done
