//! `quiver plugin init`: writes a new plugin project, in Rust, C or WAT, for one of
//! the four kinds of ABI v1. Every project builds as written (`plugins/build.sh DIR`
//! in a Quiver checkout, or the commands its README gives) and passes
//! `quiver plugin test` on the sample input it comes with.
//!
//! The sources are templates in `runtime/cli/scaffold/`, compiled into the binary.
//! What each kind does is the same in every language, so the sample gives the same
//! output whichever language a project is in:
//! - filter: keeps records whose value starts with the parameter `prefix` (`ERROR`);
//! - map: upper-cases each value;
//! - filter-map: drops records with a missing or empty value, upper-cases the others;
//! - array-map: one record per comma-separated part of each value.
//!
//! What this does not do: overwrite anything (a directory that exists must be empty,
//! and each file is created new), or fetch the Rust guest SDK: a Rust project depends
//! on a Quiver checkout's `plugins/guest` by path.

use std::fmt;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

/// The longest plugin name `init` accepts.
const NAME_CHARS_MAX: usize = 64;

/// The kinds of plugin ABI v1 has, as the CLI names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaffoldKind {
    Filter,
    Map,
    FilterMap,
    ArrayMap,
}

impl ScaffoldKind {
    /// The transformation's export name, which also names its template files.
    fn export(self) -> &'static str {
        match self {
            ScaffoldKind::Filter => "filter",
            ScaffoldKind::Map => "map",
            ScaffoldKind::FilterMap => "filter_map",
            ScaffoldKind::ArrayMap => "array_map",
        }
    }

    /// What the generated plugin does, for its README.
    fn does(self) -> &'static str {
        match self {
            ScaffoldKind::Filter => {
                "keeps the records whose value starts with the parameter `prefix` \
                 (`ERROR` when the attachment gives no parameters)"
            }
            ScaffoldKind::Map => {
                "upper-cases every record's value (ASCII letters); keys, headers and \
                 timestamps stay as they are"
            }
            ScaffoldKind::FilterMap => {
                "drops the records whose value is missing or empty, and upper-cases the \
                 value of the others (ASCII letters)"
            }
            ScaffoldKind::ArrayMap => {
                "splits each record's value at every comma: one record per part, with \
                 the key, headers and timestamp of the record it came from"
            }
        }
    }

    /// What `quiver plugin test --format json --input sample.jsonl` prints.
    pub fn sample_output(self) -> &'static str {
        match self {
            ScaffoldKind::Filter => include_str!("../scaffold/expected/filter.jsonl"),
            ScaffoldKind::Map => include_str!("../scaffold/expected/map.jsonl"),
            ScaffoldKind::FilterMap => include_str!("../scaffold/expected/filter_map.jsonl"),
            ScaffoldKind::ArrayMap => include_str!("../scaffold/expected/array_map.jsonl"),
        }
    }
}

impl fmt::Display for ScaffoldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScaffoldKind::Filter => "filter",
            ScaffoldKind::Map => "map",
            ScaffoldKind::FilterMap => "filter-map",
            ScaffoldKind::ArrayMap => "array-map",
        })
    }
}

/// The languages `init` writes projects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust with Quiver's guest SDK (crate quiver-plugin).
    Rust,
    /// C for clang --target=wasm32, no libc.
    C,
    /// The WebAssembly text format, uploaded as is.
    Wat,
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Rust => "Rust",
            Language::C => "C",
            Language::Wat => "WAT",
        })
    }
}

const SAMPLE: &str = include_str!("../scaffold/sample.jsonl");

const RUST_MANIFEST: &str = include_str!("../scaffold/rust/Cargo.toml");
const C_COMMON: &str = include_str!("../scaffold/c/common.c");
const WAT_COMMON: &str = include_str!("../scaffold/wat/common.wat");

