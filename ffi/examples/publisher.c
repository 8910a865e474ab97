/*
 * publisher: publishes COUNT messages "message <i>" to the queue at PATH (created with
 * default options if it does not exist), then waits until they are durable.
 *
 *   usage: publisher PATH COUNT
 *   build: cc -I ffi/include ffi/examples/publisher.c -L target/release -lshmq -o publisher
 *          (or: make -C ffi/examples)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmq.h"

static int fail(const char *what, shmq_status st) {
    fprintf(stderr, "publisher: %s: %s: %s\n", what, shmq_status_name(st), shmq_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PATH COUNT\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    uint64_t count = strtoull(argv[2], NULL, 10);

    shmq_queue *queue = NULL;
    shmq_status st = shmq_open(path, &queue);
    if (st == SHMQ_ENOENT) {
        shmq_options options;
        shmq_options_default(&options);
        options.capacity_bytes = 1 << 20;
        options.max_message_bytes = 4096;
        st = shmq_create(path, &options, &queue);
    }
    if (st != SHMQ_OK) return fail("open", st);

    shmq_producer *producer = NULL;
    st = shmq_producer_new(queue, &producer);
    if (st != SHMQ_OK) {
        shmq_close(queue);
        return fail("producer", st);
    }

    char buf[64];
    uint64_t offset = 0;
    int rc = 0;
    for (uint64_t i = 0; i < count; i++) {
        int len = snprintf(buf, sizeof buf, "message %" PRIu64, i);
        /* Block (up to 30 s) while the ring is full of unconsumed records. */
        st = shmq_publish(producer, (const uint8_t *)buf, (size_t)len, 30000000000LL, &offset);
        if (st != SHMQ_OK) {
            rc = fail("publish", st);
            break;
        }
    }
    if (rc == 0 && count > 0) {
        st = shmq_wait_durable(producer, offset, -1);
        if (st != SHMQ_OK) rc = fail("wait_durable", st);
    }
    if (rc == 0) printf("published %" PRIu64 " messages, last offset %" PRIu64 "\n", count, offset);

    /* A producer keeps the mapping alive on its own; free order does not matter. */
    shmq_producer_free(producer);
    shmq_close(queue);
    return rc;
}
