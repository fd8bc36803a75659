
/* ---- The filter_map: drops records whose value is missing or empty, and
 * upper-cases the others' (ASCII letters) ---- */

/* The answer: a record list of the records kept, each with the offset_delta of the
 * input record it replaces. */
EXPORT("filter_map") i64 quiver_filter_map(i32 ptr, i32 len) {
    struct reader r = reader_of(ptr, len);
    u32 count = read_u32(&r);
    if (!r.ok) return MALFORMED_INPUT;
    struct writer w = writer_new();
    u8 *kept_count = put_span(&w, 4);
    u32 kept = 0;
    for (u32 i = 0; i < count; i++) {
        struct record rec;
        if (!read_record(&r, &rec)) return MALFORMED_INPUT;
        if (rec.value_len <= 0) continue;
        upper_case((u8 *)rec.value, rec.value_len);
        put_record(&w, &rec, rec.value, rec.value_len);
        kept++;
    }
    if (kept_count) store_u32(kept_count, kept);
    return finish(&w);
}
