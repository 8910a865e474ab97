/*
 * fork_after_open: a C process that opens a queue once and forks hundreds of children from
 * it, killing most of them with SIGKILL at random moments. Run by ffi/tests/interop.rs.
 *
 *   usage: fork_after_open PATH ACK_DIR CHILDREN SLOTS SEED KILL_MAX_US
 *
 * PATH is an existing queue with SLOTS producer slots and the group "g". Before forking, the
 * parent makes a producer P0 and joins group "p" with a consumer C0. Then, with at most
 * MAX_ALIVE children alive at once, it forks CHILDREN children. Each child:
 *
 *   1. checks that P0 and C0 (made by its parent) fail with SHMQ_EFORKED, and frees them;
 *   2. makes a producer of its own from the inherited queue handle (a producer slot leaked by
 *      an earlier killed child would show here as SHMQ_EBUSY once SLOTS children were killed);
 *   3. if it has the "g" role, joins group "g" (the parent forks a "g" child whenever none is
 *      alive, so there is at most one at a time);
 *   4. publishes records, logging each acknowledged one to ACK_DIR/c<index>.log with one
 *      write(2) ("<offset> <payload>\n"); a "g" child also reads and commits "g".
 *
 * Three in four children (seven in eight "g" children) get a kill time, uniform in
 * 0..KILL_MAX_US after their fork (after their joining "g" for a "g" child), and publish until
 * killed (stopping at KILL_RECORDS); the others publish FINISH_RECORDS records at most and
 * exit.
 * Each child reports its progress to the parent through a pipe: 'F' once the EFORKED checks
 * passed, 'J' once it joined "g". After reaping each child, the parent
 * checks that it can make a producer, that it can join "g" if the child was a "g" child (a
 * takeover if it held "g" when it was killed), and that P0 and C0 still work (a publish
 * acknowledged in ACK_DIR/parent.log, polls and commits). At the end it makes producers until
 * SHMQ_EBUSY: exactly SLOTS - 1 (P0 holds one) means no slot leaked.
 *
 * Payload of record SEQ of writer WHO ("c<index>" or "parent"): "WHO SEQ " followed by
 * (SEQ * 7 + sum of WHO's bytes) % 61 filler letters, letter j being 'a' + (SEQ + j) % 26.
 *
 * Prints one line of counts on success ("fork_after_open: children=... killed=..."); exits 1
 * after printing every failure to stderr, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

enum {
    MAX_ALIVE = 4,
    /* Records a child that is not killed publishes: 20 + a random number below this. */
    FINISH_RECORDS = 200,
    /* Records a child to be killed publishes at most (the ring holds them all); one that gets
     * there before its kill time waits for it. */
    KILL_RECORDS = 400,
    PAYLOAD_MAX = 128,
    /* After this many failures no more children are forked: the rest would say the same. */
    MAX_FAILURES = 20,
};

/* Exit codes of a child that found something wrong (it says what on stderr). */
enum {
    CHILD_EFORKED = 3, /* a handle made before the fork did not fail with SHMQ_EFORKED */
    CHILD_NO_SLOT = 4, /* shmq_producer_new failed: a leaked producer slot */
    CHILD_JOIN = 5,    /* joining "g" failed: the previous holder's lease was not taken over */
    CHILD_PUBLISH = 6,
    CHILD_LOG = 7,
    CHILD_READ = 8,
    CHILD_REPORT = 9,
};

static const int64_t MS = 1000000;
/* How long a child may take to join "g" or to finish its records (a loaded machine, valgrind). */
static const int64_t CHILD_DEADLINE_NS = 60000 * MS;
/* Publishes wait at most this long for room (the ring is sized so they never need to). */
static const int64_t PUBLISH_TIMEOUT_NS = 10000 * MS;
/* SHMQ_TIMEOUT from a publish also means the call stalled past the claim timeout and its record
 * was aborted: retried, up to this many times in a row. */
static const int PUBLISH_RETRIES = 100;

struct child {
    pid_t pid;          /* 0: free entry */
    int index;          /* c<index> */
    int report_fd;      /* read end of the child's report pipe (non-blocking) */
    bool g_role;        /* joins "g" */
    bool finish;        /* not killed: publishes a bounded number of records and exits */
    int64_t kill_delay; /* from the fork, or for a "g" child from its joining */
    int64_t kill_at;    /* 0: not armed (yet) */
    int64_t deadline;   /* to finish, or to join "g" */
    bool forked_ok;     /* reported 'F' */
    bool joined;        /* reported 'J' */
};

