
/* ---- The map: upper-cases every record's value (ASCII letters) ---- */

/* The answer: a record list as long as the input, record i replacing input record i. */
EXPORT("map") i64 quiver_map(i32 ptr, i32 len) {
    struct reader r = reader_of(ptr, len);
    u32 count = read_u32(&r);
    if (!r.ok) return MALFORMED_INPUT;
    struct writer w = writer_new();
    put_u32(&w, count);
    for (u32 i = 0; i < count; i++) {
        struct record rec;
        if (!read_record(&r, &rec)) return MALFORMED_INPUT;
        /* The input is ours until the call returns: change the value where it is. */
        upper_case((u8 *)rec.value, rec.value_len);
        put_record(&w, &rec, rec.value, rec.value_len);
    }
    return finish(&w);
}
