/*
 * work_worker: a worker of a work group through the C ABI. Run by ffi/tests/work.rs against
 * a Rust producer.
 *
 *   usage: work_worker PATH work DLQ COUNT
 *          work_worker PATH lease
 *          work_worker DLQ dead COUNT
 *
 * work: joins work group "jobs" (created by the first worker with a visibility timeout of
 * 10 s, 3 deliveries at most, a fixed 10 ms back-off and DLQ as its dead-letter queue) and
 * settles records "job <i>" by i % 10: 3 is rejected, 7 is nacked once (delay 0) and acked
 * on its second delivery, 9 is nacked with the group's back-off until it is dead-lettered,
 * every other one is acked. Prints "ack <offset>", "reject <offset>" or "dead <offset>" (the
 * nack of a third delivery) per settlement, and
 * stops once the group counts COUNT records acked or dead-lettered.
 *
 * lease: joins work group "lease" (visibility timeout 1 s) and checks SHMQ_ELEASE: a
 * delivery acked after its lease ran out, a second ack, a ticket of made-up parts; then
 * that extend moves the deadline and the extended delivery acks after the old one passed,
 * that the pending list and the counters agree. Needs 2 records in the queue.
 *
 * dead: reads COUNT records of the dead-letter queue DLQ (group "audit") and prints
 * "dead <offset> <reason> <deliveries> <source> <payload>" for each, parsed with
 * shmq_dead_letter_parse.
 *
 * Exits 0 on success, 1 after printing a failure to stderr, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmq.h"

#define POLL_NS 100000000LL
#define LIMIT_S 120

static int fail(const char *what, shmq_status st) {
    fprintf(stderr, "work_worker: %s: %s (%s)\n", what, shmq_status_name(st), shmq_last_error());
    return 1;
}

static int check(int ok, const char *what) {
    if (!ok) fprintf(stderr, "work_worker: check failed: %s\n", what);
    return ok;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* The i of a payload "job <i>", or -1. */
static long job_number(const shmq_job *job) {
    char text[32];
    if (job->len < 5 || job->len >= sizeof text) return -1;
    memcpy(text, job->data, job->len);
    text[job->len] = '\0';
    if (strncmp(text, "job ", 4) != 0) return -1;
    return strtol(text + 4, NULL, 10);
}

static int work(shmq_queue *q, const char *dlq, uint64_t count) {
    shmq_work_options o;
    shmq_status st = shmq_work_options_default(&o);
    if (st != SHMQ_OK) return fail("shmq_work_options_default", st);
    o.visibility_timeout_ms = 10000;
    o.max_deliveries = 3;
    o.backoff = SHMQ_BACKOFF_FIXED;
    o.backoff_initial_ms = 10;
    o.dead_letter = dlq;
    shmq_worker *w = NULL;
    st = shmq_worker_new(q, "jobs", &o, &w);
    if (st != SHMQ_OK) return fail("shmq_worker_new", st);
    time_t start = time(NULL);
    for (;;) {
        shmq_work_info info;
        st = shmq_work_group_info(q, "jobs", &info);
        if (st != SHMQ_OK) return fail("shmq_work_group_info", st);
        if (info.acked + info.dead_lettered >= count) break;
        if (time(NULL) - start > LIMIT_S) {
            fprintf(stderr, "work_worker: %" PRIu64 " acked, %" PRIu64 " dead after %d s\n",
                    info.acked, info.dead_lettered, LIMIT_S);
            return 1;
        }
        shmq_job job;
        st = shmq_work_poll(w, POLL_NS, &job);
        if (st == SHMQ_TIMEOUT) continue;
        if (st != SHMQ_OK) return fail("shmq_work_poll", st);
        long i = job_number(&job);
        if (!check(i >= 0 && (uint64_t)i == job.offset, "payload names the offset")) return 1;
        if (!check(job.deliveries == job.ticket.deliveries && job.offset == job.ticket.offset,
                   "ticket matches the job"))
            return 1;
        const char *done = "ack";
        if (i % 10 == 3) {
            st = shmq_work_reject(w, job.ticket);
            done = "reject";
        } else if (i % 10 == 7 && job.deliveries == 1) {
            st = shmq_work_nack(w, job.ticket, 0);
            done = NULL;
        } else if (i % 10 == 9) {
            st = shmq_work_nack(w, job.ticket, SHMQ_NACK_BACKOFF);
            done = job.deliveries >= 3 ? "dead" : NULL;
        } else {
            st = shmq_work_ack(w, job.ticket);
        }
        if (st != SHMQ_OK) return fail("settle", st);
        if (done != NULL) printf("%s %" PRIu64 "\n", done, job.offset);
    }
    shmq_worker_free(w);
    return 0;
}

