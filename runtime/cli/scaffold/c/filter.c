
/* ---- The filter: keeps the records whose value starts with `prefix` ---- */

#define PREFIX_BYTES_MAX 256u

/* The parameter `prefix`, "ERROR" when the attachment gives none. */
static u8 prefix[PREFIX_BYTES_MAX] = "ERROR";
static u32 prefix_len = 5;

/* Runs once per instance, before its first batch, with the attachment's parameters:
 * [count:u32] then count times [key_len:u32][key][value_len:u32][value] (count is 0
 * when there are none). Nonzero refuses them: the attach fails. */
EXPORT("init") i32 quiver_init(i32 ptr, i32 len) {
    struct reader r = reader_of(ptr, len);
    u32 count = read_u32(&r);
    for (u32 i = 0; i < count && r.ok; i++) {
        u32 key_len = read_u32(&r);
        const u8 *key = read_span(&r, key_len);
        u32 value_len = read_u32(&r);
        const u8 *value = read_span(&r, value_len);
        if (r.ok && key_len == 6 && __builtin_memcmp(key, "prefix", 6) == 0) {
            if (value_len > PREFIX_BYTES_MAX) return 1;
            __builtin_memcpy(prefix, value, value_len);
            prefix_len = value_len;
        }
    }
    return r.ok ? 0 : 1;
}

static int keep(const struct record *rec) {
    if (rec->value_len < 0 || (u32)rec->value_len < prefix_len) return 0;
    for (u32 i = 0; i < prefix_len; i++) {
        if (rec->value[i] != prefix[i]) return 0;
    }
    return 1;
}

/* The answer: [count:u32] and a bitmap, bit i (byte i / 8, bit i % 8) set when
 * record i stays. */
EXPORT("filter") i64 quiver_filter(i32 ptr, i32 len) {
    struct reader r = reader_of(ptr, len);
    u32 count = read_u32(&r);
    if (!r.ok) return MALFORMED_INPUT;
    struct writer w = writer_new();
    put_u32(&w, count);
    u32 bitmap_bytes = count / 8 + (count % 8 != 0);
    u8 *bits = put_span(&w, bitmap_bytes);
    if (!bits) return OUT_OF_MEMORY;
    __builtin_memset(bits, 0, bitmap_bytes);
    for (u32 i = 0; i < count; i++) {
        struct record rec;
        if (!read_record(&r, &rec)) return MALFORMED_INPUT;
        if (keep(&rec)) bits[i / 8] |= (u8)(1u << (i % 8));
    }
    return finish(&w);
}
