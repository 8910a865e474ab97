/*
 * idempotent: publishes through an idempotent producer. Run by ffi/tests/idempotent.rs.
 *
 *   usage: idempotent PATH ID COUNT
 *
 * Takes producer id ID, publishes "seq <s>" as sequence numbers s from
 * shmq_idempotent_next_sequence up to COUNT, then retries every sequence number 0..COUNT and
 * checks that each retry is a duplicate with the offset the first publish of this run got
 * (for those it published). Prints "next <n> published <p> duplicates <d>" on success;
 * exits 3 if the id is busy (SHMQ_EBUSY), 1 after printing any other failure to stderr, 2 on
 * bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmq.h"

#define TIMEOUT_NS 20000000000LL

static int fail(const char *what, shmq_status st) {
    fprintf(stderr, "idempotent: %s: %s (%s)\n", what, shmq_status_name(st), shmq_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: idempotent PATH ID COUNT\n");
        return 2;
    }
    uint64_t count = strtoull(argv[3], NULL, 10);
    shmq_queue *q = NULL;
    shmq_status st = shmq_open(argv[1], &q);
    if (st != SHMQ_OK)
        return fail("shmq_open", st);
    shmq_idempotent_producer *p = NULL;
    st = shmq_idempotent_producer_new(q, argv[2], 0, 0, &p);
    if (st == SHMQ_EBUSY) {
        printf("busy: %s\n", shmq_last_error());
        shmq_close(q);
        return 3;
    }
    if (st != SHMQ_OK)
        return fail("shmq_idempotent_producer_new", st);
    uint64_t next = 0;
    st = shmq_idempotent_next_sequence(p, &next);
    if (st != SHMQ_OK)
        return fail("shmq_idempotent_next_sequence", st);
    uint64_t *offsets = calloc(count ? count : 1, sizeof *offsets);
    if (!offsets)
        return 1;
    uint64_t published = 0, duplicates = 0;
    for (uint64_t s = next; s < count; s++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "seq %" PRIu64, s);
        bool dup = true;
        st = shmq_idempotent_publish(p, s, (const uint8_t *)msg, (size_t)n, TIMEOUT_NS,
                                     &offsets[s], &dup);
        if (st != SHMQ_OK)
            return fail("shmq_idempotent_publish", st);
        if (dup) {
            fprintf(stderr, "idempotent: seq %" PRIu64 " was new but answered duplicate\n", s);
            return 1;
        }
        published++;
    }
    for (uint64_t s = 0; s < count; s++) {
        uint64_t offset = UINT64_MAX;
        bool dup = false;
        st = shmq_idempotent_publish(p, s, (const uint8_t *)"retry", 5, TIMEOUT_NS, &offset,
                                     &dup);
        if (st != SHMQ_OK)
            return fail("shmq_idempotent_publish (retry)", st);
        if (!dup || (s >= next && offset != offsets[s])) {
            fprintf(stderr, "idempotent: retry of seq %" PRIu64 ": duplicate %d, offset %" PRIu64
                    "\n", s, dup, offset);
            return 1;
        }
        duplicates++;
    }
    st = shmq_idempotent_publish(NULL, 0, NULL, 0, 0, NULL, NULL);
    if (st != SHMQ_EINVAL)
        return fail("shmq_idempotent_publish(NULL)", st);
    printf("next %" PRIu64 " published %" PRIu64 " duplicates %" PRIu64 "\n", next, published,
           duplicates);
    free(offsets);
    shmq_idempotent_producer_free(p);
    shmq_close(q);
    return 0;
}