static struct child table[MAX_ALIVE];
static int failures;
static uint64_t rng;

/* Diagnostics go to stderr, best effort: there is nowhere else to report their failure. */
static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fork_after_open: FAIL: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    failures++;
}

/* A failure the run cannot go on after: kills the children (their records stay checked by the
 * test) and exits. */
static void die(const char *what) {
    fprintf(stderr, "fork_after_open: %s: %s\n", what, strerror(errno));
    for (int k = 0; k < MAX_ALIVE; k++) {
        if (table[k].pid > 0 && kill(table[k].pid, SIGKILL) == 0) {
            int status;
            (void)waitpid(table[k].pid, &status, 0); /* best effort: we are exiting anyway */
        }
    }
    exit(1);
}

static uint64_t next_random(void) {
    /* xorshift64: reproducible from the seed the test prints. */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) die("clock_gettime");
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns) {
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) != 0) {
        if (errno != EINTR) die("nanosleep");
    }
}

/* The payload of record `seq` of writer `who` (see the top of the file); its length, or -1 if
 * it does not fit. */
static int make_payload(char *buf, size_t cap, const char *who, uint32_t seq) {
    unsigned sum = 0;
    for (const char *c = who; *c; c++) sum += (unsigned char)*c;
    int n = snprintf(buf, cap, "%s %" PRIu32 " ", who, seq);
    size_t fill = ((size_t)seq * 7 + sum) % 61;
    if (n < 0 || (size_t)n + fill >= cap) {
        errno = EOVERFLOW;
        return -1;
    }
    for (size_t j = 0; j < fill; j++) buf[(size_t)n + j] = (char)('a' + (seq + j) % 26);
    return n + (int)fill;
}

/* Appends "<offset> <payload>\n" to `fd` with one write(2): a kill leaves at most a torn last
 * line, which the reader drops. 0 on success. */
static int log_ack(int fd, uint64_t offset, const char *payload, int len) {
    char line[PAYLOAD_MAX + 32];
    int n = snprintf(line, sizeof line, "%" PRIu64 " %.*s\n", offset, len, payload);
    if (n < 0 || (size_t)n >= sizeof line) {
        errno = EOVERFLOW;
        return -1;
    }
    ssize_t w = write(fd, line, (size_t)n);
    if (w >= 0 && w != (ssize_t)n) errno = EIO; /* short */
    return w == (ssize_t)n ? 0 : -1;
}

