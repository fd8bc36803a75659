#!/usr/bin/env bash
# Runs Quiver's whole test suite from a fresh clone: installs what the tests need when
# it is missing, builds, checks formatting and lints, then runs every test.
#
#   ./scripts/test.sh            everything
#   ./scripts/test.sh -E 'test(recovery)'   extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

# Rust toolchain: rustup's, as pinned by rust-version in Cargo.toml.
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "cargo not found: install Rust 1.95+ from https://rustup.rs" >&2
        exit 1
    fi
fi

# cargo-nextest runs test binaries in parallel processes; fall back to cargo test.
runner=(cargo test --workspace)
if cargo nextest --version >/dev/null 2>&1; then
    runner=(cargo nextest run --workspace --no-fail-fast)
fi

# Prometheus and promtool: the observability test runs every dashboard and alert
# expression against a real Prometheus (Debian's package).
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing prometheus (for the observability test)"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
    else
        echo "promtool not found: install Debian's prometheus package" \
            "(sudo apt-get install --no-install-recommends prometheus)" >&2
        exit 1
    fi
fi

# ip (iproute2) and unshare (util-linux): the security suite runs a broker on a
# routable address inside a network namespace of its own, and the faults suite puts
# each broker of a cluster in one (ip netns, veth, a bridge).
if ! command -v ip >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing iproute2 and util-linux (for the security suite)"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 util-linux
    else
        echo "ip or unshare not found: install Debian's iproute2 and util-linux" >&2
        exit 1
    fi
fi

# The example plugins, built for wasm32 from source: the black-box plugin tests load
# plugins/dist/*.wasm. build.sh uses rustup's wasm32 target when installed, else
# Debian's Rust toolchain, and clang with wasm-ld for the C example (Debian's
# clang-22 and lld-22); it installs what is missing when running as root. The plugin
# suite later runs build.sh again on projects `quiver plugin init` writes (every kind
# in Rust, C and WAT), sharing plugins/target with this build.
say "example plugins (wasm32)"
./plugins/build.sh

say "formatting"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

say "build (the black-box tests start target/debug/quiver)"
cargo build --workspace --all-targets --locked

say "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "plugin guest SDK and examples (native unit tests)"
(cd plugins && cargo clippy --workspace --all-targets --locked -- -D warnings && cargo test --workspace --locked)

say "tests"
"${runner[@]}" "$@"

# The decoders under arbitrary bytes: each fuzz target for a fixed number of inputs
# from a fixed seed (scripts/fuzz.sh; about 15 s each, plus the first build).
say "fuzz targets (bounded)"
./scripts/fuzz.sh

if [ "${runner[1]}" = "nextest" ]; then
    # nextest does not run doc tests.
    say "doc tests"
    cargo test --workspace --doc --locked
fi
