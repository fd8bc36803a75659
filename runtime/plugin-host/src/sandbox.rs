//! The sandbox: compiles and checks plugin modules, and runs one call per batch under
//! a memory bound (`StoreLimits`) and a CPU bound (epoch deadline).
//!
//! An epoch ticker thread advances the engine's epoch every [`EPOCH_TICK`]; a call may
//! run for `call_time_max / EPOCH_TICK` ticks before it is interrupted. Instances come
//! from wasmtime's pooling allocator, pre-linked once per plugin (`InstancePre`), so a
//! fresh instance after a failure is cheap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quiver_wire::batch::DecodedRecord;
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc, ValType,
};

use crate::abi::{self, ABI_VERSION, AnswerError, OutputRecord, PluginKind};

/// How often the epoch advances: the granularity of the CPU bound.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Instances that may exist at once across all plugins (pool slots).
pub const INSTANCES_MAX: u32 = 256;

/// The bounds every plugin runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub module_bytes_max: usize,
    pub memory_bytes_max: usize,
    pub call_time_max: Duration,
    pub answer_bytes_max: usize,
    pub answer_records_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            module_bytes_max: 8 * 1024 * 1024,
            memory_bytes_max: 16 * 1024 * 1024,
            call_time_max: Duration::from_millis(100),
            answer_bytes_max: 64 * 1024 * 1024,
            answer_records_max: 1_000_000,
        }
    }
}

/// Why a plugin was refused or a call failed. Refusals happen at upload; the rest at
/// run time, where they fail one batch and never the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin of {size} bytes exceeds the upload limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("plugin is not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error("plugin imports {module}::{name}; ABI v1 allows no imports")]
    Import { module: String, name: String },
    #[error("plugin does not export `{0}` with the type ABI v1 requires")]
    MissingExport(&'static str),
    #[error("plugin must export exactly one of filter, map, filter_map, array_map; it exports {0}")]
    Kind(String),
    #[error("plugin speaks ABI version {0}; this broker speaks {ABI_VERSION}")]
    AbiVersion(i32),
    #[error("plugin init refused its parameters (code {0})")]
    InitRefused(i32),
    #[error("plugin exceeded its CPU time of {0:?}")]
    Timeout(Duration),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin could not allocate {0} bytes for the batch")]
    OutOfMemory(usize),
    #[error("plugin error code {0}")]
    Guest(i64),
    #[error("plugin answer out of bounds")]
    OutOfBounds,
    #[error(transparent)]
    Answer(#[from] AnswerError),
    #[error("plugin engine setup failed: {0}")]
    Engine(String),
}

impl PluginError {
    /// A short stable label for metrics (`errors by kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::TooLarge { .. }
            | PluginError::Invalid(_)
            | PluginError::Import { .. }
            | PluginError::MissingExport(_)
            | PluginError::Kind(_)
            | PluginError::AbiVersion(_) => "refused",
            PluginError::InitRefused(_) => "init",
            PluginError::Timeout(_) => "timeout",
            PluginError::Trap(_) => "trap",
            PluginError::OutOfMemory(_) => "memory",
            PluginError::Guest(_) => "guest",
            PluginError::OutOfBounds | PluginError::Answer(_) => "answer",
            PluginError::Engine(_) => "engine",
        }
    }
}

/// Per-instance host state: the memory bound.
struct Sandbox {
    limits: StoreLimits,
}

/// Advances the engine's epoch until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Compiles plugins and makes instances. One per broker.
pub struct PluginEngine {
    engine: Engine,
    limits: Limits,
    _ticker: EpochTicker,
}

/// A compiled, checked plugin.
pub struct Plugin {
    pub name: String,
    pub kind: PluginKind,
    module: Module,
    pre: InstancePre<Sandbox>,
}

/// One instance of a plugin: serves calls one at a time.
pub struct PluginInstance {
    store: Store<Sandbox>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    call: TypedFunc<(i32, i32), i64>,
    kind: PluginKind,
    limits: Limits,
}

/// What a call decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A filter's keep-bits, one per input record.
    Keep(Vec<bool>),
    /// A map's records.
    Records(Vec<OutputRecord>),
}