static int open_log(const char *dir, const char *who) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s.log", dir, who);
    if (n < 0 || (size_t)n >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* ---- the child ---- */

struct run {
    const char *ack_dir;
    shmq_queue *queue;
    shmq_producer *p0;
    shmq_consumer *c0;
};

/* Ends a child that found something wrong, saying what: the library's status and message, or
 * for a system call (`st` is SHMQ_OK) errno's. */
static void child_exit(int code, const char *who, const char *what, shmq_status st) {
    if (st != SHMQ_OK) {
        fprintf(stderr, "fork_after_open: child %s: %s: %s: %s\n", who, what, shmq_status_name(st),
                shmq_last_error());
    } else {
        fprintf(stderr, "fork_after_open: child %s: %s: %s\n", who, what, strerror(errno));
    }
    _exit(code); /* no stdio flush: the buffers are the parent's */
}

/* Ends the child unless `st`, returned by `what` through a handle of the parent, is
 * SHMQ_EFORKED. */
static void expect_forked(shmq_status st, const char *who, const char *what) {
    if (st == SHMQ_EFORKED) return;
    const char *why = st == SHMQ_OK ? "it acted on the parent's handle" : shmq_last_error();
    fprintf(stderr, "fork_after_open: child %s: %s returned %s, not SHMQ_EFORKED (%s)\n", who,
            what, shmq_status_name(st), why);
    _exit(CHILD_EFORKED);
}

static void report(int fd, char what, const char *who) {
    if (write(fd, &what, 1) != 1) child_exit(CHILD_REPORT, who, "report to the parent", SHMQ_OK);
}

static void child_main(const struct run *run, const struct child *me, int report_fd,
                       uint32_t records) {
    char who[32];
    if (snprintf(who, sizeof who, "c%d", me->index) >= (int)sizeof who) _exit(CHILD_LOG);

    /* 1. The parent's handles: refused here, and freeing them leaves the parent's producer slot
     *    and group lease alone. */
    shmq_message msg;
    expect_forked(shmq_publish(run->p0, (const uint8_t *)"x", 1, 0, NULL), who,
                  "publish through the parent's producer");
    expect_forked(shmq_wait_durable(run->p0, 0, 0), who, "wait_durable on the parent's producer");
    expect_forked(shmq_poll(run->c0, 0, &msg), who, "poll through the parent's consumer");
    expect_forked(shmq_commit(run->c0, 0), who, "commit through the parent's consumer");
    shmq_producer_free(run->p0);
    shmq_consumer_free(run->c0);
    report(report_fd, 'F', who);

    /* 2. A producer of its own, from the inherited queue handle. */
    shmq_producer *producer = NULL;
    shmq_status st = shmq_producer_new(run->queue, &producer);
    if (st != SHMQ_OK) child_exit(CHILD_NO_SLOT, who, "producer", st);

    /* 3. Group "g", whose previous holder (if any) is dead or gone. */
    shmq_consumer *g = NULL;
    if (me->g_role) {
        st = shmq_consumer_new(run->queue, "g", &g);
        if (st != SHMQ_OK) child_exit(CHILD_JOIN, who, "join g", st);
        report(report_fd, 'J', who);
    }

    /* 4. Publish, log what was acknowledged, read "g". */
    int log = open_log(run->ack_dir, who);
    if (log < 0) child_exit(CHILD_LOG, who, "open the ack log", SHMQ_OK);
    char payload[PAYLOAD_MAX];
    for (uint32_t seq = 0; seq < records; seq++) {
        int len = make_payload(payload, sizeof payload, who, seq);
        if (len < 0) child_exit(CHILD_PUBLISH, who, "make a payload", SHMQ_OK);
        uint64_t offset = 0;
        int tries = 0;
        do {
            st = shmq_publish(producer, (const uint8_t *)payload, (size_t)len, PUBLISH_TIMEOUT_NS,
                              &offset);
        } while (st == SHMQ_TIMEOUT && ++tries < PUBLISH_RETRIES);
        if (st != SHMQ_OK) child_exit(CHILD_PUBLISH, who, "publish", st);
        if (log_ack(log, offset, payload, len) != 0) {
            child_exit(CHILD_LOG, who, "log an ack", SHMQ_OK);
        }
        if (g) {
            st = shmq_poll(g, 0, &msg);
            if (st == SHMQ_OK) st = shmq_commit(g, msg.offset);
            if (st != SHMQ_OK && st != SHMQ_TIMEOUT) child_exit(CHILD_READ, who, "read g", st);
        }
    }
    if (!me->finish) {
        for (;;) pause(); /* until the parent's SIGKILL */
    }
    shmq_consumer_free(g);
    shmq_producer_free(producer);
    shmq_close(run->queue);
    if (close(log) != 0) child_exit(CHILD_LOG, who, "close the ack log", SHMQ_OK);
    if (close(report_fd) != 0) child_exit(CHILD_REPORT, who, "close the report pipe", SHMQ_OK);
    _exit(0);
}

/* ---- the parent ---- */

struct counts {
    int children, killed, finished, eforked, joined, takeovers, parent_publishes;
};

static struct counts counts;
static uint32_t parent_seq;

/* Drains the child's report pipe (non-blocking). */
static void read_reports(struct child *c) {
    char buf[16];
    for (;;) {
        ssize_t n = read(c->report_fd, buf, sizeof buf);
        if (n > 0) {
            for (ssize_t k = 0; k < n; k++) {
                if (buf[k] == 'F') c->forked_ok = true;
                if (buf[k] == 'J') c->joined = true;
            }
            continue;
        }
        if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno != EINTR) die("read a child's report");
    }
}

static void spawn(const struct run *run, int slot, int index, bool g_alive, uint64_t kill_max_ns) {
    struct child *c = &table[slot];
    memset(c, 0, sizeof *c);
    c->index = index;
    c->g_role = !g_alive; /* one "g" child at a time, whenever there is none */
    /* Most "g" children are killed: a takeover each. */
    c->finish = next_random() % (c->g_role ? 8 : 4) == 0;
    uint32_t records = c->finish ? 20 + (uint32_t)(next_random() % FINISH_RECORDS) : KILL_RECORDS;
    c->kill_delay = (int64_t)(next_random() % (kill_max_ns + 1));

    int fds[2];
    if (pipe(fds) != 0) die("pipe");
    int flags = fcntl(fds[0], F_GETFL);
    if (flags < 0 || fcntl(fds[0], F_SETFL, flags | O_NONBLOCK) != 0) die("fcntl");
    if (fflush(NULL) != 0) die("fflush"); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        /* The read ends of the other children's pipes are not ours. */
        if (close(fds[0]) != 0) _exit(CHILD_REPORT);
        for (int k = 0; k < MAX_ALIVE; k++) {
            if (k != slot && table[k].pid > 0 && close(table[k].report_fd) != 0) {
                _exit(CHILD_REPORT);
            }
        }
        child_main(run, c, fds[1], records);
    }
    if (close(fds[1]) != 0) die("close");
    c->pid = pid;
    c->report_fd = fds[0];
    int64_t now = now_ns();
    c->deadline = now + CHILD_DEADLINE_NS;
    /* A "g" child is killed only after it joined (see `check_child`): a random moment of its
     * holding "g". */
    if (!c->finish && !c->g_role) c->kill_at = now + c->kill_delay;
    counts.children++;
}

