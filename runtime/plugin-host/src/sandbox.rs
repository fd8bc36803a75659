//! The sandbox: admits, compiles and checks plugin modules, and runs one call per
//! batch under a memory bound (`StoreLimits`) and a CPU bound (epoch deadline).
//!
//! Containment, upload side: a module is checked against [`Limits`] before compiling
//! ([`crate::admission`]); compiles (and parsing a text upload) go through a gate that
//! lets [`Limits::compiles_concurrent_max`] run at once, each on one thread of its own
//! with a wasmtime engine of its own (wasmtime is built without its
//! `parallel-compilation` feature, so cranelift uses only the thread that calls it),
//! and an upload whose compile runs past [`Limits::compile_time_max`] is refused.
//! After each compile the compile's engine is dropped and the allocator gives its free
//! memory back to the operating system.
//!
//! Containment, call side: an epoch ticker thread advances the engine's epoch every
//! [`EPOCH_TICK`]; at each tick during a call, wasmtime runs the store's epoch deadline
//! callback on the guest's thread, which ends the call once the thread's CPU time since
//! the call started passes [`Limits::call_time_max`], or its wall-clock time passes
//! the safety net ([`Limits::call_wall_time_bound`]). Instances come from wasmtime's
//! pooling allocator, pre-linked once per plugin (`InstancePre`), so a fresh instance
//! after a failure is cheap.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc,
    UpdateDeadline, ValType,
};

use crate::abi::{self, ABI_VERSION, AnswerError, OutputRecord, PluginKind};
use crate::admission::{self, ModuleExcess};
use crate::cpu_time::{CallBudget, Exceeded, OsThreadCpuClock, ThreadCpuClock};

/// How often the epoch advances: how often a running call's CPU time is read, so a
/// call is ended at most about one tick after it passes its bound.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Instances that may exist at once across all plugins (pool slots).
pub const INSTANCES_MAX: u32 = 256;
/// The wall-clock safety net is never tighter than this many times the CPU bound, so
/// raising `call_time_max` alone never lets the safety net end calls within their CPU
/// bound (see [`Limits::call_wall_time_bound`]).
pub const CALL_WALL_TIME_PER_CALL_TIME_MIN: u32 = 10;

/// The bounds every plugin runs under. Counts and sizes of a module are checked at
/// upload, before compiling (`plugins/ABI.md` lists each with its refusal message).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest upload, in bytes (binary or text).
    pub module_bytes_max: usize,
    /// Linear memory per instance, in bytes; a module whose memory starts larger is
    /// refused at upload.
    pub memory_bytes_max: usize,
    /// CPU time of the guest's thread per call.
    pub call_time_max: Duration,
    /// Wall-clock time per call: a safety net for a call descheduled for good, far
    /// above `call_time_max` (the bound applied is [`Limits::call_wall_time_bound`]).
    pub call_wall_time_max: Duration,
    /// Size of one answer the host reads back from the guest, in bytes.
    pub answer_bytes_max: usize,
    /// Records in one answer.
    pub answer_records_max: usize,
    /// Functions a module defines.
    pub module_functions_max: usize,
    /// One function's body, in bytes (its locals declarations included).
    pub function_body_bytes_max: usize,
    /// Locals one function declares (parameters not counted).
    pub function_locals_max: usize,
    /// One function's locals (its parameters included) times its blocks (`block`,
    /// `loop`, `if`): what makes cranelift's SSA construction slow and large (a value
    /// for each local at each join point), where neither count is large alone.
    pub function_local_blocks_max: usize,
    /// The whole code section, in bytes.
    pub code_bytes_max: usize,
    /// Types a module declares.
    pub module_types_max: usize,
    /// Globals a module defines.
    pub module_globals_max: usize,
    /// Exports a module declares.
    pub module_exports_max: usize,
    /// Tables a module defines.
    pub module_tables_max: usize,
    /// A table's initial size, in elements; also how far a table may grow at run time.
    pub table_elements_max: usize,
    /// Memories a module defines.
    pub module_memories_max: usize,
    /// Element segments a module declares.
    pub module_element_segments_max: usize,
    /// Items in all element segments together.
    pub element_items_max: usize,
    /// Data segments a module declares.
    pub module_data_segments_max: usize,
    /// Bytes in all data segments together.
    pub data_bytes_max: usize,
    /// Wall-clock time one compile may take before its upload is refused.
    pub compile_time_max: Duration,
    /// Wall-clock time an upload waits for a compile slot before it is refused.
    pub compile_wait_max: Duration,
    /// Compiles that may run at once on one engine.
    pub compiles_concurrent_max: usize,
}