fn trap_error(err: &wasmtime::Error, limits: &Limits) -> PluginError {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginError::Timeout(limits.call_time_max),
        _ => PluginError::Trap(format!("{err:#}")),
    }
}

impl PluginEngine {
    pub fn new(limits: Limits) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(INSTANCES_MAX);
        pool.total_memories(INSTANCES_MAX);
        pool.total_tables(INSTANCES_MAX);
        pool.max_memory_size(limits.memory_bytes_max);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticking = engine.clone();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("quiver-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        Ok(Self {
            engine,
            limits,
            _ticker: EpochTicker {
                stop,
                thread: Some(thread),
            },
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles and checks a module against ABI v1: size, imports, exports, kind, and
    /// (by instantiating it once) the version it reports.
    pub fn compile(&self, name: &str, wasm: &[u8]) -> Result<Plugin, PluginError> {
        if wasm.len() > self.limits.module_bytes_max {
            return Err(PluginError::TooLarge {
                size: wasm.len(),
                limit: self.limits.module_bytes_max,
            });
        }
        let module =
            Module::new(&self.engine, wasm).map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        self.check(name, module)
    }

    /// Loads machine code that [`Plugin::serialize`] wrote, checking it as an upload
    /// is checked. Fails (and the caller compiles from the module instead) when the
    /// file was written by another wasmtime version or engine configuration.
    pub fn load_compiled(&self, name: &str, path: &std::path::Path) -> Result<Plugin, PluginError> {
        // SAFETY: `deserialize_file` trusts the file to be machine code this engine
        // wrote. The broker writes these files itself, into its own data directory,
        // from modules it compiled; wasmtime also checks the version and configuration
        // recorded in the file and refuses a mismatch.
        let module = unsafe { Module::deserialize_file(&self.engine, path) }
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        self.check(name, module)
    }

    fn check(&self, name: &str, module: Module) -> Result<Plugin, PluginError> {
        if let Some(import) = module.imports().next() {
            return Err(PluginError::Import {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
        let func = |export: &'static str, params: &[ValType], results: &[ValType]| match module
            .get_export(export)
        {
            Some(ExternType::Func(f)) => {
                let p: Vec<String> = f.params().map(|t| t.to_string()).collect();
                let r: Vec<String> = f.results().map(|t| t.to_string()).collect();
                let want_p: Vec<String> = params.iter().map(ToString::to_string).collect();
                let want_r: Vec<String> = results.iter().map(ToString::to_string).collect();
                if p == want_p && r == want_r {
                    Ok(())
                } else {
                    Err(PluginError::MissingExport(export))
                }
            }
            _ => Err(PluginError::MissingExport(export)),
        };
        if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
            return Err(PluginError::MissingExport("memory"));
        }
        func("quiver_abi_version", &[], &[ValType::I32])?;
        func("alloc", &[ValType::I32], &[ValType::I32])?;
        if module.get_export("init").is_some() {
            func("init", &[ValType::I32, ValType::I32], &[ValType::I32])?;
        }
        let kinds: Vec<PluginKind> = PluginKind::ALL
            .iter()
            .copied()
            .filter(|k| module.get_export(k.export()).is_some())
            .collect();
        let kind = match kinds.as_slice() {
            [one] => *one,
            none_or_many => {
                let names: Vec<&str> = none_or_many.iter().map(|k| k.export()).collect();
                return Err(PluginError::Kind(if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }));
            }
        };
        func(
            kind.export(),
            &[ValType::I32, ValType::I32],
            &[ValType::I64],
        )?;
        let linker: Linker<Sandbox> = Linker::new(&self.engine);
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        let plugin = Plugin {
            name: name.to_owned(),
            kind,
            module,
            pre,
        };
        let mut store = self.store();
        let instance = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| trap_error(&e, &self.limits))?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "quiver_abi_version")
            .map_err(|_| PluginError::MissingExport("quiver_abi_version"))?
            .call(&mut store, ())
            .map_err(|e| trap_error(&e, &self.limits))?;
        if version != ABI_VERSION {
            return Err(PluginError::AbiVersion(version));
        }
        Ok(plugin)
    }

