/* Per-call cost of shmq_publish and shmq_poll from C: N publishes of 64 bytes into a fresh
 * queue, then N polls, timed with CLOCK_MONOTONIC. The Rust twin is
 * benches/examples/call_cost.rs; run both on the same machine and compare (see ffi/README.md).
 * Usage: call_cost PATH [N] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmq.h"

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int fail(const char *what, enum shmq_status s) {
    fprintf(stderr, "call_cost: %s: %s: %s\n", what, shmq_status_name(s), shmq_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH [N]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    struct shmq_options opts;
    shmq_options_default(&opts);
    opts.capacity_bytes = 256ull << 20; /* room for every record: nothing waits */
    struct shmq_queue *q = NULL;
    struct shmq_producer *p = NULL;
    struct shmq_consumer *c = NULL;
    enum shmq_status s;
    if ((s = shmq_create(argv[1], &opts, &q)) != SHMQ_OK) return fail("create", s);
    if ((s = shmq_consumer_new(q, "g", &c)) != SHMQ_OK) return fail("consumer", s);
    if ((s = shmq_producer_new(q, &p)) != SHMQ_OK) return fail("producer", s);
    unsigned char msg[64];
    memset(msg, 7, sizeof msg);
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if ((s = shmq_publish(p, msg, sizeof msg, 0, NULL)) != SHMQ_OK) return fail("publish", s);
    }
    double t1 = now_ns();
    struct shmq_message m;
    unsigned long sum = 0;
    for (long i = 0; i < n; i++) {
        if ((s = shmq_poll(c, 0, &m)) != SHMQ_OK) return fail("poll", s);
        sum += m.data[0];
    }
    double t2 = now_ns();
    printf("c    publish %.1f ns/call  poll %.1f ns/call  (%ld messages, check %lu)\n",
           (t1 - t0) / n, (t2 - t1) / n, n, sum);
    shmq_producer_free(p);
    shmq_consumer_free(c);
    shmq_close(q);
    return 0;
}