static int lease(shmq_queue *q) {
    shmq_work_options o;
    shmq_status st = shmq_work_options_default(&o);
    if (st != SHMQ_OK) return fail("shmq_work_options_default", st);
    o.visibility_timeout_ms = 1000;
    shmq_worker *w = NULL;
    st = shmq_worker_new(q, "lease", &o, &w);
    if (st != SHMQ_OK) return fail("shmq_worker_new", st);
    shmq_job job;
    st = shmq_work_poll(w, 10000000000LL, &job);
    if (st != SHMQ_OK) return fail("shmq_work_poll", st);
    if (!check(job.offset == 0 && job.deliveries == 1, "first delivery of 0")) return 1;
    shmq_ticket first = job.ticket;

    /* A made-up ticket settles nothing. */
    shmq_ticket bogus = first;
    bogus.deliveries += 1;
    st = shmq_work_ack(w, bogus);
    if (!check(st == SHMQ_ELEASE, "a made-up ticket is SHMQ_ELEASE")) return fail("ack", st);

    /* Past the lease: SHMQ_ELEASE, and the record comes again. */
    sleep_ms(1500);
    st = shmq_work_ack(w, first);
    if (!check(st == SHMQ_ELEASE, "an expired ack is SHMQ_ELEASE")) return fail("ack", st);
    if (!check(strstr(shmq_last_error(), "record 0") != NULL, "the message names the record"))
        return 1;
    st = shmq_work_poll(w, 10000000000LL, &job);
    if (st != SHMQ_OK) return fail("shmq_work_poll (again)", st);
    if (!check(job.offset == 0 && job.deliveries == 2, "second delivery of 0")) return 1;

    /* Extend past the visibility timeout, then ack after the old deadline. */
    shmq_ticket t = job.ticket;
    uint64_t old = t.deadline_ms;
    st = shmq_work_extend(w, &t, 4000);
    if (st != SHMQ_OK) return fail("shmq_work_extend", st);
    if (!check(t.deadline_ms > old, "extend moves the deadline")) return 1;
    st = shmq_work_extend(w, &job.ticket, 2000);
    if (!check(st == SHMQ_ELEASE, "the ticket before the extension is stale")) return 1;

    shmq_pending pending[4];
    size_t n = 0;
    st = shmq_work_pending(q, "lease", pending, 4, &n);
    if (st != SHMQ_OK) return fail("shmq_work_pending", st);
    if (!check(n == 1 && pending[0].offset == 0 &&
                   pending[0].state == SHMQ_PENDING_IN_FLIGHT && pending[0].deliveries == 2 &&
                   pending[0].deadline_ms == t.deadline_ms && pending[0].holder_alive,
               "pending lists the extended delivery"))
        return 1;
    st = shmq_work_pending(q, "lease", NULL, 0, &n);
    if (!check(st == SHMQ_OK && n == 1, "a count without entries")) return 1;

    sleep_ms(1500);
    st = shmq_work_ack(w, t);
    if (st != SHMQ_OK) return fail("ack after extend", st);
    st = shmq_work_ack(w, t);
    if (!check(st == SHMQ_ELEASE, "a second ack is SHMQ_ELEASE")) return 1;

    /* Reject record 1: no dead-letter queue, so it is counted and dropped. */
    st = shmq_work_poll(w, 10000000000LL, &job);
    if (st != SHMQ_OK) return fail("shmq_work_poll (1)", st);
    st = shmq_work_reject(w, job.ticket);
    if (st != SHMQ_OK) return fail("shmq_work_reject", st);

    shmq_work_info info;
    st = shmq_work_group_info(q, "lease", &info);
    if (st != SHMQ_OK) return fail("shmq_work_group_info", st);
    if (!check(info.delivered == 2 && info.redelivered == 1 && info.acked == 1 &&
                   info.dead_lettered == 1 && info.in_flight == 0 && info.base == 2 &&
                   info.workers == 1,
               "the counters"))
        return 1;
    shmq_worker_free(w);
    printf("lease: ok\n");
    return 0;
}

static int dead(shmq_queue *q, uint64_t count) {
    shmq_consumer *c = NULL;
    shmq_status st = shmq_consumer_new(q, "audit", &c);
    if (st != SHMQ_OK) return fail("shmq_consumer_new", st);
    for (uint64_t k = 0; k < count; k++) {
        shmq_message m;
        st = shmq_poll(c, 10000000000LL, &m);
        if (st != SHMQ_OK) return fail("shmq_poll", st);
        shmq_dead_letter d;
        st = shmq_dead_letter_parse(m.data, m.len, &d);
        if (st != SHMQ_OK) return fail("shmq_dead_letter_parse", st);
        printf("dead %" PRIu64 " %d %" PRIu32 " %.*s %.*s\n", d.offset, (int)d.reason,
               d.deliveries, (int)d.source_len, d.source, (int)d.payload_len,
               (const char *)d.payload);
        st = shmq_commit(c, m.offset);
        if (st != SHMQ_OK) return fail("shmq_commit", st);
    }
    /* A record that is not a dead letter. */
    shmq_dead_letter d;
    st = shmq_dead_letter_parse((const uint8_t *)"job 1", 5, &d);
    if (!check(st == SHMQ_ECORRUPT, "a plain payload is SHMQ_ECORRUPT")) return 1;
    shmq_consumer_free(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: work_worker PATH work DLQ COUNT | PATH lease | DLQ dead COUNT\n");
        return 2;
    }
    shmq_queue *q = NULL;
    shmq_status st = shmq_open(argv[1], &q);
    if (st != SHMQ_OK) return fail("shmq_open", st);
    int rc = 2;
    if (strcmp(argv[2], "work") == 0 && argc == 5) {
        rc = work(q, argv[3], strtoull(argv[4], NULL, 10));
    } else if (strcmp(argv[2], "lease") == 0 && argc == 3) {
        rc = lease(q);
    } else if (strcmp(argv[2], "dead") == 0 && argc == 4) {
        rc = dead(q, strtoull(argv[3], NULL, 10));
    }
    shmq_close(q);
    return rc;
}
