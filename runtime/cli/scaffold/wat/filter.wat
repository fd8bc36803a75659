
  ;; ---- The filter: keeps the records whose value starts with `prefix` ----

  ;; The parameter `prefix` lives at 64..1024: "ERROR" until `init` says otherwise.
  (data (i32.const 64) "ERROR")
  (global $prefix i32 (i32.const 64))
  (global $prefix_bytes_max i32 (i32.const 960))
  (global $prefix_len (mut i32) (i32.const 5))

  ;; Runs once per instance, before its first batch, with the attachment's
  ;; parameters: [count:u32] then count times [key_len:u32][key][value_len:u32][value]
  ;; (count is 0 when there are none). Nonzero refuses them: the attach fails.
  (func (export "init") (param $ptr i32) (param $len i32) (result i32)
    (local $count i32) (local $p i32) (local $key_len i32) (local $value_len i32)
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $p (i32.add (local.get $ptr) (i32.const 4)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $count)))
        (local.set $key_len (i32.load (local.get $p)))
        (local.set $value_len
          (i32.load (i32.add (i32.add (local.get $p) (i32.const 4)) (local.get $key_len))))
        ;; key == "prefix": the bytes "pref" and "ix", little-endian.
        (if (i32.and (i32.eq (local.get $key_len) (i32.const 6))
                     (i32.and (i32.eq (i32.load (i32.add (local.get $p) (i32.const 4)))
                                      (i32.const 0x66657270))
                              (i32.eq (i32.load16_u (i32.add (local.get $p) (i32.const 8)))
                                      (i32.const 0x7869))))
          (then
            (if (i32.gt_u (local.get $value_len) (global.get $prefix_bytes_max))
              (then (return (i32.const 1))))
            (memory.copy (global.get $prefix)
                         (i32.add (local.get $p) (i32.add (i32.const 8) (local.get $key_len)))
                         (local.get $value_len))
            (global.set $prefix_len (local.get $value_len))))
        (local.set $p (i32.add (local.get $p)
                               (i32.add (i32.const 8)
                                        (i32.add (local.get $key_len) (local.get $value_len)))))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; Whether $len bytes at $value start with the prefix.
  (func $starts_with_prefix (param $value i32) (param $len i32) (result i32)
    (local $i i32)
    (if (i32.lt_s (local.get $len) (global.get $prefix_len)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (global.get $prefix_len)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $value) (local.get $i)))
                    (i32.load8_u (i32.add (global.get $prefix) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; The answer: [count:u32] and a bitmap, bit i (byte i / 8, bit i % 8) set when
  ;; record i stays.
  (func (export "filter") (param $ptr i32) (param $len i32) (result i64)
    (local $count i32) (local $bytes i32) (local $out i32) (local $i i32) (local $p i32)
    (local $value i32) (local $bit i32)
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $bytes (i32.shr_u (i32.add (local.get $count) (i32.const 7)) (i32.const 3)))
    (local.set $out (call $take (i32.add (i32.const 4) (local.get $bytes))))
    ;; -4: out of memory, as the Rust SDK reports it.
    (if (i32.eqz (local.get $out)) (then (return (i64.const -4))))
    (i32.store (local.get $out) (local.get $count))
    (memory.fill (i32.add (local.get $out) (i32.const 4)) (i32.const 0) (local.get $bytes))
    (local.set $p (i32.add (local.get $ptr) (i32.const 4)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        ;; [offset_delta:u32][timestamp:i64][key_len:i32][key][value_len:i32][value]
        (local.set $value (call $optional_end (i32.add (local.get $p) (i32.const 12))))
        (if (call $starts_with_prefix (i32.add (local.get $value) (i32.const 4))
                                      (i32.load (local.get $value)))
          (then
            (local.set $bit (i32.add (i32.add (local.get $out) (i32.const 4))
                                     (i32.shr_u (local.get $i) (i32.const 3))))
            (i32.store8 (local.get $bit)
              (i32.or (i32.load8_u (local.get $bit))
                      (i32.shl (i32.const 1) (i32.and (local.get $i) (i32.const 7)))))))
        (local.set $p (call $headers_end (call $optional_end (local.get $value))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $answer (local.get $out) (i32.add (i32.const 4) (local.get $bytes))))
)