impl Limits {
    /// The defaults. Chosen (numbers in `plugins/ABI.md`) so that every example plugin
    /// and every test module is accepted with about twice the room it needs, while the
    /// costliest modules they accept compile in at most about 15 s of one core and
    /// 230 MB of peak memory (`tests/compile_cost.rs`; the largest example, 2-3 s and
    /// 77 MB). `compile_time_max` is twice that slowest compile.
    pub const DEFAULT: Limits = Limits {
        module_bytes_max: 8 * 1024 * 1024,
        memory_bytes_max: 16 * 1024 * 1024,
        call_time_max: Duration::from_millis(100),
        call_wall_time_max: Duration::from_secs(2),
        answer_bytes_max: 64 * 1024 * 1024,
        answer_records_max: 1_000_000,
        module_functions_max: 10_000,
        function_body_bytes_max: 128 * 1024,
        function_locals_max: 4_096,
        function_local_blocks_max: 1_000_000,
        code_bytes_max: 1536 * 1024,
        module_types_max: 1_000,
        module_globals_max: 1_000,
        module_exports_max: 1_000,
        module_tables_max: 1,
        table_elements_max: 20_000,
        module_memories_max: 1,
        module_element_segments_max: 1_000,
        element_items_max: 20_000,
        module_data_segments_max: 1_000,
        data_bytes_max: 4 * 1024 * 1024,
        compile_time_max: Duration::from_secs(30),
        compile_wait_max: Duration::from_secs(60),
        compiles_concurrent_max: 1,
    };

    /// The wall-clock bound a call runs under: `call_wall_time_max`, or
    /// [`CALL_WALL_TIME_PER_CALL_TIME_MIN`] times `call_time_max` when that is larger.
    pub fn call_wall_time_bound(&self) -> Duration {
        self.call_wall_time_max.max(
            self.call_time_max
                .saturating_mul(CALL_WALL_TIME_PER_CALL_TIME_MIN),
        )
    }
}

// Relations between the defaults, checked at compile time.
const _: () = {
    let d = Limits::DEFAULT;
    assert!(d.function_body_bytes_max <= d.code_bytes_max);
    assert!(d.code_bytes_max <= d.module_bytes_max);
    assert!(d.data_bytes_max <= d.memory_bytes_max);
    assert!(d.element_items_max <= d.table_elements_max);
    assert!(d.compiles_concurrent_max >= 1);
    // An upload can wait out one other compile that uses its whole time budget.
    assert!(d.compile_wait_max.as_nanos() >= d.compile_time_max.as_nanos());
    // A call sees at least a few ticks before its CPU bound ends it.
    assert!(d.call_time_max.as_nanos() >= 4 * EPOCH_TICK.as_nanos());
    assert!(
        d.call_wall_time_max.as_nanos()
            >= CALL_WALL_TIME_PER_CALL_TIME_MIN as u128 * d.call_time_max.as_nanos()
    );
    // The ABI exports one memory; the pooling allocator is configured from these.
    assert!(d.module_memories_max == 1 && d.module_tables_max == 1);
};

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a plugin was refused or a call failed. Refusals happen at upload; the rest at
/// run time, where they fail one batch and never the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin of {size} bytes exceeds the upload limit (module_bytes_max) of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("plugin is not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// The module's shape exceeds a limit checked before compiling.
    #[error("{found}; the limit ({}) is {limit}", found.limit_name())]
    ModuleLimit { found: ModuleExcess, limit: u64 },
    /// The module uses a feature ABI v1 does not allow.
    #[error("plugin declares {0}; ABI v1 allows only 32-bit, unshared memories and tables")]
    Unsupported(&'static str),
    #[error("compiling the plugin took longer than {0:?} (compile_time_max); upload refused")]
    CompileTimeout(Duration),
    #[error(
        "other plugin compiles held the compiler for {0:?} (compile_wait_max); try the upload again"
    )]
    CompileBusy(Duration),
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
    #[error("plugin exceeded its CPU time of {0:?} (call_time_max)")]
    Timeout(Duration),
    /// The safety net: the call's wall-clock time passed its bound, whatever its CPU
    /// time (a call starved of CPU, or descheduled for good).
    #[error("plugin call ran for more than {0:?} of wall-clock time (call_wall_time_max)")]
    WallTimeout(Duration),
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
            | PluginError::ModuleLimit { .. }
            | PluginError::Unsupported(_)
            | PluginError::CompileTimeout(_)
            | PluginError::Import { .. }
            | PluginError::MissingExport(_)
            | PluginError::Kind(_)
            | PluginError::AbiVersion(_) => "refused",
            // Not the module's fault: the same upload may succeed later.
            PluginError::CompileBusy(_) => "busy",
            PluginError::InitRefused(_) => "init",
            PluginError::Timeout(_) | PluginError::WallTimeout(_) => "timeout",
            PluginError::Trap(_) => "trap",
            PluginError::OutOfMemory(_) => "memory",
            PluginError::Guest(_) => "guest",
            PluginError::OutOfBounds | PluginError::Answer(_) => "answer",
            PluginError::Engine(_) => "engine",
        }
    }
}