fn rust_source(kind: ScaffoldKind) -> &'static str {
    match kind {
        ScaffoldKind::Filter => include_str!("../scaffold/rust/filter.rs"),
        ScaffoldKind::Map => include_str!("../scaffold/rust/map.rs"),
        ScaffoldKind::FilterMap => include_str!("../scaffold/rust/filter_map.rs"),
        ScaffoldKind::ArrayMap => include_str!("../scaffold/rust/array_map.rs"),
    }
}

fn c_source(kind: ScaffoldKind) -> &'static str {
    match kind {
        ScaffoldKind::Filter => include_str!("../scaffold/c/filter.c"),
        ScaffoldKind::Map => include_str!("../scaffold/c/map.c"),
        ScaffoldKind::FilterMap => include_str!("../scaffold/c/filter_map.c"),
        ScaffoldKind::ArrayMap => include_str!("../scaffold/c/array_map.c"),
    }
}

fn wat_source(kind: ScaffoldKind) -> &'static str {
    match kind {
        ScaffoldKind::Filter => include_str!("../scaffold/wat/filter.wat"),
        ScaffoldKind::Map => include_str!("../scaffold/wat/map.wat"),
        ScaffoldKind::FilterMap => include_str!("../scaffold/wat/filter_map.wat"),
        ScaffoldKind::ArrayMap => include_str!("../scaffold/wat/array_map.wat"),
    }
}

/// Checks a plugin name: it becomes a directory, a file name and a Rust crate name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !starts_with_letter || !rest_ok || name.len() > NAME_CHARS_MAX {
        bail!(
            "plugin name `{name}` is not usable: use lowercase letters, digits, `-` and `_`, \
             starting with a letter, at most {NAME_CHARS_MAX} characters"
        );
    }
    Ok(())
}

/// Refuses a directory that exists and is not empty (or is not a directory).
fn check_dir_free(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", dir.display())),
        Ok(meta) if !meta.is_dir() => bail!("{} exists and is not a directory", dir.display()),
        Ok(_) => {
            let mut entries =
                std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{} exists and is not empty: plugin init writes only into a new or empty \
                     directory",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

/// Whether `dir` holds the guest SDK's manifest (crate `quiver-plugin`).
fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|manifest| {
        manifest
            .lines()
            .any(|l| l.trim() == "name = \"quiver-plugin\"")
    })
}

/// Where the guest SDK is, and whether it was found above the project (then the
/// project refers to it by a relative path, and moves with its checkout).
fn find_sdk(project: &Path, given: Option<&Path>) -> anyhow::Result<(PathBuf, bool)> {
    if let Some(given) = given {
        if !is_sdk(given) {
            bail!(
                "--sdk {}: no Cargo.toml of crate quiver-plugin there; give the plugins/guest \
                 folder of a Quiver checkout",
                given.display()
            );
        }
        return Ok((given.to_path_buf(), false));
    }
    for ancestor in project.ancestors().skip(1) {
        for candidate in [
            ancestor.join("plugins").join("guest"),
            ancestor.join("guest"),
        ] {
            if is_sdk(&candidate) {
                return Ok((candidate, true));
            }
        }
    }
    // The checkout this binary was built from, when it is still there.
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/guest");
    if is_sdk(&built_from) {
        return Ok((built_from, false));
    }
    bail!(
        "cannot find Quiver's guest SDK (crate quiver-plugin, the plugins/guest folder of a \
         Quiver checkout) above {}: pass --sdk PATH",
        project.display()
    )
}

/// `to` as seen from the directory `from`; both absolute and free of `..`.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

