"""Python, Rust and C processes on one queue: the Rust `shmq` tool and the C examples
(`ffi/examples`) publish while Python consumes, and the reverse."""

import subprocess

import shmq

N = 2000


def test_rust_and_c_publish_python_consumes(tmp_path, tools):
    path = str(tmp_path / "in.q")
    with shmq.Queue.create(path, capacity=1 << 20, max_message=4096) as q:
        consumer = q.consumer("py")
        lines = "".join(f"rust {i}\n" for i in range(N))
        cli = subprocess.Popen([tools["cli"], "publish", path], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
        c = subprocess.Popen([tools["publisher"], path, str(N)], stdout=subprocess.DEVNULL)
        cli.stdin.write(lines)
        cli.stdin.close()
        got = []
        while len(got) < 2 * N:
            msg = consumer.poll(60)
            assert msg is not None, f"timed out after {len(got)} records"
            got.append(msg.payload)
            consumer.commit(msg)
        assert cli.wait(60) == 0 and c.wait(60) == 0
        assert [m for m in got if m.startswith(b"rust ")] == [b"rust %d" % i for i in range(N)]
        assert [m for m in got if m.startswith(b"message ")] == [b"message %d" % i for i in range(N)]
        assert consumer.poll(0) is None


def test_python_publishes_rust_and_c_consume(tmp_path, tools):
    path = str(tmp_path / "out.q")
    with shmq.Queue.create(path, capacity=1 << 20, max_message=4096) as q:
        for group in ("c", "cli"):
            q.consumer(group).close()  # gating from the start: nothing published is missed
        c = subprocess.Popen([tools["subscriber"], path, "c", str(N)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        cli = subprocess.Popen([tools["cli"], "consume", path, "-g", "cli", "--count", str(N),
                                "--commit", "--timeout", "60s"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with q.producer() as producer:
            for i in range(N):
                assert producer.publish(b"message %d" % i) == i
        c_out, c_err = c.communicate(timeout=120)
        cli_out, cli_err = cli.communicate(timeout=120)
        assert c.returncode == 0, c_err
        assert c_out.strip() == f"received {N} messages"
        assert cli.returncode == 0, cli_err
        assert cli_out.splitlines() == [f"message {i}" for i in range(N)]
        assert {g.name: g.committed for g in q.groups()} == {"c": N, "cli": N}
