#!/usr/bin/env bash
# Builds every example plugin (or the ones named: ./build.sh regex-filter) into
# dist/<crate>.wasm for wasm32-unknown-unknown.
#
# Toolchain: rustup's wasm32-unknown-unknown target when it is installed (a user's
# laptop: `rustup target add wasm32-unknown-unknown`); otherwise Debian's Rust
# (rustc-web, cargo-web, rust-web-src, lld-22), which builds std for wasm32 from source
# with -Zbuild-std, as /work/shared/WASM-TOOLCHAIN.md describes. If neither is there
# and this runs as root with apt-get, it installs the Debian packages; otherwise it
# stops and says what to install.
#
# Each example is built on its own (-p), not all in one cargo call: cargo would unify
# quiver-plugin's features across them, and pii-redact must stay no_std.
# Nothing changed means nothing rebuilt and dist/ untouched.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

target=wasm32-unknown-unknown
debian_packages=(rustc-web cargo-web rust-web-src lld-22)
target_dir="${CARGO_TARGET_DIR:-$here/target}"
dist="$here/dist"

die() {
    echo "build.sh: $*" >&2
    exit 1
}

# The example crates to build: the arguments, or every examples/*/Cargo.toml.
examples=()
if (($# > 0)); then
    for name in "$@"; do
        [[ -f "examples/$name/Cargo.toml" ]] || die "no example called '$name' in $here/examples"
        examples+=("$name")
    done
else
    for manifest in examples/*/Cargo.toml; do
        examples+=("$(basename "$(dirname "$manifest")")")
    done
fi
((${#examples[@]} > 0)) || die "no examples found under $here/examples"

# wasm-ld for Debian's rustc, which does not ship the rust-lld that the wasm32 target
# names by default.
find_wasm_ld() {
    local found
    if found="$(command -v rust-lld 2>/dev/null)" || found="$(command -v wasm-ld 2>/dev/null)"; then
        echo "$found"
        return 0
    fi
    found="$(printf '%s\n' /usr/lib/llvm-*/bin/wasm-ld | sort -V | tail -n 1)"
    [[ -x "$found" ]] && echo "$found"
}

debian_ready() {
    [[ -x /usr/bin/rustc && -x /usr/bin/cargo && -d /usr/lib/rustlib/src/rust/library ]] &&
        find_wasm_ld >/dev/null
}

install_debian_toolchain() {
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
        die "no Rust toolchain for $target. Either run
    rustup target add $target
or install Debian's toolchain (as root):
    apt-get install --no-install-recommends ${debian_packages[*]}"
    fi
    echo "build.sh: installing ${debian_packages[*]} (Debian's Rust with std sources, and wasm-ld)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${debian_packages[@]}"
    debian_ready || die "installed ${debian_packages[*]}, but /usr/bin/rustc, the std sources or wasm-ld are still missing"
}

if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    toolchain="rustup ($(rustc --version))"
    build() {
        cargo build --release --locked --target "$target" -p "$1"
    }
else
    debian_ready || install_debian_toolchain
    wasm_ld="$(find_wasm_ld)"
    toolchain="Debian $(/usr/bin/rustc --version) with -Zbuild-std, linker $wasm_ld"
    build() {
        # RUSTC_BOOTSTRAP unlocks -Zbuild-std on this stable compiler: std for wasm32
        # is compiled from rust-web-src, since no prebuilt one is installed.
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$wasm_ld" \
            RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
            /usr/bin/cargo build --release --locked --target "$target" \
            -Zbuild-std=std,panic_abort -p "$1"
    }
fi

echo "build.sh: toolchain: $toolchain"
started=$SECONDS
mkdir -p "$dist"
for name in "${examples[@]}"; do
    build "$name"
    built="$target_dir/$target/release/${name//-/_}.wasm"
    [[ -f "$built" ]] || die "cargo built $name but $built is missing"
    # Copy only what changed, so an unchanged module keeps its mtime.
    cmp -s "$built" "$dist/$name.wasm" || cp "$built" "$dist/$name.wasm"
done

echo "build.sh: built in $((SECONDS - started)) s:"
for name in "${examples[@]}"; do
    printf '  %-28s %9d bytes\n' "dist/$name.wasm" "$(wc -c <"$dist/$name.wasm")"
done
