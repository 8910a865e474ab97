/*
 * topic: publishes keyed sequences to a topic, or reads them back as a member of a consumer
 * group and checks that every key's sequence arrives complete and in order.
 *
 *   usage: topic publish DIR KEYS SEQS        keys "key-<k>", values "<seq>", seq-major
 *          topic consume DIR GROUP KEYS SEQS  reads KEYS * SEQS records, checks, commits
 *   build: cc -I ffi/include ffi/examples/topic.c -L target/release -lshmq -o topic
 *          (or: make -C ffi/examples)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmq.h"

static int fail(const char *what, shmq_status st) {
    fprintf(stderr, "topic: %s: %s: %s\n", what, shmq_status_name(st), shmq_last_error());
    return 1;
}

static int publish(shmq_topic *topic, uint32_t keys, uint32_t seqs) {
    uint32_t partitions = 0;
    shmq_status st = shmq_topic_partitions(topic, &partitions);
    if (st != SHMQ_OK) return fail("partitions", st);
    shmq_topic_producer *producer = NULL;
    st = shmq_topic_producer_new(topic, &producer);
    if (st != SHMQ_OK) return fail("producer", st);
    int rc = 0;
    char key[32], value[32];
    for (uint32_t seq = 0; seq < seqs && rc == 0; seq++) {
        for (uint32_t k = 0; k < keys; k++) {
            int klen = snprintf(key, sizeof key, "key-%" PRIu32, k);
            int vlen = snprintf(value, sizeof value, "%" PRIu32, seq);
            uint32_t partition = 0, expected = 0;
            st = shmq_topic_publish_keyed(producer, (const uint8_t *)key, (size_t)klen,
                                          (const uint8_t *)value, (size_t)vlen,
                                          10000000000LL, &partition, NULL);
            if (st != SHMQ_OK) {
                rc = fail("publish", st);
                break;
            }
            st = shmq_topic_partition_for_key((const uint8_t *)key, (size_t)klen, partitions,
                                              &expected);
            if (st != SHMQ_OK || partition != expected) {
                fprintf(stderr, "topic: %s went to partition %" PRIu32 ", not %" PRIu32 "\n",
                        key, partition, expected);
                rc = 1;
                break;
            }
        }
    }
    shmq_topic_producer_free(producer);
    return rc;
}

static int consume(shmq_topic *topic, const char *group, uint32_t keys, uint32_t seqs) {
    uint32_t partitions = 0;
    shmq_status st = shmq_topic_partitions(topic, &partitions);
    if (st != SHMQ_OK) return fail("partitions", st);
    uint32_t *next = calloc(keys, sizeof *next);
    if (next == NULL) return 1;
    shmq_topic_consumer *consumer = NULL;
    st = shmq_topic_consumer_new(topic, group, &consumer);
    if (st != SHMQ_OK) {
        free(next);
        return fail("consumer", st);
    }
    int rc = 0;
    for (uint64_t i = 0; i < (uint64_t)keys * seqs; i++) {
        shmq_topic_message m;
        st = shmq_topic_poll(consumer, 10000000000LL, &m); /* wait up to 10 s */
        if (st != SHMQ_OK) {
            rc = fail("poll", st);
            break;
        }
        /* m.key and m.data are valid only until the next call on `consumer`. */
        char key[32], value[32];
        if (!m.has_key || m.key_len >= sizeof key || m.len >= sizeof value) {
            fprintf(stderr, "topic: record %" PRIu64 " has no key or is too long\n", i);
            rc = 1;
            break;
        }
        memcpy(key, m.key, m.key_len);
        key[m.key_len] = '\0';
        memcpy(value, m.data, m.len);
        value[m.len] = '\0';
        /* Check the prefix first: past a shorter key's NUL the buffer is uninitialised. */
        int keyed = strncmp(key, "key-", 4) == 0;
        uint32_t k = keyed ? (uint32_t)strtoul(key + 4, NULL, 10) : 0;
        uint32_t seq = (uint32_t)strtoul(value, NULL, 10);
        uint32_t expected = 0;
        st = shmq_topic_partition_for_key(m.key, m.key_len, partitions, &expected);
        if (st != SHMQ_OK || !keyed || k >= keys || seq != next[k] || m.partition != expected) {
            fprintf(stderr, "topic: %s = %s in partition %" PRIu32 " is out of order\n", key,
                    value, m.partition);
            rc = 1;
            break;
        }
        next[k]++;
        st = shmq_topic_commit(consumer, m.partition, m.offset);
        if (st != SHMQ_OK) {
            rc = fail("commit", st);
            break;
        }
    }
    shmq_topic_consumer_free(consumer);
    free(next);
    return rc;
}

int main(int argc, char **argv) {
    int publishing = argc == 5 && strcmp(argv[1], "publish") == 0;
    int consuming = argc == 6 && strcmp(argv[1], "consume") == 0;
    if (!publishing && !consuming) {
        fprintf(stderr, "usage: %s publish DIR KEYS SEQS | consume DIR GROUP KEYS SEQS\n",
                argv[0]);
        return 2;
    }
    shmq_topic *topic = NULL;
    shmq_status st = shmq_topic_open(argv[2], &topic);
    if (st != SHMQ_OK) return fail("open", st);
    int rc;
    if (publishing) {
        rc = publish(topic, (uint32_t)strtoul(argv[3], NULL, 10),
                     (uint32_t)strtoul(argv[4], NULL, 10));
    } else {
        rc = consume(topic, argv[3], (uint32_t)strtoul(argv[4], NULL, 10),
                     (uint32_t)strtoul(argv[5], NULL, 10));
    }
    shmq_topic_close(topic);
    return rc;
}
