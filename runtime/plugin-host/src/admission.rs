//! Admission: the checks an uploaded module passes before it is compiled.
//!
//! Compiling is the expensive step (cranelift's time and memory grow with the code it
//! is given: a 1.1 MB module of 100,000 functions cost ~500 MB to compile), so the
//! shape of a module is read first with wasmparser, in one validating pass that costs
//! about as much as reading the bytes, and a module whose shape exceeds a limit in
//! [`Limits`] is refused without compiling anything. Counts a section header declares
//! are checked before its entries are read, so a module declaring a million functions
//! is refused after reading a few bytes.
//!
//! What this does not do: check the ABI's imports and exports by name and type (the
//! sandbox does that on the compiled module, which also covers modules loaded from
//! the compile cache), or bound run-time behaviour (the sandbox's memory and CPU
//! bounds do).

use std::borrow::Cow;

use wasmparser::{
    CompositeInnerType, ElementItems, Encoding, FuncValidatorAllocations, Operator, Parser,
    Payload, ValidPayload, Validator, WasmFeatures,
};

use crate::sandbox::{Limits, PluginError};

/// Bytes in one WebAssembly page when a memory does not choose its own page size.
const WASM_PAGE_BYTES_LOG2: u32 = 16;

/// What was found over a limit: the subject of a [`PluginError::ModuleLimit`] refusal.
/// Each variant names the [`Limits`] field it was checked against
/// ([`ModuleExcess::limit_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleExcess {
    #[error("module declares {0} functions")]
    Functions(u64),
    #[error("function {index} has a body of {bytes} bytes")]
    FunctionBodyBytes { index: u32, bytes: u64 },
    #[error("function {index} declares {locals} locals")]
    FunctionLocals { index: u32, locals: u64 },
    /// `locals` counts the function's parameters too.
    #[error(
        "function {index} has {blocks} blocks and {locals} locals counting its parameters ({} local-blocks)",
        locals.saturating_mul(*blocks)
    )]
    FunctionLocalBlocks {
        index: u32,
        locals: u64,
        blocks: u64,
    },
    #[error("module has {0} bytes of code")]
    CodeBytes(u64),
    #[error("module declares {0} types")]
    Types(u64),
    #[error("module declares {0} globals")]
    Globals(u64),
    #[error("module declares {0} exports")]
    Exports(u64),
    #[error("module declares {0} tables")]
    Tables(u64),
    #[error("table {index} starts with {elements} elements")]
    TableElements { index: u32, elements: u64 },
    #[error("module declares {0} memories")]
    Memories(u64),
    #[error("memory {index} starts at {bytes} bytes")]
    MemoryInitialBytes { index: u32, bytes: u64 },
    #[error("module declares {0} element segments")]
    ElementSegments(u64),
    #[error("module's element segments hold {0} items")]
    ElementItems(u64),
    #[error("module declares {0} data segments")]
    DataSegments(u64),
    #[error("module's data segments hold {0} bytes")]
    DataBytes(u64),
}

impl ModuleExcess {
    /// The [`Limits`] field this was checked against.
    pub fn limit_name(&self) -> &'static str {
        match self {
            ModuleExcess::Functions(_) => "module_functions_max",
            ModuleExcess::FunctionBodyBytes { .. } => "function_body_bytes_max",
            ModuleExcess::FunctionLocals { .. } => "function_locals_max",
            ModuleExcess::FunctionLocalBlocks { .. } => "function_local_blocks_max",
            ModuleExcess::CodeBytes(_) => "code_bytes_max",
            ModuleExcess::Types(_) => "module_types_max",
            ModuleExcess::Globals(_) => "module_globals_max",
            ModuleExcess::Exports(_) => "module_exports_max",
            ModuleExcess::Tables(_) => "module_tables_max",
            ModuleExcess::TableElements { .. } => "table_elements_max",
            ModuleExcess::Memories(_) => "module_memories_max",
            ModuleExcess::MemoryInitialBytes { .. } => "memory_bytes_max",
            ModuleExcess::ElementSegments(_) => "module_element_segments_max",
            ModuleExcess::ElementItems(_) => "element_items_max",
            ModuleExcess::DataSegments(_) => "module_data_segments_max",
            ModuleExcess::DataBytes(_) => "data_bytes_max",
        }
    }
}

/// The sizes admission measured in a module it accepted: for operators choosing
/// limits, and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleShape {
    pub functions: u64,
    /// The largest function body, in bytes (its locals declarations included).
    pub function_body_bytes_largest: u64,
    /// The most locals one function declares (parameters not counted).
    pub function_locals_most: u64,
    /// The most blocks (`block`, `loop`, `if`) in one function.
    pub function_blocks_most: u64,
    /// The largest product of one function's locals (parameters included) and blocks.
    pub function_local_blocks_most: u64,
    /// The code section's size in bytes.
    pub code_bytes: u64,
    pub types: u64,
    pub globals: u64,
    pub exports: u64,
    pub tables: u64,
    /// The largest initial size of a table, in elements.
    pub table_elements_largest: u64,
    pub memories: u64,
    /// The largest initial size of a memory, in bytes.
    pub memory_initial_bytes_largest: u64,
    pub element_segments: u64,
    pub element_items: u64,
    pub data_segments: u64,
    pub data_bytes: u64,
}

