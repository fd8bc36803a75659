;; {{name}}: a Quiver plugin written in the WebAssembly text format.
;;
;; It implements the host/guest contract of Quiver's plugins/ABI.md (version 1) by
;; hand: the exports `memory`, `quiver_abi_version`, `alloc` and one transformation,
;; no imports. The broker takes this file as it is (`quiver plugin upload NAME
;; {{name}}.wat`); no build step. It trusts the lengths the host writes: a read past
;; the end of memory traps, which fails that batch and never the broker.
(module
  ;; Bytes 0..1024 hold the plugin's own data; the heap starts at 1024.
  (memory (export "memory") 1)
  (global $heap_base i32 (i32.const 1024))
  ;; The next free byte of the heap.
  (global $top (mut i32) (i32.const 1024))

  (func (export "quiver_abi_version") (result i32) (i32.const 1))

  ;; $size bytes at the top of the heap, growing the memory when needed; 0 when it
  ;; cannot grow (the host bounds it, 16 MiB by default).
  (func $take (param $size i32) (result i32)
    (local $start i32) (local $end i32) (local $have i32)
    (local.set $start (global.get $top))
    (local.set $end (i32.add (local.get $start) (local.get $size)))
    (if (i32.lt_u (local.get $end) (local.get $start)) (then (return (i32.const 0))))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                    (i32.const 65535))
                           (i32.const 16)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $top (local.get $end))
    (local.get $start))

  ;; The host calls `alloc` exactly once before each call (`init` or the
  ;; transformation), for that call's input, and only after it has read the previous
  ;; call's answer. So the heap starts again from its bottom every time: the input
  ;; goes first, an answer after it.
  (func (export "alloc") (param $size i32) (result i32)
    (global.set $top (global.get $heap_base))
    (if (i32.lt_s (local.get $size) (i32.const 0)) (then (return (i32.const 0))))
    (call $take (local.get $size)))

  ;; $p points at [len:i32][bytes] (len -1: absent): where the field ends.
  (func $optional_end (param $p i32) (result i32)
    (local $len i32)
    (local.set $len (i32.load (local.get $p)))
    (if (i32.lt_s (local.get $len) (i32.const 0)) (then (local.set $len (i32.const 0))))
    (i32.add (i32.add (local.get $p) (i32.const 4)) (local.get $len)))

  ;; $p points at a record's [header_count:u32] and its headers: where they end.
  (func $headers_end (param $p i32) (result i32)
    (local $count i32)
    (local.set $count (i32.load (local.get $p)))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $count)))
        ;; [name_len:u32][name]
        (local.set $p (i32.add (i32.add (local.get $p) (i32.const 4))
                               (i32.load (local.get $p))))
        ;; [value_len:i32][value]
        (local.set $p (call $optional_end (local.get $p)))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; Upper-cases ASCII letters of $len bytes at $p, in place.
  (func $upper_case (param $p i32) (param $len i32)
    (local $end i32) (local $c i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97))
                     (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 (local.get $p) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next))))

  ;; The i64 a transformation returns: (address << 32) | length.
  (func $answer (param $at i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $at)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))
