//! The plugin registry of one broker: uploaded modules by name, each version named by
//! the SHA-256 of its bytes, the attachments of plugins to topics, and a compile cache.
//!
//! On disk, under the registry's directory:
//! - `registry.json`: names, versions and attachments, replaced atomically on every
//!   change (write to a temporary file, fsync, rename, fsync the directory);
//! - `modules/<version>.wasm`: the uploaded bytes, the source of truth;
//! - `compiled/<version>.cwasm`: machine code from `Module::serialize`, so a restart
//!   loads plugins without compiling them again. A cache file wasmtime refuses (another
//!   version or configuration) is rebuilt from the module.
//!
//! Uploading a module under a name that exists replaces that name's version; the
//! attachments refer to names, so the next batch runs the new version.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use quiver_wire::plugin::{
    ATTACHMENTS_PER_TOPIC_MAX, Attachment, OnError, PLUGINS_MAX, PluginCall, PluginInfo,
    PluginStage, validate_params, validate_plugin_name,
};
use serde::{Deserialize, Serialize};

use crate::sandbox::{Plugin, PluginEngine, PluginError, PluginInstance};

/// Idle initialised instances kept per plugin version and parameter set.
const IDLE_INSTANCES_PER_KEY: usize = 4;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidParams(String),
    #[error("no plugin named `{0}` is registered")]
    UnknownPlugin(String),
    /// An attachment names a plugin this registry does not hold yet (a cluster broker
    /// still fetching its module).
    #[error("plugin `{0}` is attached but not installed on this broker yet")]
    NotInstalled(String),
    #[error("plugin `{plugin}` is not attached to topic `{topic}`")]
    NotAttached { topic: String, plugin: String },
    #[error("topic `{topic}` has {ATTACHMENTS_PER_TOPIC_MAX} attachments already")]
    TooManyAttachments { topic: String },
    #[error("{PLUGINS_MAX} plugins are registered already")]
    TooManyPlugins,
    #[error("the dead-letter topic of an attachment to `{0}` cannot be the topic itself")]
    DeadLetterLoop(String),
    /// The module or its parameters were refused.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("plugin registry I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("plugin registry file {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A module fetched for a version the cluster registered hashes to another one.
    #[error("module for plugin version {expected} hashes to {actual}")]
    VersionMismatch { expected: String, actual: String },
}

/// What `registry.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    plugins: Vec<ManifestPlugin>,
    attachments: Vec<ManifestAttachment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestPlugin {
    name: String,
    version: String,
    kind: String,
    size: u64,
    uploaded_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestAttachment {
    topic: String,
    plugin: String,
    stage: String,
    params: Vec<(String, String)>,
    on_error: String,
}

struct Registered {
    info: PluginInfo,
    plugin: Arc<Plugin>,
}

#[derive(Default)]
struct State {
    plugins: BTreeMap<String, Registered>,
    attachments: Vec<Attachment>,
}

/// One plugin to run, resolved from a name at the time of a batch.
#[derive(Clone)]
pub struct Step {
    pub plugin: Arc<Plugin>,
    pub name: String,
    pub version: String,
    pub params: Vec<(String, String)>,
    pub on_error: OnError,
}

/// How the registry's plugins were loaded at open, for metrics and tests.
#[derive(Debug, Default)]
pub struct LoadCounts {
    /// Loaded from `compiled/` without compiling.
    pub from_cache: AtomicU64,
    /// Compiled from the module (an upload, or a cache miss at open).
    pub compiled: AtomicU64,
}

type PoolKey = (String, Vec<(String, String)>);

/// The registry. Shared by every connection; operations take short locks.
pub struct Registry {
    dir: PathBuf,
    engine: PluginEngine,
    state: RwLock<State>,
    /// Serialises changes, so the manifest on disk follows them in order.
    writer: Mutex<()>,
    idle: Mutex<BTreeMap<PoolKey, Vec<PluginInstance>>>,
    pub loads: LoadCounts,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(bytes).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_error(path))?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_error(parent))?;
    }
    Ok(())
}

