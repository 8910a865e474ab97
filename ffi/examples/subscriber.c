/*
 * subscriber: reads COUNT messages from consumer group GROUP of the queue at PATH, checks
 * that they are "message <i>" in order, commits them and exits.
 *
 *   usage: subscriber PATH GROUP COUNT
 *   build: cc -I ffi/include ffi/examples/subscriber.c -L target/release -lshmq -o subscriber
 *          (or: make -C ffi/examples)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmq.h"

static int fail(const char *what, shmq_status st) {
    fprintf(stderr, "subscriber: %s: %s: %s\n", what, shmq_status_name(st), shmq_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PATH GROUP COUNT\n", argv[0]);
        return 2;
    }
    uint64_t count = strtoull(argv[3], NULL, 10);

    shmq_queue *queue = NULL;
    shmq_status st = shmq_open(argv[1], &queue);
    if (st != SHMQ_OK) return fail("open", st);
    shmq_consumer *consumer = NULL;
    st = shmq_consumer_new(queue, argv[2], &consumer);
    shmq_close(queue); /* the consumer keeps the mapping alive */
    if (st != SHMQ_OK) return fail("consumer", st);

    int rc = 0;
    char want[64];
    int64_t last = -1;
    for (uint64_t i = 0; i < count; i++) {
        shmq_message msg;
        st = shmq_poll(consumer, 10000000000LL, &msg); /* wait up to 10 s */
        if (st != SHMQ_OK) {
            rc = fail("poll", st);
            break;
        }
        /* msg.data is valid only until the next call on `consumer`: check it now. */
        int len = snprintf(want, sizeof want, "message %" PRIu64, i);
        if (msg.len != (size_t)len || memcmp(msg.data, want, msg.len) != 0 ||
            (int64_t)msg.offset <= last) {
            fprintf(stderr, "subscriber: message %" PRIu64 " (offset %" PRIu64 ") is wrong: %.*s\n",
                    i, msg.offset, (int)msg.len, (const char *)msg.data);
            rc = 1;
            break;
        }
        last = (int64_t)msg.offset;
        /* Commit every 256 messages (and the last): at-least-once, and frees ring space. */
        if (i % 256 == 255 || i + 1 == count) {
            st = shmq_commit(consumer, msg.offset);
            if (st != SHMQ_OK) {
                rc = fail("commit", st);
                break;
            }
        }
    }
    if (rc == 0) printf("received %" PRIu64 " messages\n", count);
    shmq_consumer_free(consumer);
    return rc;
}
