/* {{name}}: a Quiver plugin in C, built with clang for wasm32 without a C library.
 *
 * It implements the host/guest contract of Quiver's plugins/ABI.md (version 1) by
 * hand: the exports `memory`, `quiver_abi_version`, `alloc` and one transformation,
 * no imports. Build:
 *
 *   clang --target=wasm32 -O2 -nostdlib -mbulk-memory -Wl,--no-entry -o {{name}}.wasm {{name}}.c
 *
 * (-mbulk-memory lets clang copy and fill memory with WebAssembly's own instructions
 * instead of calling memcpy/memset, which there is no libc to provide.)
 */

typedef __UINT8_TYPE__ u8;
typedef __UINT32_TYPE__ u32;
typedef __INT32_TYPE__ i32;
typedef __INT64_TYPE__ i64;
typedef __UINT64_TYPE__ u64;
typedef __UINTPTR_TYPE__ uptr;

#define EXPORT(name) __attribute__((export_name(name)))
/* A helper some kinds of plugin do not use. */
#define HELPER static __attribute__((unused))

/* What a transformation returns instead of an answer; the batch then fails with
 * "plugin error code -N". The same numbers as the Rust SDK's. */
#define MALFORMED_INPUT (-2)
#define OUT_OF_MEMORY (-4)

EXPORT("quiver_abi_version") i32 quiver_abi_version(void) { return 1; }

/* ---- Memory: a bump allocator over the heap, after the data and the stack ----
 *
 * The host calls `alloc` exactly once before each call (`init` or the
 * transformation), for that call's input, and only after it has read the previous
 * call's answer. So `alloc` starts again from the bottom of the heap every time:
 * the input goes first, the answer is written after it, and nothing of the
 * previous call is still needed. State that must outlive a call lives in globals. */

extern u8 __heap_base; /* defined by the linker: where the heap starts */
static uptr heap_top;  /* the next free byte */

#define PAGE_BYTES 65536u

/* `size` bytes at the top of the heap, growing the memory when needed; 0 when the
 * memory cannot grow (the host bounds it, 16 MiB by default). */
static u8 *take(u32 size) {
    uptr start = heap_top;
    uptr end = start + size;
    if (end < start) return 0;
    uptr have = __builtin_wasm_memory_size(0) * PAGE_BYTES;
    if (end > have) {
        uptr pages = (end - have + PAGE_BYTES - 1) / PAGE_BYTES;
        if (__builtin_wasm_memory_grow(0, pages) == (uptr)-1) return 0;
    }
    heap_top = end;
    return (u8 *)start;
}

EXPORT("alloc") i32 quiver_alloc(i32 size) {
    heap_top = ((uptr)&__heap_base + 7) & ~(uptr)7;
    if (size < 0) return 0;
    return (i32)(uptr)take((u32)size);
}

/* ---- Reading what the host wrote: little-endian, every length checked ---- */

struct reader {
    const u8 *at;
    const u8 *end;
    int ok; /* cleared by the first read past the end */
};

static struct reader reader_of(i32 ptr, i32 len) {
    const u8 *at = (const u8 *)(uptr)(u32)ptr;
    struct reader r = {at, at + (u32)len, len >= 0};
    return r;
}

/* The next `n` bytes, or 0 (and !r->ok) when fewer are left. */
static const u8 *read_span(struct reader *r, u32 n) {
    if (!r->ok || (uptr)(r->end - r->at) < n) {
        r->ok = 0;
        return 0;
    }
    const u8 *at = r->at;
    r->at += n;
    return at;
}

static u32 read_u32(struct reader *r) {
    const u8 *p = read_span(r, 4);
    return p ? (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24 : 0;
}

static i64 read_i64(struct reader *r) {
    u64 low = read_u32(r);
    u64 high = read_u32(r);
    return (i64)(low | high << 32);
}

/* [len:i32][bytes], len -1 for absent: the bytes, with *len = -1 when absent. */
static const u8 *read_optional(struct reader *r, i32 *len) {
    *len = (i32)read_u32(r);
    if (*len < 0) {
        *len = -1;
        return 0;
    }
    return read_span(r, (u32)*len);
}

/* One record of the host's record list. Headers are kept as the bytes they were
 * sent as ([header_count:u32] and the headers), to copy into an answer. */
struct record {
    u32 offset_delta;
    i64 timestamp;
    const u8 *key;
    i32 key_len; /* -1: no key */
    const u8 *value;
    i32 value_len; /* -1: no value */
    const u8 *headers;
    u32 headers_bytes;
};

static int read_record(struct reader *r, struct record *rec) {
    rec->offset_delta = read_u32(r);
    rec->timestamp = read_i64(r);
    rec->key = read_optional(r, &rec->key_len);
    rec->value = read_optional(r, &rec->value_len);
    rec->headers = r->at;
    u32 count = read_u32(r);
    for (u32 i = 0; i < count && r->ok; i++) {
        read_span(r, read_u32(r)); /* name */
        i32 len;
        read_optional(r, &len); /* value */
    }
    rec->headers_bytes = r->ok ? (u32)(r->at - rec->headers) : 0;
    return r->ok;
}

/* ---- Writing an answer at the top of the heap ---- */

struct writer {
    u8 *start;
    int ok; /* cleared when the memory cannot grow */
};

static struct writer writer_new(void) {
    struct writer w = {take(0), 1};
    return w;
}

static u8 *put_span(struct writer *w, u32 n) {
    u8 *p = w->ok ? take(n) : 0;
    if (!p) w->ok = 0;
    return p;
}

HELPER void put_bytes(struct writer *w, const u8 *bytes, u32 n) {
    u8 *p = put_span(w, n);
    if (p) __builtin_memcpy(p, bytes, n);
}

static void store_u32(u8 *p, u32 v) {
    p[0] = (u8)v;
    p[1] = (u8)(v >> 8);
    p[2] = (u8)(v >> 16);
    p[3] = (u8)(v >> 24);
}

static void put_u32(struct writer *w, u32 v) {
    u8 *p = put_span(w, 4);
    if (p) store_u32(p, v);
}

HELPER void put_i64(struct writer *w, i64 v) {
    put_u32(w, (u32)(u64)v);
    put_u32(w, (u32)((u64)v >> 32));
}

/* [len:i32][bytes], -1 for absent. */
HELPER void put_optional(struct writer *w, const u8 *bytes, i32 len) {
    put_u32(w, (u32)len);
    if (len > 0) put_bytes(w, bytes, (u32)len);
}

/* One record: the input record `rec` with `value` instead of its own. */
HELPER void put_record(struct writer *w, const struct record *rec, const u8 *value, i32 value_len) {
    put_u32(w, rec->offset_delta);
    put_i64(w, rec->timestamp);
    put_optional(w, rec->key, rec->key_len);
    put_optional(w, value, value_len);
    put_bytes(w, rec->headers, rec->headers_bytes);
}

/* The i64 a transformation returns: (address << 32) | length, or an error code. */
static i64 finish(struct writer *w) {
    if (!w->ok) return OUT_OF_MEMORY;
    return (i64)((u64)(uptr)w->start << 32 | (u64)(heap_top - (uptr)w->start));
}

HELPER void upper_case(u8 *p, i32 len) {
    for (i32 i = 0; i < len; i++) {
        if (p[i] >= 'a' && p[i] <= 'z') p[i] = (u8)(p[i] - 'a' + 'A');
    }
}
