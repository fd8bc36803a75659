/*
 * A wall clock set off by QUIVER_TEST_CLOCK_OFFSET_MS milliseconds (may be
 * negative), for one process: loaded with LD_PRELOAD by the tests that run brokers
 * whose hosts' clocks disagree. Only CLOCK_REALTIME (and its coarse variant) moves;
 * monotonic clocks are untouched, as they are across real hosts.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static long long offset_ms(void) {
    static int read = 0;
    static long long offset = 0;
    if (!read) {
        const char *text = getenv("QUIVER_TEST_CLOCK_OFFSET_MS");
        offset = text ? strtoll(text, NULL, 10) : 0;
        read = 1;
    }
    return offset;
}

static void shift(struct timespec *ts) {
    long long ns = (long long)ts->tv_nsec + (offset_ms() % 1000) * 1000000LL;
    long long s = (long long)ts->tv_sec + offset_ms() / 1000;
    while (ns < 0) {
        ns += 1000000000LL;
        s -= 1;
    }
    while (ns >= 1000000000LL) {
        ns -= 1000000000LL;
        s += 1;
    }
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)ns;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static clock_gettime_fn real = NULL;
    if (!real) {
        real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    }
    int result = real(id, ts);
    if (result == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        shift(ts);
    }
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int result = clock_gettime(CLOCK_REALTIME, &ts);
    if (result == 0 && tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    (void)tz;
    return result;
}
