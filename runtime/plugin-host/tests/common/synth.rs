//! Synthetic modules of a chosen shape, encoded by hand: ABI v1 plugins (a `filter`
//! that answers guest error -1) padded with filler functions, so tests and
//! measurements can build the largest module the limits accept, byte for byte.
//!
//! Layout: types `() -> i32`, `(i32) -> i32`, `(i32 i32) -> i64`; functions 0
//! (`quiver_abi_version`), 1 (`alloc`), 2 (`filter`), then the fillers, all of type
//! `(i32) -> i32`; one table of `table_elements` funcrefs, one memory of 2 pages,
//! one global.

/// Appends `value` as unsigned LEB128.
pub fn leb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(out: &mut Vec<u8>, id: u8, content: &[u8]) {
    out.push(id);
    leb(out, content.len() as u64);
    out.extend_from_slice(content);
}

fn name(out: &mut Vec<u8>, text: &str) {
    leb(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

const I32: u8 = 0x7f;
const I64: u8 = 0x7e;
const END: u8 = 0x0b;

/// Encodes a function body (without its size prefix) from its locals and code.
pub fn body(locals: u32, code: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(code.len() + 8);
    if locals == 0 {
        leb(&mut out, 0);
    } else {
        leb(&mut out, 1);
        leb(&mut out, u64::from(locals));
        out.push(I32);
    }
    out.extend_from_slice(code);
    out
}

/// A plugin whose module has `fillers` as extra function bodies (each of type
/// `(i32) -> i32`, built with [`body`]) and a table of `table_elements`.
pub fn plugin(fillers: &[Vec<u8>], table_elements: u32) -> Vec<u8> {
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    let mut types = Vec::new();
    leb(&mut types, 3);
    types.extend_from_slice(&[0x60, 0, 1, I32]);
    types.extend_from_slice(&[0x60, 1, I32, 1, I32]);
    types.extend_from_slice(&[0x60, 2, I32, I32, 1, I64]);
    section(&mut out, 1, &types);
    let mut functions = Vec::new();
    leb(&mut functions, 3 + fillers.len() as u64);
    functions.extend_from_slice(&[0, 1, 2]);
    functions.extend(std::iter::repeat_n(1, fillers.len()));
    section(&mut out, 3, &functions);
    let mut tables = Vec::new();
    leb(&mut tables, 1);
    tables.extend_from_slice(&[0x70, 0]);
    leb(&mut tables, u64::from(table_elements));
    section(&mut out, 4, &tables);
    section(&mut out, 5, &[1, 0, 2]);
    // (global $bump (mut i32) (i32.const 1024))
    section(&mut out, 6, &[1, I32, 1, 0x41, 0x80, 0x08, END]);
    let mut exports = Vec::new();
    leb(&mut exports, 4);
    for (text, kind, index) in [
        ("memory", 2u8, 0u8),
        ("quiver_abi_version", 0, 0),
        ("alloc", 0, 1),
        ("filter", 0, 2),
    ] {
        name(&mut exports, text);
        exports.extend_from_slice(&[kind, index]);
    }
    section(&mut out, 7, &exports);
    let mut code = Vec::new();
    leb(&mut code, 3 + fillers.len() as u64);
    let abi_bodies = [
        // i32.const 1
        body(0, &[0x41, 1, END]),
        // global.get 0; global.get 0; local.get 0; i32.add; global.set 0 (returns the old bump)
        body(0, &[0x23, 0, 0x23, 0, 0x20, 0, 0x6a, 0x24, 0, END]),
        // i64.const -1
        body(0, &[0x42, 0x7f, END]),
    ];
    for b in abi_bodies.iter().chain(fillers) {
        leb(&mut code, b.len() as u64);
        code.extend_from_slice(b);
    }
    section(&mut out, 10, &code);
    out
}

/// The number of bytes `leb` writes for `value`.
pub fn leb_len(value: u64) -> usize {
    let mut out = Vec::new();
    leb(&mut out, value);
    out.len()
}

/// Code of about `bytes` bytes: a chain of `local.get 0; i32.const 1; i32.add;
/// local.set 0`, then `local.get 0` (arithmetic, the common case).
pub fn arithmetic_code(bytes: usize) -> Vec<u8> {
    const STEP: [u8; 7] = [0x20, 0, 0x41, 1, 0x6a, 0x21, 0];
    let mut code = Vec::with_capacity(bytes + 3);
    while code.len() + STEP.len() + 3 <= bytes {
        code.extend_from_slice(&STEP);
    }
    code.extend_from_slice(&[0x20, 0, END]);
    code
}

/// Code of about `bytes` bytes in a loop: `blocks` times `block; local.get 0; br_if
/// 0; end` (each a join point), then a read of each of `locals` locals, a branch back,
/// and arithmetic for the bytes left. Every read must find its local's value through
/// every join point: what makes cranelift's SSA construction cost locals x blocks.
pub fn locals_across_blocks_code(locals: u32, blocks: usize, bytes: usize) -> Vec<u8> {
    let mut reads = Vec::new();
    for local in 1..=locals {
        reads.push(0x20);
        leb(&mut reads, u64::from(local));
        reads.push(0x1a); // drop
    }
    const BLOCK: [u8; 7] = [0x02, 0x40, 0x20, 0, 0x0d, 0, END];
    let mut code = vec![0x03, 0x40]; // loop
    for _ in 0..blocks {
        if code.len() + BLOCK.len() + reads.len() + 8 > bytes {
            break;
        }
        code.extend_from_slice(&BLOCK);
    }
    code.extend_from_slice(&reads);
    code.extend_from_slice(&[0x20, 0, 0x0d, 0, END]);
    let rest = arithmetic_code(bytes.saturating_sub(code.len()));
    code.extend_from_slice(&rest);
    code
}

/// Code of about `bytes` bytes: `call_indirect` through the table, repeatedly (each
/// call expands to a bounds check, a signature check and a call).
pub fn call_indirect_code(bytes: usize) -> Vec<u8> {
    // local.get 0; local.get 0; call_indirect (type 1) (table 0); local.set 0
    const STEP: [u8; 9] = [0x20, 0, 0x20, 0, 0x11, 1, 0, 0x21, 0];
    let mut code = Vec::with_capacity(bytes + 3);
    while code.len() + STEP.len() + 3 <= bytes {
        code.extend_from_slice(&STEP);
    }
    code.extend_from_slice(&[0x20, 0, END]);
    code
}

/// Fillers of `count` functions whose bodies (locals included) total at most
/// `code_bytes`, each at most `body_bytes`, made by `code(bytes)`.
pub fn fillers(
    count: usize,
    body_bytes: usize,
    code_bytes: usize,
    locals: u32,
    code: impl Fn(usize) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    let each = (code_bytes / count.max(1)).min(body_bytes);
    // Room for the body's size prefix and locals declaration.
    let code_len = each.saturating_sub(8);
    (0..count).map(|_| body(locals, &code(code_len))).collect()
}
