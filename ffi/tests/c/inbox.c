/*
 * inbox: an inbox through the C ABI. Run by ffi/tests/inbox.rs against Rust peers.
 *
 *   usage: inbox PATH apply COUNT
 *          inbox PATH checks
 *
 * apply: opens inbox "effects" of the queue at PATH (window 4096) and begins the keys
 * "key <i>" for i in 0..COUNT, each twice; prints "applied <i>" for each key it got fresh and
 * records it done. A key busy in another process is retried after 1 ms.
 *
 * checks: on inbox "checks" (window 64): fresh, busy (a second handle) and done; a freed
 * mark releasing its key; a key over 64 bytes (SHMQ_EINVAL); the counters; deletion refused
 * while a key is held (SHMQ_EBUSY), then done; an unknown inbox (SHMQ_ENOENT); NULL
 * arguments (SHMQ_EINVAL).
 *
 * Exits 0 on success, 1 after printing a failure to stderr, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmq.h"

static int fail(const char *what, shmq_status st) {
    fprintf(stderr, "inbox: %s: %s (%s)\n", what, shmq_status_name(st), shmq_last_error());
    return 1;
}

static int check(int ok, const char *what) {
    if (!ok) fprintf(stderr, "inbox: check failed: %s\n", what);
    return ok;
}

/* Begins `key` on `inbox`: the status, with the outcome and mark stored. */
static shmq_status begin(shmq_inbox *inbox, const char *key, shmq_admit *admit, shmq_mark **mark) {
    return shmq_inbox_begin(inbox, (const uint8_t *)key, strlen(key), admit, mark);
}

static int apply(shmq_queue *q, long count) {
    shmq_inbox *inbox = NULL;
    shmq_status st = shmq_inbox_new(q, "effects", 4096, &inbox);
    if (st != SHMQ_OK) return fail("shmq_inbox_new", st);
    int rc = 0;
    for (long pass = 0; pass < 2 && rc == 0; pass++) {
        for (long i = 0; i < count && rc == 0; i++) {
            char key[32];
            snprintf(key, sizeof key, "key %ld", i);
            for (;;) {
                shmq_admit admit;
                shmq_mark *mark = NULL;
                st = begin(inbox, key, &admit, &mark);
                if (st != SHMQ_OK) {
                    rc = fail("shmq_inbox_begin", st);
                    break;
                }
                if (admit == SHMQ_ADMIT_BUSY) {
                    struct timespec t = {0, 1000000L};
                    nanosleep(&t, NULL);
                    continue;
                }
                if (admit == SHMQ_ADMIT_FRESH) {
                    printf("applied %ld\n", i);
                    fflush(stdout);
                    st = shmq_mark_done(mark);
                    if (st != SHMQ_OK) rc = fail("shmq_mark_done", st);
                }
                break;
            }
        }
    }
    shmq_inbox_free(inbox);
    return rc;
}

static int checks(shmq_queue *q) {
    shmq_inbox *a = NULL, *b = NULL;
    shmq_status st = shmq_inbox_new(q, "checks", 64, &a);
    if (st != SHMQ_OK) return fail("shmq_inbox_new", st);
    st = shmq_inbox_new(q, "checks", 0, &b);
    if (st != SHMQ_OK) return fail("shmq_inbox_new (second)", st);
    shmq_admit admit;
    shmq_mark *mark = NULL, *other = NULL;
    int ok = 1;
    ok &= check(begin(a, "k1", &admit, &mark) == SHMQ_OK && admit == SHMQ_ADMIT_FRESH && mark,
                "k1 fresh");
    ok &= check(begin(b, "k1", &admit, &other) == SHMQ_OK && admit == SHMQ_ADMIT_BUSY && !other,
                "k1 busy from the second handle");
    ok &= check(shmq_inbox_delete(q, "checks") == SHMQ_EBUSY, "delete refused while held");
    ok &= check(shmq_mark_done(mark) == SHMQ_OK, "k1 done");
    ok &= check(begin(b, "k1", &admit, &other) == SHMQ_OK && admit == SHMQ_ADMIT_DONE,
                "k1 done from the second handle");
    ok &= check(begin(a, "k2", &admit, &mark) == SHMQ_OK && admit == SHMQ_ADMIT_FRESH, "k2 fresh");
    shmq_mark_free(mark);
    ok &= check(begin(b, "k2", &admit, &mark) == SHMQ_OK && admit == SHMQ_ADMIT_FRESH,
                "k2 fresh again after the free");
    ok &= check(shmq_mark_done(mark) == SHMQ_OK, "k2 done");
    uint8_t long_key[65] = {0};
    ok &= check(shmq_inbox_begin(a, long_key, sizeof long_key, &admit, &mark) == SHMQ_EINVAL,
                "a key of 65 bytes");
    ok &= check(shmq_inbox_begin(a, NULL, 0, &admit, &mark) == SHMQ_OK &&
                    admit == SHMQ_ADMIT_FRESH && shmq_mark_done(mark) == SHMQ_OK,
                "the empty key");
    shmq_inbox_info info;
    ok &= check(shmq_queue_inbox_info(q, "checks", &info) == SHMQ_OK, "info");
    ok &= check(info.window == 64 && info.admitted == 3 && info.fill == 3 && info.done == 3 &&
                    info.held == 0 && info.duplicates == 1 && info.busy == 1 && info.retaken == 1,
                "the counters");
    ok &= check(shmq_inbox_new(q, "a/b", 0, &b) == SHMQ_EINVAL, "a bad name");
    ok &= check(shmq_inbox_new(q, "other", 100, &b) == SHMQ_EINVAL, "a bad window");
    ok &= check(shmq_inbox_begin(NULL, NULL, 0, &admit, &mark) == SHMQ_EINVAL, "NULL inbox");
    ok &= check(shmq_inbox_begin(a, NULL, 1, &admit, &mark) == SHMQ_EINVAL, "NULL key");
    ok &= check(shmq_inbox_begin(a, NULL, 0, NULL, &mark) == SHMQ_EINVAL, "NULL admit_out");
    ok &= check(shmq_mark_done(NULL) == SHMQ_EINVAL, "NULL mark");
    shmq_mark_free(NULL);
    shmq_inbox_free(a);
    shmq_inbox_free(b);
    ok &= check(shmq_inbox_delete(q, "checks") == SHMQ_OK, "delete");
    ok &= check(shmq_queue_inbox_info(q, "checks", &info) == SHMQ_ENOENT, "deleted: no such inbox");
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: inbox PATH apply COUNT | inbox PATH checks\n");
        return 2;
    }
    shmq_queue *q = NULL;
    shmq_status st = shmq_open(argv[1], &q);
    if (st != SHMQ_OK) return fail("shmq_open", st);
    int rc;
    if (strcmp(argv[2], "apply") == 0 && argc == 4) {
        rc = apply(q, strtol(argv[3], NULL, 10));
    } else if (strcmp(argv[2], "checks") == 0) {
        rc = checks(q);
    } else {
        fprintf(stderr, "inbox: unknown mode %s\n", argv[2]);
        rc = 2;
    }
    shmq_close(q);
    return rc;
}