    fn store(&self) -> Store<Sandbox> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes_max)
            .instances(1)
            .build();
        let mut store = Store::new(&self.engine, Sandbox { limits });
        store.limiter(|s| &mut s.limits);
        let ticks = (self.limits.call_time_max.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// A fresh instance, initialised with `params` when the plugin exports `init`.
    pub fn instantiate(
        &self,
        plugin: &Plugin,
        params: &[(String, String)],
    ) -> Result<PluginInstance, PluginError> {
        let mut store = self.store();
        let instance = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| trap_error(&e, &self.limits))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or(PluginError::MissingExport("memory"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .map_err(|_| PluginError::MissingExport("alloc"))?;
        let call = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, plugin.kind.export())
            .map_err(|_| PluginError::MissingExport(plugin.kind.export()))?;
        let mut out = PluginInstance {
            store,
            memory,
            alloc,
            call,
            kind: plugin.kind,
            limits: self.limits,
        };
        if let Ok(init) = instance.get_typed_func::<(i32, i32), i32>(&mut out.store, "init") {
            let encoded = abi::encode_params(params);
            let ptr = out.write_input(&encoded)?;
            out.reset_deadline();
            let code = init
                .call(&mut out.store, (ptr, encoded.len() as i32))
                .map_err(|e| trap_error(&e, &out.limits))?;
            if code != 0 {
                return Err(PluginError::InitRefused(code));
            }
        }
        Ok(out)
    }
}

impl Plugin {
    /// Serialised machine code, for an on-disk compile cache (`Module::serialize`).
    pub fn serialize(&self) -> Result<Vec<u8>, PluginError> {
        self.module
            .serialize()
            .map_err(|e| PluginError::Engine(format!("{e:#}")))
    }
}

impl PluginInstance {
    fn reset_deadline(&mut self) {
        let ticks = (self.limits.call_time_max.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        self.store.set_epoch_deadline(ticks);
    }

    /// Asks the guest for memory and writes `input` there.
    fn write_input(&mut self, input: &[u8]) -> Result<i32, PluginError> {
        let len = i32::try_from(input.len()).map_err(|_| PluginError::OutOfMemory(input.len()))?;
        self.reset_deadline();
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| trap_error(&e, &self.limits))?;
        if ptr == 0 && len > 0 {
            return Err(PluginError::OutOfMemory(input.len()));
        }
        self.memory
            .write(&mut self.store, ptr as u32 as usize, input)
            .map_err(|_| PluginError::OutOfBounds)?;
        Ok(ptr)
    }

    /// Runs the plugin over one batch's records. On an error the instance must be
    /// dropped: its memory may be in any state.
    pub fn run(&mut self, records: &[DecodedRecord]) -> Result<Outcome, PluginError> {
        let input = abi::encode_records(records);
        let ptr = self.write_input(&input)?;
        self.reset_deadline();
        let packed = self
            .call
            .call(&mut self.store, (ptr, input.len() as i32))
            .map_err(|e| trap_error(&e, &self.limits))?;
        if packed < 0 {
            return Err(PluginError::Guest(packed));
        }
        let (at, len) = (
            (packed >> 32) as u32 as usize,
            (packed & 0xffff_ffff) as usize,
        );
        if len > self.limits.answer_bytes_max {
            return Err(PluginError::Answer(AnswerError(format!(
                "answer of {len} bytes exceeds {} bytes",
                self.limits.answer_bytes_max
            ))));
        }
        let data = self.memory.data(&self.store);
        let answer = at
            .checked_add(len)
            .and_then(|end| data.get(at..end))
            .ok_or(PluginError::OutOfBounds)?;
        match self.kind {
            PluginKind::Filter => Ok(Outcome::Keep(abi::parse_filter(answer, records.len())?)),
            kind => Ok(Outcome::Records(abi::parse_records(
                answer,
                kind,
                records.len(),
                self.limits.answer_records_max,
            )?)),
        }
    }

    /// Bytes of linear memory the instance holds now.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }
}