/* What the parent checks after each child is gone. */
static void after_reap(const struct run *run, struct child *c, bool killed, int parent_log) {
    if (c->forked_ok) counts.eforked++;
    if (c->joined) counts.joined++;

    /* No slot leaks: a producer can be made (at most MAX_ALIVE children and P0 hold slots). */
    shmq_producer *p = NULL;
    shmq_status st = shmq_producer_new(run->queue, &p);
    if (st != SHMQ_OK) {
        fail("no producer after child c%d: %s: %s", c->index, shmq_status_name(st),
             shmq_last_error());
    }
    shmq_producer_free(p);

    /* "g" is free again: taken over if the child held it when it was killed. */
    if (c->g_role) {
        shmq_consumer *g = NULL;
        st = shmq_consumer_new(run->queue, "g", &g);
        if (st != SHMQ_OK) {
            fail("group g not taken over after child c%d (%s, joined: %d): %s: %s", c->index,
                 killed ? "killed" : "exited", c->joined, shmq_status_name(st), shmq_last_error());
        } else {
            if (killed && c->joined) counts.takeovers++;
            for (int k = 0; k < 16; k++) {
                shmq_message msg;
                st = shmq_poll(g, 0, &msg);
                if (st == SHMQ_OK) st = shmq_commit(g, msg.offset);
                if (st == SHMQ_TIMEOUT) break;
                if (st != SHMQ_OK) {
                    fail("reading g after child c%d: %s: %s", c->index, shmq_status_name(st),
                         shmq_last_error());
                    break;
                }
            }
        }
        shmq_consumer_free(g);
    }

    /* The parent's own handles are untouched by the child freeing its copies. */
    char payload[PAYLOAD_MAX];
    int len = make_payload(payload, sizeof payload, "parent", parent_seq);
    uint64_t offset = 0;
    st = len < 0 ? SHMQ_EINVAL
                 : shmq_publish(run->p0, (const uint8_t *)payload, (size_t)len, PUBLISH_TIMEOUT_NS,
                                &offset);
    if (st == SHMQ_OK) {
        if (log_ack(parent_log, offset, payload, len) != 0) die("log a parent ack");
        counts.parent_publishes++;
        parent_seq++;
    } else if (st != SHMQ_TIMEOUT) { /* TIMEOUT: aborted after a stall; the next one retries */
        fail("publish through P0 after child c%d: %s: %s", c->index, shmq_status_name(st),
             shmq_last_error());
    }
    for (int k = 0; k < 8; k++) {
        shmq_message msg;
        st = shmq_poll(run->c0, 0, &msg);
        if (st == SHMQ_OK) st = shmq_commit(run->c0, msg.offset);
        if (st == SHMQ_TIMEOUT) break;
        if (st != SHMQ_OK) {
            fail("reading p through C0 after child c%d: %s: %s", c->index, shmq_status_name(st),
                 shmq_last_error());
            break;
        }
    }
}

