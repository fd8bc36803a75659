  ;; What every test plugin needs (plugins/ABI.md): its memory, the ABI version, and a
  ;; bump allocator that the transformation resets at the end of each call.
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "quiver_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $size)))
    (local.get $p))