/// The version name of a module: the hex SHA-256 of its bytes.
pub fn version_of(module: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, module);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Registry {
    /// Opens (or creates) the registry in `dir`, loading every registered plugin.
    pub fn open(dir: &Path, engine: PluginEngine) -> Result<Self, RegistryError> {
        for sub in ["modules", "compiled"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_error(&path))?;
        }
        let registry = Self {
            dir: dir.to_owned(),
            engine,
            state: RwLock::new(State::default()),
            writer: Mutex::new(()),
            idle: Mutex::new(BTreeMap::new()),
            loads: LoadCounts::default(),
        };
        let manifest_path = dir.join("registry.json");
        let manifest: Manifest = match fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
                path: manifest_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(io_error(&manifest_path)(e)),
        };
        let corrupt = |reason: String| RegistryError::Corrupt {
            path: manifest_path.clone(),
            reason,
        };
        let mut state = State::default();
        for entry in manifest.plugins {
            // A stored plugin this build refuses (a limit tightened since its upload)
            // must not keep the broker from starting: it is left out, and topics that
            // attach it answer PLUGIN_UNAVAILABLE until a new version is uploaded.
            let plugin = match registry.load(&entry.name, &entry.version) {
                Ok(plugin) => plugin,
                Err(RegistryError::Plugin(err)) => {
                    tracing::warn!(plugin = %entry.name, version = %entry.version, %err, "stored plugin refused by this build's limits; left out");
                    continue;
                }
                Err(other) => return Err(other),
            };
            let info = PluginInfo {
                name: entry.name.clone(),
                version: entry.version,
                kind: entry.kind,
                size: entry.size,
                uploaded_ms: entry.uploaded_ms,
            };
            state.plugins.insert(
                entry.name,
                Registered {
                    info,
                    plugin: Arc::new(plugin),
                },
            );
        }
        for a in manifest.attachments {
            state.attachments.push(Attachment {
                stage: a.stage.parse().map_err(corrupt)?,
                on_error: a.on_error.parse().map_err(corrupt)?,
                topic: a.topic,
                plugin: a.plugin,
                params: a.params,
            });
        }
        *registry.write_state() = state;
        Ok(registry)
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    fn module_path(&self, version: &str) -> PathBuf {
        self.dir.join("modules").join(format!("{version}.wasm"))
    }

    fn compiled_path(&self, version: &str) -> PathBuf {
        self.dir.join("compiled").join(format!("{version}.cwasm"))
    }

    /// Removes the module and compiled files of versions `manifest` no longer names
    /// (replaced or deleted). Calls in progress keep running: an instance holds its
    /// compiled code in memory, not in these files. A file that cannot be removed is
    /// logged and tried again at the next change.
    fn remove_unused_files(&self, manifest: &Manifest) {
        let current: std::collections::BTreeSet<&str> = manifest
            .plugins
            .iter()
            .map(|p| p.version.as_str())
            .collect();
        for (dir, extension) in [("modules", "wasm"), ("compiled", "cwasm")] {
            let Ok(files) = fs::read_dir(self.dir.join(dir)) else {
                continue;
            };
            for path in files.filter_map(|f| f.ok().map(|f| f.path())) {
                let unused = path.extension().is_some_and(|e| e == extension)
                    && path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|version| !current.contains(version));
                if unused && let Err(err) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %err, "cannot remove an unused plugin file");
                }
            }
        }
    }

    /// Loads a stored version: machine code from the cache when wasmtime accepts it,
    /// else compiled from the module (and the cache rewritten).
    fn load(&self, name: &str, version: &str) -> Result<Plugin, RegistryError> {
        let compiled = self.compiled_path(version);
        if compiled.exists()
            && let Ok(plugin) = self.engine.load_compiled(name, &compiled)
        {
            self.loads.from_cache.fetch_add(1, Ordering::Relaxed);
            return Ok(plugin);
        }
        let module_path = self.module_path(version);
        let wasm = fs::read(&module_path).map_err(io_error(&module_path))?;
        let plugin = self.engine.compile(name, &wasm)?;
        self.loads.compiled.fetch_add(1, Ordering::Relaxed);
        write_atomic(&compiled, &plugin.serialize()?)?;
        Ok(plugin)
    }

    /// Registers `module` under `name`, replacing the name's current version. The
    /// module is checked (its shape against the limits before compiling, then the ABI)
    /// and compiled before anything changes.
    pub fn upload(
        &self,
        name: &str,
        module: &[u8],
        now_ms: i64,
    ) -> Result<PluginInfo, RegistryError> {
        self.register(name, module, now_ms, None)
    }

    /// Registers the version of `name` a cluster's controller holds, with its upload
    /// time, from a module fetched from another broker: refused unless the module
    /// hashes to `version`.
    pub fn install(
        &self,
        name: &str,
        module: &[u8],
        uploaded_ms: i64,
        version: &str,
    ) -> Result<PluginInfo, RegistryError> {
        self.register(name, module, uploaded_ms, Some(version))
    }

    fn register(
        &self,
        name: &str,
        module: &[u8],
        uploaded_ms: i64,
        expected_version: Option<&str>,
    ) -> Result<PluginInfo, RegistryError> {
        validate_plugin_name(name).map_err(|e| RegistryError::InvalidName(e.to_string()))?;
        let version = version_of(module);
        if let Some(expected) = expected_version
            && expected != version
        {
            return Err(RegistryError::VersionMismatch {
                expected: expected.to_owned(),
                actual: version,
            });
        }
        let plugin = self.engine.compile(name, module)?;
        self.loads.compiled.fetch_add(1, Ordering::Relaxed);
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        {
            let state = self.read_state();
            if !state.plugins.contains_key(name) && state.plugins.len() >= PLUGINS_MAX {
                return Err(RegistryError::TooManyPlugins);
            }
            if let Some(current) = state.plugins.get(name)
                && current.info.version == version
            {
                return Ok(current.info.clone());
            }
        }
        let module_path = self.module_path(&version);
        if !module_path.exists() {
            write_atomic(&module_path, module)?;
        }
        write_atomic(&self.compiled_path(&version), &plugin.serialize()?)?;
        let info = PluginInfo {
            name: name.to_owned(),
            version,
            kind: plugin.kind.export().to_owned(),
            size: module.len() as u64,
            uploaded_ms,
        };
        let mut next = self.snapshot_manifest();
        next.plugins.retain(|p| p.name != name);
        next.plugins.push(ManifestPlugin {
            name: info.name.clone(),
            version: info.version.clone(),
            kind: info.kind.clone(),
            size: info.size,
            uploaded_ms: info.uploaded_ms,
        });
        self.persist(&next)?;
        self.write_state().plugins.insert(
            name.to_owned(),
            Registered {
                info: info.clone(),
                plugin: Arc::new(plugin),
            },
        );
        self.remove_unused_files(&next);
        Ok(info)
    }

    /// The stored bytes of a version this registry holds (the current one of a name
    /// or an older one), for another broker of the cluster; `None` when it has none.
    pub fn module(&self, version: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        // A version is a hex digest: anything else names no file (and no path).
        if version.is_empty() || !version.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let path = self.module_path(version);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// The version registered under `name`, if any.
    pub fn version(&self, name: &str) -> Option<String> {
        self.read_state()
            .plugins
            .get(name)
            .map(|r| r.info.version.clone())
    }

    /// Unregisters `name` and drops its attachments (a cluster's controller no longer
    /// holds it). Its module stays on disk, as every version does.
    pub fn remove(&self, name: &str) -> Result<(), RegistryError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if !self.read_state().plugins.contains_key(name) {
            return Ok(());
        }
        let mut next = self.snapshot_manifest();
        next.plugins.retain(|p| p.name != name);
        next.attachments.retain(|a| a.plugin != name);
        self.persist(&next)?;
        {
            let mut state = self.write_state();
            state.plugins.remove(name);
            state.attachments.retain(|a| a.plugin != name);
        }
        self.remove_unused_files(&next);
        Ok(())
    }

    /// Replaces every attachment with `attachments`, in order: a cluster broker
    /// follows its controller's list. Attachments of plugins not registered here are
    /// kept too; until their plugin is installed, [`Registry::chain`] reports them.
    pub fn set_attachments(&self, attachments: Vec<Attachment>) -> Result<(), RegistryError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.read_state().attachments == attachments {
            return Ok(());
        }
        let mut next = self.snapshot_manifest();
        next.attachments = attachments.iter().map(manifest_attachment).collect();
        self.persist(&next)?;
        self.write_state().attachments = attachments;
        Ok(())
    }

    /// Attaches a registered plugin to a topic, after the topic's existing attachments
    /// of the same stage. The parameters are tried once (an instance is initialised
    /// with them), so a plugin that refuses them is refused here, not on the first
    /// batch. The caller checks that the topic (and a dead-letter topic) exist.
    pub fn attach(&self, attachment: Attachment) -> Result<(), RegistryError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.check_attachment(&attachment)?;
        let mut next = self.snapshot_manifest();
        next.attachments.push(manifest_attachment(&attachment));
        self.persist(&next)?;
        self.write_state().attachments.push(attachment);
        Ok(())
    }

    /// Everything [`Registry::attach`] checks, without attaching: a cluster broker
    /// checks here before it proposes the attachment to the controller.
    pub fn check_attachment(&self, attachment: &Attachment) -> Result<(), RegistryError> {
        validate_params(&attachment.params).map_err(RegistryError::InvalidParams)?;
        if attachment.on_error == OnError::DeadLetter(attachment.topic.clone()) {
            return Err(RegistryError::DeadLetterLoop(attachment.topic.clone()));
        }
        let plugin = {
            let state = self.read_state();
            let registered = state
                .plugins
                .get(&attachment.plugin)
                .ok_or_else(|| RegistryError::UnknownPlugin(attachment.plugin.clone()))?;
            let on_topic = state
                .attachments
                .iter()
                .filter(|a| a.topic == attachment.topic)
                .count();
            if on_topic >= ATTACHMENTS_PER_TOPIC_MAX {
                return Err(RegistryError::TooManyAttachments {
                    topic: attachment.topic.clone(),
                });
            }
            Arc::clone(&registered.plugin)
        };
        self.engine.instantiate(&plugin, &attachment.params)?;
        Ok(())
    }

    /// Removes every attachment of `plugin` from `topic`.
    pub fn detach(&self, topic: &str, plugin: &str) -> Result<(), RegistryError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let attached = self
            .read_state()
            .attachments
            .iter()
            .any(|a| a.topic == topic && a.plugin == plugin);
        if !attached {
            return Err(RegistryError::NotAttached {
                topic: topic.to_owned(),
                plugin: plugin.to_owned(),
            });
        }
        let mut next = self.snapshot_manifest();
        next.attachments
            .retain(|a| !(a.topic == topic && a.plugin == plugin));
        self.persist(&next)?;
        self.write_state()
            .attachments
            .retain(|a| !(a.topic == topic && a.plugin == plugin));
        Ok(())
    }

    /// Forgets a deleted topic's attachments.
    pub fn forget_topic(&self, topic: &str) -> Result<(), RegistryError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if !self
            .read_state()
            .attachments
            .iter()
            .any(|a| a.topic == topic)
        {
            return Ok(());
        }
        let mut next = self.snapshot_manifest();
        next.attachments.retain(|a| a.topic != topic);
        self.persist(&next)?;
        self.write_state().attachments.retain(|a| a.topic != topic);
        Ok(())
    }

    /// Every registered plugin and every attachment.
    pub fn list(&self) -> (Vec<PluginInfo>, Vec<Attachment>) {
        let state = self.read_state();
        (
            state.plugins.values().map(|r| r.info.clone()).collect(),
            state.attachments.clone(),
        )
    }

    /// Plugins registered.
    pub fn plugin_count(&self) -> usize {
        self.read_state().plugins.len()
    }

    /// The plugins to run on `topic` at `stage`, in attachment order, resolved to the
    /// versions registered now. An attachment whose plugin is not registered here (a
    /// cluster broker still fetching its module) fails the chain: running the others
    /// without it could let through records it would have filtered.
    pub fn chain(&self, topic: &str, stage: PluginStage) -> Result<Vec<Step>, RegistryError> {
        let state = self.read_state();
        state
            .attachments
            .iter()
            .filter(|a| a.topic == topic && a.stage == stage)
            .map(|a| {
                let registered = state
                    .plugins
                    .get(&a.plugin)
                    .ok_or_else(|| RegistryError::NotInstalled(a.plugin.clone()))?;
                Ok(Step {
                    plugin: Arc::clone(&registered.plugin),
                    name: a.plugin.clone(),
                    version: registered.info.version.clone(),
                    params: a.params.clone(),
                    on_error: a.on_error.clone(),
                })
            })
            .collect()
    }

    /// Whether `topic` has any attachment at `stage`: the check on every request, so
    /// it allocates nothing.
    pub fn has_chain(&self, topic: &str, stage: PluginStage) -> bool {
        self.read_state()
            .attachments
            .iter()
            .any(|a| a.topic == topic && a.stage == stage)
    }

    /// A plugin a consumer named for its own fetches. Its failures fail the fetch.
    pub fn resolve(&self, call: &PluginCall) -> Result<Step, RegistryError> {
        validate_params(&call.params).map_err(RegistryError::InvalidParams)?;
        let state = self.read_state();
        let registered = state
            .plugins
            .get(&call.name)
            .ok_or_else(|| RegistryError::UnknownPlugin(call.name.clone()))?;
        Ok(Step {
            plugin: Arc::clone(&registered.plugin),
            name: call.name.clone(),
            version: registered.info.version.clone(),
            params: call.params.clone(),
            on_error: OnError::Fail,
        })
    }

    /// An initialised instance for `step`: an idle one when there is one, else new.
    pub fn checkout(&self, step: &Step) -> Result<PluginInstance, PluginError> {
        let key = (step.version.clone(), step.params.clone());
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&key)
            .and_then(Vec::pop);
        match idle {
            Some(instance) => Ok(instance),
            None => self.engine.instantiate(&step.plugin, &step.params),
        }
    }

    /// Returns an instance that finished a call cleanly. One that failed is dropped by
    /// its owner instead: its memory may be in any state.
    pub fn checkin(&self, step: &Step, instance: PluginInstance) {
        let key = (step.version.clone(), step.params.clone());
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Versions that are no longer registered keep no instances.
        let current = self
            .read_state()
            .plugins
            .get(&step.name)
            .is_some_and(|r| r.info.version == step.version);
        if !current {
            idle.remove(&key);
            return;
        }
        let slot = idle.entry(key).or_default();
        if slot.len() < IDLE_INSTANCES_PER_KEY {
            slot.push(instance);
        }
    }

    fn snapshot_manifest(&self) -> Manifest {
        let state = self.read_state();
        Manifest {
            plugins: state
                .plugins
                .values()
                .map(|r| ManifestPlugin {
                    name: r.info.name.clone(),
                    version: r.info.version.clone(),
                    kind: r.info.kind.clone(),
                    size: r.info.size,
                    uploaded_ms: r.info.uploaded_ms,
                })
                .collect(),
            attachments: state.attachments.iter().map(manifest_attachment).collect(),
        }
    }

    fn persist(&self, manifest: &Manifest) -> Result<(), RegistryError> {
        let path = self.dir.join("registry.json");
        let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| RegistryError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }
}

fn manifest_attachment(a: &Attachment) -> ManifestAttachment {
    ManifestAttachment {
        topic: a.topic.clone(),
        plugin: a.plugin.clone(),
        stage: a.stage.name().to_owned(),
        params: a.params.clone(),
        on_error: a.on_error.to_string(),
    }
}