/* Reaps child `c` if it exited (or kills it if its time came); true once it is gone. */
static bool check_child(const struct run *run, struct child *c, int64_t now, int parent_log) {
    read_reports(c);
    if (!c->finish && c->g_role && c->joined && c->kill_at == 0) c->kill_at = now + c->kill_delay;
    bool killing = c->kill_at > 0 && now >= c->kill_at;
    if (now >= c->deadline) {
        fail("child c%d did not %s within %" PRId64 " ms", c->index,
             c->finish ? "finish" : "join g", CHILD_DEADLINE_NS / MS);
        killing = true;
    }
    if (killing && kill(c->pid, SIGKILL) != 0) die("kill");
    int status;
    pid_t r;
    do {
        r = waitpid(c->pid, &status, killing ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r < 0) die("waitpid");
    if (r == 0) return false;
    read_reports(c);
    bool killed = false;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && killing) {
        killed = true;
        counts.killed++;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        counts.finished++;
    } else if (WIFEXITED(status)) {
        fail("child c%d exited with status %d (see its message above)", c->index,
             WEXITSTATUS(status));
    } else {
        fail("child c%d died of signal %d", c->index, WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    }
    after_reap(run, c, killed, parent_log);
    if (close(c->report_fd) != 0) die("close");
    c->pid = 0;
    return true;
}

/* Parses a decimal argument in [min, max]; exits with status 2 if it is not one. */
static uint64_t parse_arg(const char *arg, const char *what, uint64_t min, uint64_t max) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "fork_after_open: %s must be a number from %" PRIu64 " to %" PRIu64 "\n",
                what, min, max);
        exit(2);
    }
    return (uint64_t)v;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s PATH ACK_DIR CHILDREN SLOTS SEED KILL_MAX_US\n", argv[0]);
        return 2;
    }
    struct run run = {.ack_dir = argv[2]};
    int children = (int)parse_arg(argv[3], "CHILDREN", 1, 100000);
    /* P0, MAX_ALIVE children and the parent's check producer hold slots at once. */
    int slots = (int)parse_arg(argv[4], "SLOTS", MAX_ALIVE + 2, 64);
    rng = parse_arg(argv[5], "SEED", 0, UINT64_MAX) | 1; /* xorshift needs a nonzero state */
    uint64_t kill_max_ns = parse_arg(argv[6], "KILL_MAX_US", 0, 60000000) * 1000;

    shmq_status st = shmq_open(argv[1], &run.queue);
    if (st != SHMQ_OK) {
        fprintf(stderr, "fork_after_open: open: %s: %s\n", shmq_status_name(st), shmq_last_error());
        return 1;
    }
    st = shmq_producer_new(run.queue, &run.p0);
    if (st == SHMQ_OK) st = shmq_consumer_new(run.queue, "p", &run.c0);
    if (st != SHMQ_OK) {
        fprintf(stderr, "fork_after_open: P0/C0: %s: %s\n", shmq_status_name(st),
                shmq_last_error());
        return 1;
    }
    int parent_log = open_log(run.ack_dir, "parent");
    if (parent_log < 0) die("open the parent's ack log");

    int next = 0;
    int alive = 0;
    while (next < children || alive > 0) {
        if (failures >= MAX_FAILURES && next < children) {
            fprintf(stderr, "fork_after_open: %d failures: no more children\n", failures);
            next = children;
        }
        bool g_alive = false;
        for (int k = 0; k < MAX_ALIVE; k++) g_alive |= table[k].pid > 0 && table[k].g_role;
        for (int k = 0; k < MAX_ALIVE && next < children; k++) {
            if (table[k].pid == 0) {
                spawn(&run, k, next++, g_alive, kill_max_ns);
                g_alive |= table[k].g_role;
                alive++;
            }
        }
        sleep_ns(200000); /* 0.2 ms: the resolution of the kill times */
        int64_t now = now_ns();
        for (int k = 0; k < MAX_ALIVE; k++) {
            if (table[k].pid > 0 && check_child(&run, &table[k], now, parent_log)) alive--;
        }
    }

    /* Every child is gone: all slots but P0's are free. */
    shmq_producer *extra[64];
    int made = 0;
    while (made < 64) {
        st = shmq_producer_new(run.queue, &extra[made]);
        if (st != SHMQ_OK) break;
        made++;
    }
    if (made != slots - 1 || (made < 64 && st != SHMQ_EBUSY)) {
        fail("made %d producers next to P0 at the end, expected %d (last status %s: %s)", made,
             slots - 1, shmq_status_name(st), shmq_last_error());
    }
    for (int k = 0; k < made; k++) shmq_producer_free(extra[k]);

    shmq_producer_free(run.p0);
    shmq_consumer_free(run.c0);
    shmq_close(run.queue);
    if (close(parent_log) != 0) die("close the parent's ack log");
    int n = printf("fork_after_open: children=%d killed=%d finished=%d eforked=%d joined=%d "
                   "takeovers=%d parent_publishes=%d final_producers=%d\n",
                   counts.children, counts.killed, counts.finished, counts.eforked, counts.joined,
                   counts.takeovers, counts.parent_publishes, made);
    if (n < 0 || fflush(stdout) != 0) die("write the counts");
    if (failures) {
        fprintf(stderr, "fork_after_open: %d failure(s)\n", failures);
        return 1;
    }
    return 0;
}
