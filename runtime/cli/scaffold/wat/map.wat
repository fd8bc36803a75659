
  ;; ---- The map: upper-cases every record's value (ASCII letters) ----

  ;; The answer is a record list as long as the input, record i replacing input
  ;; record i: the input itself, changed in place (it is the guest's memory until the
  ;; call returns, and an answer may lie anywhere in it).
  (func (export "map") (param $ptr i32) (param $len i32) (result i64)
    (local $count i32) (local $p i32) (local $value i32)
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $p (i32.add (local.get $ptr) (i32.const 4)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $count)))
        ;; [offset_delta:u32][timestamp:i64][key_len:i32][key][value_len:i32][value]
        (local.set $value (call $optional_end (i32.add (local.get $p) (i32.const 12))))
        (call $upper_case (i32.add (local.get $value) (i32.const 4))
                          (i32.load (local.get $value)))
        (local.set $p (call $headers_end (call $optional_end (local.get $value))))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $next)))
    (call $answer (local.get $ptr) (local.get $len)))
)
