#!/usr/bin/env bash
# Builds plugins for wasm32: every example (or the ones named: ./build.sh regex-filter)
# into dist/<name>.wasm, and plugin project folders given by path (./build.sh
# ../my-filter, as `quiver plugin init` writes them) into <folder>/<name>.wasm.
#
# What a folder holds decides how it is built:
# - Cargo.toml: Rust, for wasm32-unknown-unknown. Examples are members of this
#   workspace (built with --locked); a project folder is a workspace of its own.
#   Toolchain: rustup's wasm32-unknown-unknown target when it is installed (a user's
#   laptop: `rustup target add wasm32-unknown-unknown`); otherwise Debian's Rust
#   (rustc-web, cargo-web, rust-web-src, lld-22), which builds std for wasm32 from
#   source with -Zbuild-std, as /work/shared/WASM-TOOLCHAIN.md describes.
# - *.c and no Cargo.toml: C without libc, compiled by clang --target=wasm32 and linked
#   by wasm-ld (Debian's clang-22 and lld-22). The module is named after the one .c
#   file (after the folder when there are several).
# - *.wat and neither of the above: nothing to build; the broker takes the text format.
# If a toolchain is missing and this runs as root with apt-get, it installs the Debian
# packages; otherwise it stops and says what to install.
#
# Each Rust example is built on its own (-p), not all in one cargo call: cargo would
# unify quiver-plugin's features across them, and pii-redact must stay no_std. Set
# CARGO_TARGET_DIR to share one target directory between project folders (std for
# wasm32 and the SDK are then compiled once).
# Nothing changed means nothing rebuilt and dist/ untouched.
set -euo pipefail

caller_dir="$PWD"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

target=wasm32-unknown-unknown
debian_packages=(rustc-web cargo-web rust-web-src lld-22)
c_packages=(clang-22 lld-22)
target_dir="${CARGO_TARGET_DIR:-$here/target}"
dist="$here/dist"

die() {
    echo "build.sh: $*" >&2
    exit 1
}

