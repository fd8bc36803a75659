  ;; A filter answering [count][bitmap] with every bitmap byte set to FILL: 255 keeps
  ;; every record, 85 (0x55) keeps positions 0, 2, 4, ... of each batch.
  (func (export "filter") (param $ptr i32) (param $len i32) (result i64)
    (local $count i32) (local $out i32) (local $bytes i32)
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $out (global.get $bump))
    (i32.store (local.get $out) (local.get $count))
    (local.set $bytes (i32.shr_u (i32.add (local.get $count) (i32.const 7)) (i32.const 3)))
    (memory.fill (i32.add (local.get $out) (i32.const 4)) (i32.const FILL) (local.get $bytes))
    (global.set $bump (i32.const 1024))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.const 4) (local.get $bytes)))))
