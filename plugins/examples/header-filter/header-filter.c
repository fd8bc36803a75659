/* header-filter: a Quiver `filter` plugin in C, for clang --target=wasm32 with no C
 * library. Keeps the records that carry the header `name`, and, when `value` is given,
 * whose (first) header of that name has exactly that value.
 *
 * It implements plugins/ABI.md (version 1) by hand; see README.md. Built by
 * plugins/build.sh:
 *   clang --target=wasm32 -O2 -nostdlib -mbulk-memory -Wl,--no-entry \
 *       -o header-filter.wasm header-filter.c
 */

typedef __UINT8_TYPE__ u8;
typedef __UINT32_TYPE__ u32;
typedef __INT32_TYPE__ i32;
typedef __INT64_TYPE__ i64;
typedef __UINT64_TYPE__ u64;
typedef __UINTPTR_TYPE__ uptr;

#define EXPORT(name) __attribute__((export_name(name)))

/* Codes a transformation returns instead of an answer (the batch fails with "plugin
 * error code -N"), and `init` to refuse its parameters; as the Rust SDK's. */
#define PLUGIN_ERROR (-1)
#define MALFORMED_INPUT (-2)
#define OUT_OF_MEMORY (-4)

/* The longest header name and value the parameters may give. */
#define PARAM_BYTES_MAX 256u

EXPORT("quiver_abi_version") i32 quiver_abi_version(void) { return 1; }

/* ---- Memory ----
 * A bump allocator over the heap. The host calls `alloc` once before each call
 * (`init` or `filter`), for its input, after reading the previous call's answer:
 * so each `alloc` starts again at the bottom of the heap, and the answer is written
 * after the input. What must outlive a call (the parameters) is copied to globals. */

extern u8 __heap_base;
static uptr heap_top;

static u8 *take(u32 size) {
    uptr start = heap_top;
    uptr end = start + size;
    if (end < start) return 0;
    uptr have = __builtin_wasm_memory_size(0) * 65536u;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535u) / 65536u) == (uptr)-1)
        return 0;
    heap_top = end;
    return (u8 *)start;
}

EXPORT("alloc") i32 quiver_alloc(i32 size) {
    heap_top = ((uptr)&__heap_base + 7) & ~(uptr)7;
    return size < 0 ? 0 : (i32)(uptr)take((u32)size);
}

/* ---- Reading the host's bytes, every length checked ---- */

struct reader {
    const u8 *at;
    const u8 *end;
    int ok;
};

static struct reader reader_of(i32 ptr, i32 len) {
    const u8 *at = (const u8 *)(uptr)(u32)ptr;
    struct reader r = {at, at + (u32)len, len >= 0};
    return r;
}

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

/* [len:i32][bytes], -1 for absent: the bytes, *len = -1 when absent. */
static const u8 *read_optional(struct reader *r, i32 *len) {
    *len = (i32)read_u32(r);
    if (*len < 0) {
        *len = -1;
        return 0;
    }
    return read_span(r, (u32)*len);
}

static int same(const u8 *a, u32 a_len, const u8 *b, u32 b_len) {
    if (a_len != b_len) return 0;
    for (u32 i = 0; i < a_len; i++) {
        if (a[i] != b[i]) return 0;
    }
    return 1;
}

/* ---- Parameters ---- */

static u8 name[PARAM_BYTES_MAX];
static u32 name_len;
static u8 value[PARAM_BYTES_MAX];
static u32 value_len;
static int value_given;

/* [count:u32] then count times [key_len:u32][key][value_len:u32][value]. `name` is
 * required, `value` optional; anything else, or too long, refuses (nonzero). */
EXPORT("init") i32 quiver_init(i32 ptr, i32 len) {
    struct reader r = reader_of(ptr, len);
    u32 count = read_u32(&r);
    int name_given = 0;
    for (u32 i = 0; i < count && r.ok; i++) {
        u32 k_len = read_u32(&r);
        const u8 *k = read_span(&r, k_len);
        u32 v_len = read_u32(&r);
        const u8 *v = read_span(&r, v_len);
        if (!r.ok) break;
        if (v_len > PARAM_BYTES_MAX) return PLUGIN_ERROR;
        if (same(k, k_len, (const u8 *)"name", 4)) {
            __builtin_memcpy(name, v, v_len);
            name_len = v_len;
            name_given = 1;
        } else if (same(k, k_len, (const u8 *)"value", 5)) {
            __builtin_memcpy(value, v, v_len);
            value_len = v_len;
            value_given = 1;
        } else {
            return PLUGIN_ERROR;
        }
    }
    if (!r.ok) return MALFORMED_INPUT;
    return name_given ? 0 : PLUGIN_ERROR;
}

/* Reads one record and says whether it stays: it has header `name` (the first one
 * decides) and, if `value` was given, that header's value is `value`. */
static int keep(struct reader *r) {
    i32 len;
    read_span(r, 4 + 8); /* offset_delta, timestamp */
    read_optional(r, &len); /* key */
    read_optional(r, &len); /* value */
    u32 headers = read_u32(r);
    int found = 0, kept = 0;
    for (u32 i = 0; i < headers && r->ok; i++) {
        u32 h_len = read_u32(r);
        const u8 *h = read_span(r, h_len);
        i32 hv_len;
        const u8 *hv = read_optional(r, &hv_len);
        if (r->ok && !found && same(h, h_len, name, name_len)) {
            found = 1;
            kept = !value_given || (hv_len >= 0 && same(hv, (u32)hv_len, value, value_len));
        }
    }
    return kept;
}

/* The answer: [count:u32] and a bitmap, bit i (byte i / 8, bit i % 8) set when
 * record i stays. */
EXPORT("filter") i64 quiver_filter(i32 ptr, i32 len) {
    struct reader r = reader_of(ptr, len);
    u32 count = read_u32(&r);
    if (!r.ok) return MALFORMED_INPUT;
    u32 bitmap_bytes = count / 8 + (count % 8 != 0);
    u8 *out = take(4 + bitmap_bytes);
    if (!out) return OUT_OF_MEMORY;
    out[0] = (u8)count;
    out[1] = (u8)(count >> 8);
    out[2] = (u8)(count >> 16);
    out[3] = (u8)(count >> 24);
    __builtin_memset(out + 4, 0, bitmap_bytes);
    for (u32 i = 0; i < count; i++) {
        int kept = keep(&r);
        if (!r.ok) return MALFORMED_INPUT;
        if (kept) out[4 + i / 8] |= (u8)(1u << (i % 8));
    }
    return (i64)((u64)(uptr)out << 32 | (u64)(4 + bitmap_bytes));
}
