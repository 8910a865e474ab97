/*
 * transaction: commits and aborts transactions across a topic's partitions. Run by
 * ffi/tests/transaction.rs.
 *
 *   usage: transaction TOPIC ID COUNT
 *
 * Takes transactional id ID of topic TOPIC and:
 *   1. sends "aborted <i>" to partition i % N for i in 0..COUNT, then aborts;
 *   2. sends "txn <i>" to partition i % N for i in 0..COUNT (the odd ones keyed "k<i>" with
 *      shmq_txn_send_keyed, the even ones with shmq_txn_send_to), then commits, checking the
 *      count and that the places of the records sent to a partition are dense and in order;
 *   3. sends "dropped <i>" and frees the handle without committing.
 * Prints "partitions <N> committed <count>" and one line "<partition> <offset>" per record
 * on success; exits 3 if the id is busy (SHMQ_EBUSY), 1 after printing any other failure to
 * stderr, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmq.h"

static int fail(const char *what, shmq_status st) {
    fprintf(stderr, "transaction: %s: %s (%s)\n", what, shmq_status_name(st), shmq_last_error());
    return 1;
}

/* Sends COUNT records "<prefix> <i>" to partition i % n (the odd ones keyed, the even ones
 * direct). Returns SHMQ_OK or the first failure. */
static shmq_status send_all(shmq_txn *t, const char *prefix, uint64_t count, uint32_t n) {
    for (uint64_t i = 0; i < count; i++) {
        char msg[48], key[32];
        int len = snprintf(msg, sizeof msg, "%s %" PRIu64, prefix, i);
        uint32_t want = (uint32_t)(i % n);
        shmq_status st;
        if (i % 2) {
            int klen = snprintf(key, sizeof key, "k%" PRIu64, i);
            uint32_t p = UINT32_MAX;
            st = shmq_txn_send_keyed(t, (const uint8_t *)key, (size_t)klen,
                                     (const uint8_t *)msg, (size_t)len, &p);
            uint32_t expected = UINT32_MAX;
            if (st == SHMQ_OK)
                st = shmq_topic_partition_for_key((const uint8_t *)key, (size_t)klen, n,
                                                  &expected);
            if (st == SHMQ_OK && p != expected) {
                fprintf(stderr, "transaction: key %s went to %u, not %u\n", key, p, expected);
                return SHMQ_EINTERNAL;
            }
        } else {
            st = shmq_txn_send_to(t, want, NULL, 0, (const uint8_t *)msg, (size_t)len);
        }
        if (st != SHMQ_OK)
            return st;
    }
    return SHMQ_OK;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: transaction TOPIC ID COUNT\n");
        return 2;
    }
    uint64_t count = strtoull(argv[3], NULL, 10);
    shmq_topic *topic = NULL;
    shmq_status st = shmq_topic_open(argv[1], &topic);
    if (st != SHMQ_OK)
        return fail("shmq_topic_open", st);
    uint32_t n = 0;
    st = shmq_topic_partitions(topic, &n);
    if (st != SHMQ_OK)
        return fail("shmq_topic_partitions", st);
    shmq_txn *t = NULL;
    st = shmq_transactional_producer_new(topic, argv[2], &t);
    if (st == SHMQ_EBUSY) {
        printf("busy: %s\n", shmq_last_error());
        shmq_topic_close(topic);
        return 3;
    }
    if (st != SHMQ_OK)
        return fail("shmq_transactional_producer_new", st);

    st = send_all(t, "aborted", count, n);
    if (st != SHMQ_OK)
        return fail("send (to abort)", st);
    size_t pending = 0;
    st = shmq_txn_pending(t, &pending);
    if (st != SHMQ_OK || pending != count)
        return fail("shmq_txn_pending", st);
    st = shmq_txn_abort(t);
    if (st != SHMQ_OK)
        return fail("shmq_txn_abort", st);

    st = send_all(t, "txn", count, n);
    if (st != SHMQ_OK)
        return fail("send", st);
    shmq_txn_place *places = calloc(count ? count : 1, sizeof *places);
    if (!places)
        return 1;
    size_t committed = 0;
    st = shmq_txn_commit(t, places, count, &committed);
    if (st != SHMQ_OK)
        return fail("shmq_txn_commit", st);
    if (committed != count) {
        fprintf(stderr, "transaction: committed %zu of %" PRIu64 "\n", committed, count);
        return 1;
    }
    /* Within a partition, the records got dense offsets in send order. */
    for (uint64_t i = 0; i < count; i++)
        for (uint64_t j = i + 1; j < count; j++)
            if (places[j].partition == places[i].partition) {
                if (places[j].offset != places[i].offset + 1) {
                    fprintf(stderr, "transaction: record %" PRIu64 " at %" PRIu64
                            ", the next one of its partition at %" PRIu64 "\n",
                            i, places[i].offset, places[j].offset);
                    return 1;
                }
                break;
            }
    /* An empty transaction commits nothing; a NULL array needs a capacity of 0. */
    size_t none = 7;
    st = shmq_txn_commit(t, NULL, 0, &none);
    if (st != SHMQ_OK || none != 0)
        return fail("shmq_txn_commit (empty)", st);
    st = shmq_txn_commit(t, NULL, 1, NULL);
    if (st != SHMQ_EINVAL)
        return fail("shmq_txn_commit (NULL places)", st);

    st = send_all(t, "dropped", count, n);
    if (st != SHMQ_OK)
        return fail("send (to drop)", st);
    printf("partitions %u committed %zu\n", n, committed);
    for (uint64_t i = 0; i < count; i++)
        printf("%u %" PRIu64 "\n", places[i].partition, places[i].offset);
    free(places);
    shmq_transactional_producer_free(t);
    shmq_topic_close(topic);
    return 0;
}
