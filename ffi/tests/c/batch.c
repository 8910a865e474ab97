/*
 * batch: publishes or reads a queue in batches through shmq_publish_batch and
 * shmq_poll_batch. Run by ffi/tests/batch.rs against a Rust peer.
 *
 *   usage: batch PATH produce COUNT BATCH
 *          batch PATH consume COUNT BATCH
 *
 * produce: publishes records "batch <i>" for i in 0..COUNT, BATCH records per call, and
 * checks that each call's first offset is i (the queue starts empty and has no other
 * producer). consume: joins group "g" and reads COUNT records with shmq_poll_batch (at most
 * BATCH per call), checking that record i has offset i and payload "batch <i>", and commits
 * after each call. Prints one line on success; exits 1 after printing a failure to stderr,
 * 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmq.h"

#define TIMEOUT_NS 20000000000LL

static int fail(const char *what, shmq_status st) {
    fprintf(stderr, "batch: %s: %s (%s)\n", what, shmq_status_name(st), shmq_last_error());
    return 1;
}

struct reader {
    uint64_t next;
    int bad;
};

static void on_record(void *ctx, const shmq_message *m) {
    struct reader *r = ctx;
    char want[32];
    int n = snprintf(want, sizeof want, "batch %" PRIu64, r->next);
    if (m->offset != r->next || m->len != (size_t)n || memcmp(m->data, want, m->len) != 0) {
        fprintf(stderr, "batch: record %" PRIu64 ": offset %" PRIu64 ", %zu bytes\n", r->next,
                m->offset, m->len);
        r->bad = 1;
    }
    r->next++;
}

static int produce(shmq_queue *q, uint64_t count, size_t batch) {
    shmq_producer *p = NULL;
    shmq_status st = shmq_producer_new(q, &p);
    if (st != SHMQ_OK) return fail("shmq_producer_new", st);
    char (*bufs)[32] = calloc(batch, 32);
    shmq_record *records = calloc(batch, sizeof *records);
    if (bufs == NULL || records == NULL) return fail("calloc", SHMQ_EINTERNAL);
    for (uint64_t i = 0; i < count; i += batch) {
        size_t n = count - i < batch ? (size_t)(count - i) : batch;
        for (size_t k = 0; k < n; k++) {
            int len = snprintf(bufs[k], 32, "batch %" PRIu64, i + k);
            records[k].data = (const uint8_t *)bufs[k];
            records[k].len = (size_t)len;
        }
        uint64_t first = UINT64_MAX;
        st = shmq_publish_batch(p, records, n, TIMEOUT_NS, &first);
        if (st != SHMQ_OK) return fail("shmq_publish_batch", st);
        if (first != i) {
            fprintf(stderr, "batch: first offset %" PRIu64 ", expected %" PRIu64 "\n", first, i);
            return 1;
        }
    }
    free(bufs);
    free(records);
    shmq_producer_free(p);
    printf("batch: produced %" PRIu64 " records\n", count);
    return 0;
}

static int consume(shmq_queue *q, uint64_t count, size_t batch) {
    shmq_consumer *c = NULL;
    shmq_status st = shmq_consumer_new(q, "g", &c);
    if (st != SHMQ_OK) return fail("shmq_consumer_new", st);
    struct reader r = {0, 0};
    uint64_t calls = 0;
    while (r.next < count) {
        size_t got = 0;
        st = shmq_poll_batch(c, batch, TIMEOUT_NS, on_record, &r, &got);
        if (st != SHMQ_OK) return fail("shmq_poll_batch", st);
        if (got == 0 || got > batch || r.bad) {
            fprintf(stderr, "batch: a call handed out %zu records (max %zu)\n", got, batch);
            return 1;
        }
        calls++;
        st = shmq_commit(c, r.next - 1);
        if (st != SHMQ_OK) return fail("shmq_commit", st);
    }
    shmq_consumer_free(c);
    printf("batch: consumed %" PRIu64 " records in %" PRIu64 " calls\n", count, calls);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: batch PATH produce|consume COUNT BATCH\n");
        return 2;
    }
    uint64_t count = strtoull(argv[3], NULL, 10);
    size_t batch = (size_t)strtoull(argv[4], NULL, 10);
    if (batch == 0) return 2;
    shmq_queue *q = NULL;
    shmq_status st = shmq_open(argv[1], &q);
    if (st != SHMQ_OK) return fail("shmq_open", st);
    int rc;
    if (strcmp(argv[2], "produce") == 0) {
        rc = produce(q, count, batch);
    } else if (strcmp(argv[2], "consume") == 0) {
        rc = consume(q, count, batch);
    } else {
        rc = 2;
    }
    shmq_close(q);
    return rc;
}
