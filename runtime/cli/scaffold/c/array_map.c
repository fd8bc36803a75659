
/* ---- The array_map: one record per comma-separated part of each value ---- */

/* The answer: a record list, each record with the offset_delta of the input record
 * it came from. A record without a value gives none. */
EXPORT("array_map") i64 quiver_array_map(i32 ptr, i32 len) {
    struct reader r = reader_of(ptr, len);
    u32 count = read_u32(&r);
    if (!r.ok) return MALFORMED_INPUT;
    struct writer w = writer_new();
    u8 *out_count = put_span(&w, 4);
    u32 out = 0;
    for (u32 i = 0; i < count; i++) {
        struct record rec;
        if (!read_record(&r, &rec)) return MALFORMED_INPUT;
        if (rec.value_len < 0) continue;
        i32 part = 0;
        for (i32 at = 0; at <= rec.value_len; at++) {
            if (at == rec.value_len || rec.value[at] == ',') {
                put_record(&w, &rec, rec.value + part, at - part);
                out++;
                part = at + 1;
            }
        }
    }
    if (out_count) store_u32(out_count, out);
    return finish(&w);
}