/// Writes the project for plugin `name` into `dir` (created if missing, refused if
/// not empty). Returns the files written, relative to `dir`.
pub fn write(
    name: &str,
    kind: ScaffoldKind,
    lang: Language,
    dir: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<Vec<String>> {
    check_name(name)?;
    check_dir_free(dir)?;
    let absolute = std::env::current_dir()
        .context("cannot read the current directory")?
        .join(dir);
    // Found before anything is written, so a failure leaves nothing behind.
    let sdk = match lang {
        Language::Rust => Some(find_sdk(&absolute, sdk)?),
        Language::C | Language::Wat => None,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let project = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let fill = |template: &str| template.replace("{{name}}", name);
    let mut files: Vec<(String, String)> = Vec::new();
    match lang {
        Language::Rust => {
            let (sdk, above) = sdk.context("a Rust project has an SDK")?;
            let sdk = sdk
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", sdk.display()))?;
            let sdk_path = if above { relative(&project, &sdk) } else { sdk };
            let sdk_path = sdk_path
                .to_str()
                .with_context(|| format!("the SDK's path {} is not UTF-8", sdk_path.display()))?;
            let manifest = fill(RUST_MANIFEST).replace(
                "{{sdk}}",
                &toml::Value::String(sdk_path.to_owned()).to_string(),
            );
            files.push(("Cargo.toml".into(), manifest));
            files.push(("src/lib.rs".into(), fill(rust_source(kind))));
            files.push((".gitignore".into(), format!("/target\n/{name}.wasm\n")));
        }
        Language::C => {
            files.push((
                format!("{name}.c"),
                fill(&format!("{C_COMMON}{}", c_source(kind))),
            ));
            files.push((".gitignore".into(), format!("/{name}.wasm\n")));
        }
        Language::Wat => {
            files.push((
                format!("{name}.wat"),
                fill(&format!("{WAT_COMMON}{}", wat_source(kind))),
            ));
        }
    }
    files.push(("sample.jsonl".into(), SAMPLE.into()));
    files.push(("README.md".into(), readme(name, kind, lang)));
    for (file, text) in &files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        out.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(files.into_iter().map(|(file, _)| file).collect())
}

/// The project's README: what the plugin does, how to build, test and run it.
fn readme(name: &str, kind: ScaffoldKind, lang: Language) -> String {
    let module = match lang {
        Language::Rust | Language::C => format!("{name}.wasm"),
        Language::Wat => format!("{name}.wat"),
    };
    let crate_file = name.replace('-', "_");
    let build = match lang {
        Language::Rust => format!(
            "In a Quiver checkout, `plugins/build.sh` builds a project folder given by its path \
(it uses rustup's `wasm32-unknown-unknown` target when installed, otherwise Debian's Rust \
toolchain, and copies the module to `{module}` here):

```sh
path/to/quiver/plugins/build.sh .
```

Anywhere, with rustup:

```sh
rustup target add wasm32-unknown-unknown     # once
cargo build --release --target wasm32-unknown-unknown
cp target/wasm32-unknown-unknown/release/{crate_file}.wasm {module}
```

Without rustup, Debian's Rust builds the standard library for wasm32 from source:

```sh
apt-get install --no-install-recommends rustc-web cargo-web rust-web-src lld-22   # once
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \\
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/llvm-22/bin/wasm-ld \\
  /usr/bin/cargo build --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort
cp target/wasm32-unknown-unknown/release/{crate_file}.wasm {module}
```

`cargo test` runs the unit tests in `src/lib.rs` natively.

## The SDK

`Cargo.toml` depends on Quiver's guest SDK, crate `quiver-plugin`, by path: the
`plugins/guest` folder of a Quiver checkout. `quiver plugin init` wrote the path of the
checkout it found above this folder (a relative path, so the two move together), else
of the checkout the `quiver` binary was built from, or the one given with `--sdk`.
Moving the project elsewhere: point `path` at any Quiver checkout's `plugins/guest`, or
copy that folder next to the project. The SDK's documentation: `cargo doc --open -p
quiver-plugin`; the contract it implements: `plugins/ABI.md`.
"
        ),
        Language::C => format!(
            "In a Quiver checkout, `plugins/build.sh` builds a project folder given by its path \
(with clang, installing Debian's `clang-22` and `lld-22` when missing and run as root):

```sh
path/to/quiver/plugins/build.sh .
```

Anywhere, with clang and wasm-ld (Debian: `apt-get install clang-22 lld-22`, then
`clang-22` for `clang`):

```sh
clang --target=wasm32 -O2 -nostdlib -mbulk-memory -Wl,--no-entry -o {module} {name}.c
```

No C library: `{name}.c` reads the host's input and writes its answer itself, as
`plugins/ABI.md` (in a Quiver checkout) describes.
"
        ),
        Language::Wat => format!(
            "Nothing to build: the broker and `quiver plugin test` take the text format as \
it is. `{module}` implements `plugins/ABI.md` (in a Quiver checkout) by hand. To get a
binary module anyway: `wat2wasm {module}` (Debian package `wabt`).
"
        ),
    };
    let kind_export = kind.export();
    let output = kind.sample_output();
    format!(
        "# {name}

A Quiver `{kind_export}` plugin in {lang}: it {does}.

## Build

{build}
## Try it without a broker

`sample.jsonl` holds four records, one JSON object a line (`key`, `value`, `headers`,
`timestamp`; every field optional). With `--format json` the records that come out are
printed the same way, each with the offset of the input record it came from:

```sh
quiver plugin test {module} --format json --input sample.jsonl
```

prints

```
{output}```

Plain lines work too, each line a record's value:

```sh
printf 'ERROR disk full\\nINFO ok\\n' | quiver plugin test {module}
```

## Run it on a broker

```sh
quiver plugin upload {name} {module}
quiver topic create logs
quiver plugin attach logs {name} --stage fetch
printf 'ERROR disk full\\nINFO ok\\n' | quiver produce logs --header host=a1
quiver consume logs --from-beginning --format json --timeout 2000
```

At `--stage fetch` the plugin changes what consumers receive and the log keeps every
record; at `--stage produce` it changes what is stored. Parameters go to the plugin's
`init` with `--param key=value` on `plugin attach` or `plugin test`.
",
        does = kind.does(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_usable_as_files_and_crates() {
        assert!(check_name("errors-only").is_ok());
        assert!(check_name("a1_b").is_ok());
        for bad in ["", "1abc", "Upper", "a/b", "a b", "../x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "`{bad}` accepted");
        }
    }

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        assert_eq!(
            relative(Path::new("/r/a/b"), Path::new("/r/plugins/guest")),
            PathBuf::from("../../plugins/guest")
        );
        assert_eq!(
            relative(Path::new("/r"), Path::new("/r/plugins/guest")),
            PathBuf::from("plugins/guest")
        );
    }

    #[test]
    fn a_non_empty_directory_is_refused_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("keep.txt"), "mine").expect("write");
        let err =
            write("x", ScaffoldKind::Filter, Language::Wat, dir.path(), None).expect_err("refused");
        assert!(format!("{err:#}").contains("is not empty"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).expect("read"),
            "mine"
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn every_kind_and_language_writes_its_files() {
        let root = tempfile::tempdir().expect("tempdir");
        for kind in [
            ScaffoldKind::Filter,
            ScaffoldKind::Map,
            ScaffoldKind::FilterMap,
            ScaffoldKind::ArrayMap,
        ] {
            for lang in [Language::Rust, Language::C, Language::Wat] {
                let dir = root.path().join(format!("{kind}-{lang}"));
                let files = write("demo", kind, lang, &dir, None).expect("written");
                let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
                assert!(readme.contains(kind.sample_output()), "{kind} {lang}");
                assert!(files.iter().any(|f| f == "sample.jsonl"));
                let source = match lang {
                    Language::Rust => "src/lib.rs",
                    Language::C => "demo.c",
                    Language::Wat => "demo.wat",
                };
                let text = std::fs::read_to_string(dir.join(source)).expect("source");
                assert!(!text.contains("{{"), "{source} has an unfilled placeholder");
                assert!(text.contains(kind.export()), "{source} of {kind}");
            }
        }
    }
}
