
  ;; ---- The array_map: one record per comma-separated part of each value ----

  ;; Appends one record to the answer at the top of the heap: the input record at $p
  ;; (whose key ends at $key_end, headers span $headers..$end) with the $len bytes at
  ;; $part as its value. 0 when the memory cannot grow.
  (func $put_part (param $p i32) (param $key_end i32) (param $part i32) (param $len i32)
                  (param $headers i32) (param $end i32) (result i32)
    (local $out i32) (local $head i32)
    ;; [offset_delta][timestamp][key_len][key] as they were.
    (local.set $head (i32.sub (local.get $key_end) (local.get $p)))
    (local.set $out (call $take (i32.add (i32.add (local.get $head) (i32.const 4))
                                         (i32.add (local.get $len)
                                                  (i32.sub (local.get $end) (local.get $headers))))))
    (if (i32.eqz (local.get $out)) (then (return (i32.const 0))))
    (memory.copy (local.get $out) (local.get $p) (local.get $head))
    (local.set $out (i32.add (local.get $out) (local.get $head)))
    (i32.store (local.get $out) (local.get $len))
    (memory.copy (i32.add (local.get $out) (i32.const 4)) (local.get $part) (local.get $len))
    (local.set $out (i32.add (local.get $out) (i32.add (i32.const 4) (local.get $len))))
    (memory.copy (local.get $out) (local.get $headers)
                 (i32.sub (local.get $end) (local.get $headers)))
    (i32.const 1))

  ;; The answer: a record list, each record keeping the offset_delta of the input
  ;; record it came from. A record without a value gives none.
  (func (export "array_map") (param $ptr i32) (param $len i32) (result i64)
    (local $count i32) (local $p i32) (local $value i32) (local $value_len i32)
    (local $headers i32) (local $end i32) (local $out i32) (local $made i32)
    (local $at i32) (local $part i32) (local $stop i32)
    (local.set $out (call $take (i32.const 4)))
    (if (i32.eqz (local.get $out)) (then (return (i64.const -4))))
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $p (i32.add (local.get $ptr) (i32.const 4)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $count)))
        ;; [offset_delta:u32][timestamp:i64][key_len:i32][key][value_len:i32][value]
        (local.set $value (call $optional_end (i32.add (local.get $p) (i32.const 12))))
        (local.set $value_len (i32.load (local.get $value)))
        (local.set $headers (call $optional_end (local.get $value)))
        (local.set $end (call $headers_end (local.get $headers)))
        (if (i32.ge_s (local.get $value_len) (i32.const 0))
          (then
            (local.set $part (i32.add (local.get $value) (i32.const 4)))
            (local.set $at (local.get $part))
            (local.set $stop (i32.add (local.get $part) (local.get $value_len)))
            (block $parts_done
              (loop $scan
                (if (i32.or (i32.eq (local.get $at) (local.get $stop))
                            (i32.eq (i32.load8_u (local.get $at)) (i32.const 44)))
                  (then
                    (if (i32.eqz (call $put_part (local.get $p) (local.get $value)
                                   (local.get $part) (i32.sub (local.get $at) (local.get $part))
                                   (local.get $headers) (local.get $end)))
                      (then (return (i64.const -4))))
                    (local.set $made (i32.add (local.get $made) (i32.const 1)))
                    (local.set $part (i32.add (local.get $at) (i32.const 1)))))
                (br_if $parts_done (i32.eq (local.get $at) (local.get $stop)))
                (local.set $at (i32.add (local.get $at) (i32.const 1)))
                (br $scan)))))
        (local.set $p (local.get $end))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $out) (local.get $made))
    (call $answer (local.get $out) (i32.sub (global.get $top) (local.get $out))))
)