# What to build: example names (folders under examples/) and project folders (paths,
# taken relative to where this script was started).
examples=()
projects=()
if (($# > 0)); then
    for arg in "$@"; do
        if [[ "$arg" != */* && -d "examples/$arg" ]]; then
            examples+=("$arg")
        elif [[ -d "$caller_dir/$arg" || ( "$arg" == /* && -d "$arg" ) ]]; then
            [[ "$arg" == /* ]] || arg="$caller_dir/$arg"
            projects+=("$(cd "$arg" && pwd)")
        else
            die "'$arg' is neither an example in $here/examples nor a project folder"
        fi
    done
else
    for dir in examples/*/; do
        examples+=("$(basename "$dir")")
    done
fi
((${#examples[@]} + ${#projects[@]} > 0)) || die "no examples found under $here/examples"

# The language of the plugin in folder $1: rust, c or wat.
language_of() {
    local dir="$1"
    if [[ -f "$dir/Cargo.toml" ]]; then
        echo rust
    elif compgen -G "$dir/*.c" >/dev/null; then
        echo c
    elif compgen -G "$dir/*.wat" >/dev/null; then
        echo wat
    else
        die "$dir holds no Cargo.toml, *.c or *.wat: not a plugin"
    fi
}

# The module name of the C plugin in folder $1: its one .c file's, else the folder's.
c_module_name() {
    local sources=("$1"/*.c)
    if ((${#sources[@]} == 1)); then
        basename "${sources[0]}" .c
    else
        basename "$1"
    fi
}

need_rust=false
need_c=false
for dir in "${examples[@]/#/$here/examples/}" "${projects[@]}"; do
    case "$(language_of "$dir")" in
        rust) need_rust=true ;;
        c) need_c=true ;;
    esac
done

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

# A wasm-ld for clang: rust-lld is a multi-flavour binary clang cannot drive.
find_c_wasm_ld() {
    local found
    if found="$(command -v wasm-ld 2>/dev/null)" || found="$(command -v wasm-ld-22 2>/dev/null)"; then
        echo "$found"
        return 0
    fi
    found="$(printf '%s\n' /usr/lib/llvm-*/bin/wasm-ld | sort -V | tail -n 1)"
    [[ -x "$found" ]] && echo "$found"
}

find_clang() {
    local found
    for name in clang clang-22; do
        if found="$(command -v "$name" 2>/dev/null)"; then
            echo "$found"
            return 0
        fi
    done
    found="$(printf '%s\n' /usr/lib/llvm-*/bin/clang | sort -V | tail -n 1)"
    [[ -x "$found" ]] && echo "$found"
}

c_ready() {
    find_clang >/dev/null && find_c_wasm_ld >/dev/null
}

install_c_toolchain() {
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
        die "no clang and wasm-ld for C plugins. Install them (as root):
    apt-get install --no-install-recommends ${c_packages[*]}"
    fi
    echo "build.sh: installing ${c_packages[*]} (clang and wasm-ld, for C plugins)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${c_packages[@]}"
    c_ready || die "installed ${c_packages[*]}, but clang or wasm-ld is still missing"
}

toolchain=""
if $need_rust; then
    if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        toolchain="rustup ($(rustc --version))"
        debian_rust=false
    else
        debian_ready || install_debian_toolchain
        wasm_ld="$(find_wasm_ld)"
        toolchain="Debian $(/usr/bin/rustc --version) with -Zbuild-std, linker $wasm_ld"
        debian_rust=true
    fi
fi
if $need_c; then
    c_ready || install_c_toolchain
    clang="$(find_clang)"
    c_wasm_ld="$(find_c_wasm_ld)"
    toolchain="${toolchain:+$toolchain; }$("$clang" --version | head -n 1), linker $c_wasm_ld"
fi

# cargo build for wasm32 with the toolchain chosen above; the arguments are cargo's.
cargo_wasm() {
    if $debian_rust; then
        # RUSTC_BOOTSTRAP unlocks -Zbuild-std on this stable compiler: std for wasm32
        # is compiled from rust-web-src, since no prebuilt one is installed.
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$wasm_ld" \
            RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
            /usr/bin/cargo build --release --target "$target" \
            -Zbuild-std=std,panic_abort "$@"
    else
        cargo build --release --target "$target" "$@"
    fi
}

# Compiles the C files of folder $1 into module $2. No libc: -nostdlib, and bulk
# memory so that copies and fills are instructions, not calls to memcpy/memset.
build_c() {
    local sources=("$1"/*.c)
    "$clang" --target=wasm32 -O2 -nostdlib -mbulk-memory -Wall -Wextra -Werror -Wno-unused-command-line-argument \
        --ld-path="$c_wasm_ld" -Wl,--no-entry -Wl,--strip-all -o "$2.tmp" "${sources[@]}"
    # Replace only what changed, so an unchanged module keeps its mtime.
    if cmp -s "$2.tmp" "$2"; then rm -f "$2.tmp"; else mv "$2.tmp" "$2"; fi
}

# Copies a built module to $2 only when it changed.
publish() {
    [[ -f "$1" ]] || die "the build left no $1"
    cmp -s "$1" "$2" || cp "$1" "$2"
}

[[ -n "$toolchain" ]] && echo "build.sh: toolchain: $toolchain"
started=$SECONDS
built=()
mkdir -p "$dist"
for name in "${examples[@]}"; do
    case "$(language_of "examples/$name")" in
        rust)
            cargo_wasm --locked -p "$name"
            publish "$target_dir/$target/release/${name//-/_}.wasm" "$dist/$name.wasm"
            built+=("$dist/$name.wasm")
            ;;
        c)
            build_c "$here/examples/$name" "$dist/$(c_module_name "examples/$name").wasm"
            built+=("$dist/$(c_module_name "examples/$name").wasm")
            ;;
        wat) echo "build.sh: examples/$name is WAT: nothing to build" ;;
    esac
done
for dir in "${projects[@]}"; do
    case "$(language_of "$dir")" in
        rust)
            package="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$dir/Cargo.toml" | head -n 1)"
            [[ -n "$package" ]] || die "$dir/Cargo.toml names no package"
            # A project is a workspace of its own; without CARGO_TARGET_DIR it builds
            # into its own target/.
            project_target="${CARGO_TARGET_DIR:-$dir/target}"
            (cd "$dir" && cargo_wasm)
            publish "$project_target/$target/release/${package//-/_}.wasm" "$dir/$package.wasm"
            built+=("$dir/$package.wasm")
            ;;
        c)
            build_c "$dir" "$dir/$(c_module_name "$dir").wasm"
            built+=("$dir/$(c_module_name "$dir").wasm")
            ;;
        wat)
            echo "build.sh: $dir is WAT: nothing to build (the broker takes the text format)"
            ;;
    esac
done

echo "build.sh: built in $((SECONDS - started)) s:"
for module in "${built[@]}"; do
    printf '  %-40s %9d bytes\n' "${module#"$caller_dir"/}" "$(wc -c <"$module")"
done
