/*
 * truncate_while_running: a C process that publishes and consumes while the test truncates
 * its queue file under it. Run by ffi/tests/surroundings.rs.
 *
 *   usage: truncate_while_running PATH OTHER
 *
 * PATH and OTHER are existing queues. The program publishes records to PATH and reads them
 * back as group "c", printing "running" once 200 have made the round trip; the test then
 * truncates PATH. The program goes on until a call returns SHMQ_ESTALE (60 s at most), then
 * checks that the next publish, poll and shmq_check_file return SHMQ_ESTALE too, with a
 * last-error message that says "truncated", and that OTHER still publishes and delivers.
 *
 * Prints "estale" and exits 0 on success; exits 1 after printing the failure to stderr, 2 on
 * bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmq.h"

enum { PAYLOAD = 100, ROUND_TRIPS_BEFORE_READY = 200, LIMIT_S = 60 };
static const int64_t SECOND = 1000000000;

static void fail(const char *what, shmq_status st) {
    fprintf(stderr, "truncate_while_running: %s: %s (%s)\n", what, shmq_status_name(st),
            shmq_last_error());
    exit(1);
}

static void expect_stale(const char *what, shmq_status st) {
    if (st != SHMQ_ESTALE) {
        fail(what, st);
    }
    if (strstr(shmq_last_error(), "truncated") == NULL) {
        fprintf(stderr, "truncate_while_running: %s: message does not say truncated: %s\n",
                what, shmq_last_error());
        exit(1);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The bystander queue still publishes and delivers. */
static void other_works(const shmq_queue *other) {
    shmq_producer *p = NULL;
    shmq_consumer *c = NULL;
    shmq_status st = shmq_consumer_new(other, "bystander", &c);
    if (st != SHMQ_OK) fail("other: consumer", st);
    st = shmq_producer_new(other, &p);
    if (st != SHMQ_OK) fail("other: producer", st);
    uint64_t offset = 0;
    st = shmq_publish(p, (const uint8_t *)"still here", 10, SECOND, &offset);
    if (st != SHMQ_OK) fail("other: publish", st);
    shmq_message m;
    st = shmq_poll(c, 10 * SECOND, &m);
    if (st != SHMQ_OK) fail("other: poll", st);
    if (m.offset != offset || m.len != 10 || memcmp(m.data, "still here", 10) != 0) {
        fprintf(stderr, "truncate_while_running: other: wrong record\n");
        exit(1);
    }
    shmq_producer_free(p);
    shmq_consumer_free(c);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: truncate_while_running PATH OTHER\n");
        return 2;
    }
    shmq_queue *q = NULL, *other = NULL;
    shmq_producer *p = NULL;
    shmq_consumer *c = NULL;
    shmq_status st = shmq_open(argv[1], &q);
    if (st != SHMQ_OK) fail("open", st);
    st = shmq_open(argv[2], &other);
    if (st != SHMQ_OK) fail("open other", st);
    st = shmq_consumer_new(q, "c", &c);
    if (st != SHMQ_OK) fail("consumer", st);
    st = shmq_producer_new(q, &p);
    if (st != SHMQ_OK) fail("producer", st);

    uint8_t payload[PAYLOAD];
    memset(payload, 'x', sizeof payload);
    double start = now_s();
    long trips = 0;
    bool stale = false;
    while (!stale) {
        if (now_s() - start > LIMIT_S) {
            fprintf(stderr, "truncate_while_running: no SHMQ_ESTALE within %d s\n", LIMIT_S);
            return 1;
        }
        st = shmq_publish(p, payload, sizeof payload, SECOND, NULL);
        if (st == SHMQ_ESTALE) {
            expect_stale("publish", st);
            stale = true;
            break;
        }
        if (st != SHMQ_OK) fail("publish", st);
        shmq_message m;
        st = shmq_poll(c, SECOND, &m);
        if (st == SHMQ_ESTALE) {
            expect_stale("poll", st);
            stale = true;
            break;
        }
        if (st != SHMQ_OK) fail("poll", st);
        /* The payload is read in place: a truncation after the poll shows as zeros here,
         * which shmq_check_file then explains. */
        if (m.len != PAYLOAD || memcmp(m.data, payload, PAYLOAD) != 0) {
            st = shmq_check_file(q);
            expect_stale("check after a torn record", st);
            stale = true;
            break;
        }
        st = shmq_commit(c, m.offset);
        if (st == SHMQ_ESTALE) {
            expect_stale("commit", st);
            stale = true;
            break;
        }
        if (st != SHMQ_OK) fail("commit", st);
        if (++trips == ROUND_TRIPS_BEFORE_READY) {
            printf("running\n");
            fflush(stdout);
        }
    }
    /* Every later call on the file says the same. */
    expect_stale("publish after", shmq_publish(p, payload, sizeof payload, SECOND, NULL));
    shmq_message m;
    expect_stale("poll after", shmq_poll(c, SECOND, &m));
    expect_stale("check_file after", shmq_check_file(q));
    if (strcmp(shmq_status_name(SHMQ_ESTALE), "SHMQ_ESTALE") != 0) {
        fprintf(stderr, "truncate_while_running: status name %s\n",
                shmq_status_name(SHMQ_ESTALE));
        return 1;
    }
    other_works(other);
    shmq_producer_free(p);
    shmq_consumer_free(c);
    shmq_close(q);
    shmq_close(other);
    printf("estale\n");
    return 0;
}
