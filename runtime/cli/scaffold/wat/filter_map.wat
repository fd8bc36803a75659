
  ;; ---- The filter_map: drops records whose value is missing or empty, and
  ;; upper-cases the others' (ASCII letters) ----

  ;; The answer is a record list of the records kept, each keeping the offset_delta
  ;; of the input record it replaces: the input itself, compacted in place (kept
  ;; records move towards its start, never past a record not yet read).
  (func (export "filter_map") (param $ptr i32) (param $len i32) (result i64)
    (local $count i32) (local $p i32) (local $value i32) (local $value_len i32)
    (local $end i32) (local $write i32) (local $kept i32)
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $p (i32.add (local.get $ptr) (i32.const 4)))
    (local.set $write (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $count)))
        ;; [offset_delta:u32][timestamp:i64][key_len:i32][key][value_len:i32][value]
        (local.set $value (call $optional_end (i32.add (local.get $p) (i32.const 12))))
        (local.set $value_len (i32.load (local.get $value)))
        (local.set $end (call $headers_end (call $optional_end (local.get $value))))
        (if (i32.gt_s (local.get $value_len) (i32.const 0))
          (then
            (call $upper_case (i32.add (local.get $value) (i32.const 4)) (local.get $value_len))
            (memory.copy (local.get $write) (local.get $p)
                         (i32.sub (local.get $end) (local.get $p)))
            (local.set $write (i32.add (local.get $write)
                                       (i32.sub (local.get $end) (local.get $p))))
            (local.set $kept (i32.add (local.get $kept) (i32.const 1)))))
        (local.set $p (local.get $end))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $ptr) (local.get $kept))
    (call $answer (local.get $ptr) (i32.sub (local.get $write) (local.get $ptr))))
)