/// Per-instance host state: the memory bound and the current call's CPU bound.
struct Sandbox {
    limits: StoreLimits,
    budget: CallBudget,
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

/// Lets at most a fixed number of compiles run at once; others wait for a slot.
struct CompileGate {
    running: Mutex<usize>,
    freed: Condvar,
    running_max: usize,
}

/// A compile slot, given back when dropped. The compile thread holds it, not the
/// upload waiting for it: a compile whose upload gave up still occupies its slot
/// until it ends, so abandoned compiles cannot pile up.
struct CompilePermit {
    gate: Arc<CompileGate>,
}

impl CompileGate {
    fn new(running_max: usize) -> Arc<Self> {
        Arc::new(Self {
            running: Mutex::new(0),
            freed: Condvar::new(),
            running_max: running_max.max(1),
        })
    }

    /// A slot, waiting up to `wait_max` for one; `None` when none freed in time.
    fn enter(self: &Arc<Self>, wait_max: Duration) -> Option<CompilePermit> {
        let deadline = Instant::now().checked_add(wait_max);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= self.running_max {
            let left = match deadline {
                Some(deadline) => deadline.checked_duration_since(Instant::now())?,
                // A wait too long to represent: wait in steps of a day.
                None => Duration::from_secs(24 * 60 * 60),
            };
            running = self
                .freed
                .wait_timeout(running, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *running += 1;
        Some(CompilePermit {
            gate: Arc::clone(self),
        })
    }
}

impl Drop for CompilePermit {
    fn drop(&mut self) {
        let mut running = self.gate.running.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        self.gate.freed.notify_one();
    }
}

/// Gives the memory the allocator holds free back to the operating system. A compile
/// allocates up to a few hundred MB and frees it when done, but glibc keeps freed
/// memory in its arenas for reuse, so without this a broker's resident memory stays
/// near the peak of its largest compile.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions: it returns free pages of every arena.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What a compile thread sends back: the compiled module, serialised.
type Compiled = Result<Vec<u8>, PluginError>;

/// One compile, run on a thread of its own with an engine of its own: compiles
/// `wasm`, serialises the machine code, drops the engine and gives the compile's
/// memory back, then sends the code to the upload waiting for it (if it still is).
///
/// Why an engine per compile: wasmtime's compiler keeps the cranelift contexts it
/// used, at the capacity of the largest function it compiled, for as long as its
/// engine lives (measured: ~100 MB kept after one 128 KiB function). Dropping the
/// compile's engine drops them; the broker's engine never compiles.
fn compile_job(
    config: &Config,
    wasm: Vec<u8>,
    permit: CompilePermit,
    result: mpsc::SyncSender<Compiled>,
) {
    let compiled = Engine::new(config)
        .map_err(|e| PluginError::Engine(format!("{e:#}")))
        .and_then(|engine| {
            let module = Module::from_binary(&engine, &wasm)
                .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
            module
                .serialize()
                .map_err(|e| PluginError::Engine(format!("{e:#}")))
        });
    drop(wasm);
    release_free_memory();
    // When the upload gave up waiting, the code is dropped with the unsent result.
    let _ = result.send(compiled);
    drop(permit);
}

/// Waits up to `time_max` for a compile's result.
fn await_compiled(
    result: &mpsc::Receiver<Compiled>,
    time_max: Duration,
) -> Result<Vec<u8>, PluginError> {
    match result.recv_timeout(time_max) {
        Ok(compiled) => compiled,
        Err(RecvTimeoutError::Timeout) => Err(PluginError::CompileTimeout(time_max)),
        Err(RecvTimeoutError::Disconnected) => Err(PluginError::Engine(
            "the compile thread ended without a result".into(),
        )),
    }
}

/// Compiles plugins and makes instances. One per broker.
pub struct PluginEngine {
    engine: Engine,
    /// The configuration of the engine each compile makes for itself.
    compile_config: Config,
    limits: Limits,
    cpu_clock: Arc<dyn ThreadCpuClock>,
    compiles: Arc<CompileGate>,
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

/// The error a failed guest call (or instantiation) of `store` is reported as.
fn call_error(err: &wasmtime::Error, store: &Store<Sandbox>, limits: &Limits) -> PluginError {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => match store.data().budget.exceeded {
            Some(Exceeded::WallTime) => PluginError::WallTimeout(limits.call_wall_time_bound()),
            Some(Exceeded::CpuTime) | None => PluginError::Timeout(limits.call_time_max),
        },
        _ => PluginError::Trap(format!("{err:#}")),
    }
}

/// Starts the budget of a guest call on `store`: the CPU clock is read now, on the
/// thread that is about to run the guest, and checked again at the next tick.
fn start_call(store: &mut Store<Sandbox>) {
    store.data_mut().budget.start();
    store.set_epoch_deadline(1);
}

impl PluginEngine {
    /// An engine whose calls are bounded by their thread's CPU time, read from the
    /// operating system.
    pub fn new(limits: Limits) -> Result<Self, PluginError> {
        Self::with_cpu_clock(limits, Arc::new(OsThreadCpuClock))
    }

    /// An engine reading calls' CPU time from `cpu_clock` (tests drive a fake one).
    pub fn with_cpu_clock(
        limits: Limits,
        cpu_clock: Arc<dyn ThreadCpuClock>,
    ) -> Result<Self, PluginError> {
        let setup = |what: &str, max: usize| {
            u32::try_from(max)
                .map_err(|_| PluginError::Engine(format!("{what} {max} is too large")))
        };
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Tables filled at instantiation (at most table_elements_max entries) rather
        // than on first use: each call_indirect then compiles without a lazy-init
        // path, which measured 3.5x faster to compile and half the peak memory for
        // code dense in indirect calls.
        config.table_lazy_init(false);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(INSTANCES_MAX);
        pool.total_memories(INSTANCES_MAX);
        pool.total_tables(INSTANCES_MAX);
        pool.max_memory_size(limits.memory_bytes_max);
        pool.max_memories_per_module(setup("module_memories_max", limits.module_memories_max)?);
        pool.max_tables_per_module(setup("module_tables_max", limits.module_tables_max)?);
        pool.table_elements(limits.table_elements_max);
        // Compiles run on engines of their own: the same configuration (so the main
        // engine loads what they compile), without the instance pool they never use.
        let mut compile_config = config.clone();
        compile_config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
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
            compile_config,
            limits,
            cpu_clock,
            compiles: CompileGate::new(limits.compiles_concurrent_max),
            _ticker: EpochTicker {
                stop,
                thread: Some(thread),
            },
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits, compiles and checks an upload (binary or text) against ABI v1: its size
    /// and shape ([`crate::admission`]) before compiling; imports, exports, kind, and
    /// (by instantiating it once) the version it reports after.
    pub fn compile(&self, name: &str, upload: &[u8]) -> Result<Plugin, PluginError> {
        if upload.len() > self.limits.module_bytes_max {
            return Err(PluginError::TooLarge {
                size: upload.len(),
                limit: self.limits.module_bytes_max,
            });
        }
        // Parsing the text format costs memory too (~130 MB at the largest upload),
        // so a text upload takes its compile slot first; a binary one is admitted
        // first, so a refusal never waits behind another upload's compile.
        let (wasm, permit) = if admission::is_binary(upload) {
            let wasm = Cow::Borrowed(upload);
            admission::admit(&wasm, &self.limits)?;
            (wasm, self.enter_compile()?)
        } else {
            let permit = self.enter_compile()?;
            let wasm = admission::binary(upload);
            release_free_memory();
            let wasm = wasm?;
            admission::admit(&wasm, &self.limits)?;
            (wasm, permit)
        };
        let module = self.compile_admitted(wasm.into_owned(), permit)?;
        self.check(name, module)
    }

    /// A compile slot, waiting up to `compile_wait_max` for one.
    fn enter_compile(&self) -> Result<CompilePermit, PluginError> {
        self.compiles
            .enter(self.limits.compile_wait_max)
            .ok_or(PluginError::CompileBusy(self.limits.compile_wait_max))
    }

    /// Compiles an admitted module on a thread of its own, which takes `permit`, and
    /// waits up to `compile_time_max` for it. An upload that stops waiting leaves the
    /// thread to finish (cranelift cannot be stopped midway); the thread keeps its
    /// compile slot until then, and drops what it compiled.
    fn compile_admitted(
        &self,
        wasm: Vec<u8>,
        permit: CompilePermit,
    ) -> Result<Module, PluginError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        let config = self.compile_config.clone();
        std::thread::Builder::new()
            .name("quiver-plugin-compile".into())
            .spawn(move || compile_job(&config, wasm, permit, sender))
            .map_err(|e| PluginError::Engine(format!("cannot start a compile thread: {e}")))?;
        let code = await_compiled(&receiver, self.limits.compile_time_max)?;
        // SAFETY: `deserialize` trusts its input to be machine code wasmtime wrote for
        // this engine's configuration. `code` was serialised just now, in this
        // process, by `compile_job` from an engine made from a clone of this engine's
        // configuration (only the instance allocator differs, which is not part of
        // the code); wasmtime also checks the configuration recorded in it.
        unsafe { Module::deserialize(&self.engine, &code) }
            .map_err(|e| PluginError::Engine(format!("{e:#}")))
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
            .map_err(|e| call_error(&e, &store, &self.limits))?;
        let version_fn = instance
            .get_typed_func::<(), i32>(&mut store, "quiver_abi_version")
            .map_err(|_| PluginError::MissingExport("quiver_abi_version"))?;
        start_call(&mut store);
        let version = version_fn
            .call(&mut store, ())
            .map_err(|e| call_error(&e, &store, &self.limits))?;
        if version != ABI_VERSION {
            return Err(PluginError::AbiVersion(version));
        }
        Ok(plugin)
    }

    /// A store for one instance, its call budget started (instantiating runs the
    /// module's start function, a guest call like any other).
    fn store(&self) -> Store<Sandbox> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes_max)
            .table_elements(self.limits.table_elements_max)
            .instances(1)
            .build();
        let budget = CallBudget::new(
            Arc::clone(&self.cpu_clock),
            self.limits.call_time_max,
            self.limits.call_wall_time_bound(),
        );
        let mut store = Store::new(&self.engine, Sandbox { limits, budget });
        store.limiter(|s| &mut s.limits);
        // Called by wasmtime on the guest's thread at each epoch tick during a call.
        store.epoch_deadline_callback(|mut store| {
            Ok(match store.data_mut().budget.check() {
                Some(_) => UpdateDeadline::Interrupt,
                None => UpdateDeadline::Continue(1),
            })
        });
        start_call(&mut store);
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
            .map_err(|e| call_error(&e, &store, &self.limits))?;
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
            start_call(&mut out.store);
            let code = init
                .call(&mut out.store, (ptr, encoded.len() as i32))
                .map_err(|e| call_error(&e, &out.store, &out.limits))?;
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
    /// Asks the guest for memory and writes `input` there.
    fn write_input(&mut self, input: &[u8]) -> Result<i32, PluginError> {
        let ptr = self.alloc_input(input.len())?;
        self.memory
            .write(&mut self.store, ptr as u32 as usize, input)
            .map_err(|_| PluginError::OutOfBounds)?;
        Ok(ptr)
    }

    /// Asks the guest's `alloc` for `len` bytes of input.
    fn alloc_input(&mut self, len: usize) -> Result<i32, PluginError> {
        let size = i32::try_from(len).map_err(|_| PluginError::OutOfMemory(len))?;
        start_call(&mut self.store);
        let ptr = self
            .alloc
            .call(&mut self.store, size)
            .map_err(|e| call_error(&e, &self.store, &self.limits))?;
        if ptr == 0 && size > 0 {
            return Err(PluginError::OutOfMemory(len));
        }
        Ok(ptr)
    }

    /// Runs the plugin over one batch's records. On an error the instance must be
    /// dropped: its memory may be in any state.
    pub fn run(&mut self, records: &[impl abi::AbiRecord]) -> Result<Outcome, PluginError> {
        let len = abi::encoded_len(records);
        let ptr = self.alloc_input(len)?;
        // Encoded straight into the guest's memory: a batch's bytes are copied once.
        let at = ptr as u32 as usize;
        let target = at
            .checked_add(len)
            .and_then(|end| self.memory.data_mut(&mut self.store).get_mut(at..end))
            .ok_or(PluginError::OutOfBounds)?;
        abi::encode_records_into(records, target).map_err(|_| PluginError::OutOfBounds)?;
        start_call(&mut self.store);
        let packed = self
            .call
            .call(&mut self.store, (ptr, len as i32))
            .map_err(|e| call_error(&e, &self.store, &self.limits))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_waits_for_a_compile_slot_and_is_refused_when_none_frees() {
        let gate = CompileGate::new(1);
        let held = gate.enter(Duration::ZERO).expect("a free slot");
        assert!(
            gate.enter(Duration::from_millis(1)).is_none(),
            "one at a time"
        );
        drop(held);
        assert!(gate.enter(Duration::ZERO).is_some(), "freed when dropped");

        let engine = PluginEngine::new(Limits {
            compile_wait_max: Duration::from_millis(1),
            ..Limits::default()
        })
        .expect("engine");
        let _held = engine.compiles.enter(Duration::ZERO).expect("a free slot");
        let wasm = wat::parse_str(
            r#"(module (memory (export "memory") 1)
                 (func (export "quiver_abi_version") (result i32) (i32.const 1))
                 (func (export "alloc") (param i32) (result i32) (i32.const 0))
                 (func (export "filter") (param i32 i32) (result i64) (i64.const 0)))"#,
        )
        .expect("wat");
        let err = engine.compile("waits", &wasm).err().expect("refused");
        assert_eq!(err, PluginError::CompileBusy(Duration::from_millis(1)));
        assert_eq!(err.kind(), "busy");
    }

    #[test]
    fn a_compile_past_its_time_budget_refuses_the_upload() {
        // A compile that never answers: its sender is alive and silent.
        let (_compiling, receiver) = mpsc::sync_channel(1);
        let err = await_compiled(&receiver, Duration::from_millis(1)).err();
        let err = err.expect("refused");
        assert_eq!(err, PluginError::CompileTimeout(Duration::from_millis(1)));
        assert_eq!(
            err.to_string(),
            "compiling the plugin took longer than 1ms (compile_time_max); upload refused"
        );
        assert_eq!(err.kind(), "refused");
    }

    #[test]
    fn a_compile_nobody_waits_for_any_more_still_ends_and_frees_its_slot() {
        let gate = CompileGate::new(1);
        let permit = gate.enter(Duration::ZERO).expect("a free slot");
        let (sender, receiver) = mpsc::sync_channel(1);
        drop(receiver);
        let wasm = wat::parse_str("(module (func))").expect("wat");
        compile_job(&Config::new(), wasm, permit, sender);
        assert!(
            gate.enter(Duration::ZERO).is_some(),
            "the slot is free again"
        );
    }
}