/// Checks `value` against `max` (a [`Limits`] field), naming what was found.
fn within(
    value: u64,
    max: usize,
    found: impl FnOnce(u64) -> ModuleExcess,
) -> Result<(), PluginError> {
    // usize is at most 64 bits on every target wasmtime supports.
    let limit = u64::try_from(max).unwrap_or(u64::MAX);
    if value > limit {
        return Err(PluginError::ModuleLimit {
            found: found(value),
            limit,
        });
    }
    Ok(())
}

fn invalid(err: wasmparser::BinaryReaderError) -> PluginError {
    PluginError::Invalid(err.to_string())
}

/// Whether an upload is in the binary format (else it is taken for text).
pub fn is_binary(upload: &[u8]) -> bool {
    upload.starts_with(b"\0asm")
}

/// The binary form of an upload: the bytes themselves when they are a binary module,
/// else the module the text format (WAT) describes. The broker accepts both, as
/// wasmtime does; admission and compiling then read the binary.
pub fn binary(upload: &[u8]) -> Result<Cow<'_, [u8]>, PluginError> {
    if is_binary(upload) {
        return Ok(Cow::Borrowed(upload));
    }
    wat::parse_bytes(upload).map_err(|e| PluginError::Invalid(e.to_string()))
}

/// Validates the binary module `wasm` and checks its shape against `limits`, without
/// compiling it. Imports are refused here too (ABI v1 allows none), before anything
/// else is read about them.
pub fn admit(wasm: &[u8], limits: &Limits) -> Result<ModuleShape, PluginError> {
    let mut shape = ModuleShape::default();
    let mut validator = Validator::new_with_features(WasmFeatures::default());
    let mut allocations = FuncValidatorAllocations::default();
    let mut function_index: u32 = 0;
    // Parameters of each type, and the type of each function: cranelift treats a
    // function's parameters as locals.
    let mut type_params: Vec<u64> = Vec::new();
    let mut function_types: Vec<u32> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        // Our own checks first: the validator's work on a section grows with the
        // counts it declares.
        match &payload {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => {
                return Err(PluginError::Invalid(
                    "a component; ABI v1 plugins are core modules".into(),
                ));
            }
            Payload::ImportSection(reader) => {
                if let Some(import) = reader.clone().into_imports().next() {
                    let import = import.map_err(invalid)?;
                    return Err(PluginError::Import {
                        module: import.module.to_owned(),
                        name: import.name.to_owned(),
                    });
                }
            }
            Payload::TypeSection(reader) => {
                // A recursion group may hold several types: count them all first
                // (reading the section is cheap), so the refusal names the total.
                for group in reader.clone() {
                    shape.types += group.map_err(invalid)?.types().len() as u64;
                }
                within(shape.types, limits.module_types_max, ModuleExcess::Types)?;
                for group in reader.clone() {
                    for ty in group.map_err(invalid)?.types() {
                        type_params.push(match &ty.composite_type.inner {
                            CompositeInnerType::Func(func) => func.params().len() as u64,
                            _ => 0,
                        });
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                shape.functions = u64::from(reader.count());
                within(
                    shape.functions,
                    limits.module_functions_max,
                    ModuleExcess::Functions,
                )?;
                for ty in reader.clone() {
                    function_types.push(ty.map_err(invalid)?);
                }
            }
            Payload::GlobalSection(reader) => {
                shape.globals = u64::from(reader.count());
                within(
                    shape.globals,
                    limits.module_globals_max,
                    ModuleExcess::Globals,
                )?;
            }
            Payload::ExportSection(reader) => {
                shape.exports = u64::from(reader.count());
                within(
                    shape.exports,
                    limits.module_exports_max,
                    ModuleExcess::Exports,
                )?;
            }
            Payload::TableSection(reader) => {
                shape.tables = u64::from(reader.count());
                within(shape.tables, limits.module_tables_max, ModuleExcess::Tables)?;
                for (index, table) in (0u32..).zip(reader.clone()) {
                    let table = table.map_err(invalid)?;
                    if table.ty.table64 || table.ty.shared {
                        return Err(PluginError::Unsupported(if table.ty.table64 {
                            "a 64-bit table"
                        } else {
                            "a shared table"
                        }));
                    }
                    within(table.ty.initial, limits.table_elements_max, |elements| {
                        ModuleExcess::TableElements { index, elements }
                    })?;
                    shape.table_elements_largest =
                        shape.table_elements_largest.max(table.ty.initial);
                }
            }
            Payload::MemorySection(reader) => {
                shape.memories = u64::from(reader.count());
                within(
                    shape.memories,
                    limits.module_memories_max,
                    ModuleExcess::Memories,
                )?;
                for (index, memory) in (0u32..).zip(reader.clone()) {
                    let memory = memory.map_err(invalid)?;
                    if memory.memory64 {
                        return Err(PluginError::Unsupported("a 64-bit memory"));
                    }
                    if memory.shared {
                        return Err(PluginError::Unsupported("a shared memory"));
                    }
                    let page_log2 = memory.page_size_log2.unwrap_or(WASM_PAGE_BYTES_LOG2);
                    // Saturating: the validator, which bounds both, runs after this.
                    let bytes = 1u64
                        .checked_shl(page_log2)
                        .and_then(|page| memory.initial.checked_mul(page))
                        .unwrap_or(u64::MAX);
                    within(bytes, limits.memory_bytes_max, |bytes| {
                        ModuleExcess::MemoryInitialBytes { index, bytes }
                    })?;
                    shape.memory_initial_bytes_largest =
                        shape.memory_initial_bytes_largest.max(bytes);
                }
            }
            Payload::ElementSection(reader) => {
                shape.element_segments = u64::from(reader.count());
                within(
                    shape.element_segments,
                    limits.module_element_segments_max,
                    ModuleExcess::ElementSegments,
                )?;
                for element in reader.clone() {
                    shape.element_items += u64::from(match element.map_err(invalid)?.items {
                        ElementItems::Functions(items) => items.count(),
                        ElementItems::Expressions(_, items) => items.count(),
                    });
                }
                within(
                    shape.element_items,
                    limits.element_items_max,
                    ModuleExcess::ElementItems,
                )?;
            }
            Payload::DataSection(reader) => {
                shape.data_segments = u64::from(reader.count());
                within(
                    shape.data_segments,
                    limits.module_data_segments_max,
                    ModuleExcess::DataSegments,
                )?;
                for data in reader.clone() {
                    shape.data_bytes += data.map_err(invalid)?.data.len() as u64;
                }
                within(
                    shape.data_bytes,
                    limits.data_bytes_max,
                    ModuleExcess::DataBytes,
                )?;
            }
            Payload::CodeSectionStart { count, size, .. } => {
                within(
                    u64::from(*count),
                    limits.module_functions_max,
                    ModuleExcess::Functions,
                )?;
                shape.code_bytes = u64::from(*size);
                within(
                    shape.code_bytes,
                    limits.code_bytes_max,
                    ModuleExcess::CodeBytes,
                )?;
            }
            Payload::CodeSectionEntry(body) => {
                let index = function_index;
                function_index = function_index.saturating_add(1);
                let bytes = body.range().len() as u64;
                within(bytes, limits.function_body_bytes_max, |bytes| {
                    ModuleExcess::FunctionBodyBytes { index, bytes }
                })?;
                shape.function_body_bytes_largest = shape.function_body_bytes_largest.max(bytes);
                let mut locals: u64 = 0;
                for group in body.get_locals_reader().map_err(invalid)? {
                    locals += u64::from(group.map_err(invalid)?.0);
                }
                within(locals, limits.function_locals_max, |locals| {
                    ModuleExcess::FunctionLocals { index, locals }
                })?;
                shape.function_locals_most = shape.function_locals_most.max(locals);
                let mut blocks: u64 = 0;
                let mut operators = body.get_operators_reader().map_err(invalid)?;
                while !operators.eof() {
                    let operator = operators.read().map_err(invalid)?;
                    if matches!(
                        operator,
                        Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. }
                    ) {
                        blocks += 1;
                    }
                }
                let params = function_types
                    .get(index as usize)
                    .and_then(|&ty| type_params.get(ty as usize))
                    .copied()
                    .unwrap_or(0);
                let local_blocks = (params + locals).saturating_mul(blocks);
                let limit = u64::try_from(limits.function_local_blocks_max).unwrap_or(u64::MAX);
                if local_blocks > limit {
                    return Err(PluginError::ModuleLimit {
                        found: ModuleExcess::FunctionLocalBlocks {
                            index,
                            locals: params + locals,
                            blocks,
                        },
                        limit,
                    });
                }
                shape.function_blocks_most = shape.function_blocks_most.max(blocks);
                shape.function_local_blocks_most =
                    shape.function_local_blocks_most.max(local_blocks);
            }
            _ => {}
        }
        if let ValidPayload::Func(func, body) = validator.payload(&payload).map_err(invalid)? {
            let mut func = func.into_validator(allocations);
            func.validate(&body).map_err(invalid)?;
            allocations = func.into_allocations();
        }
    }
    Ok(shape)
}
