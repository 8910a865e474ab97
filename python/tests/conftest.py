"""Shared fixtures. The tests run against the installed package (`tests/pytest.rs` builds the
wheel, installs it into a directory of its own and puts that first on PYTHONPATH)."""

import os
import shutil

import pytest

import shmq


def required_env(name, what):
    """The value of environment variable `name`, failing the test (not skipping it) if unset."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: it names {what}; run these tests with "
            "`cargo test -p shmq-python --test pytest`, which builds it"
        )
    return value


@pytest.fixture
def qpath(tmp_path):
    """A path for a new queue file."""
    return str(tmp_path / "test.q")


@pytest.fixture
def queue(qpath):
    """A small new queue."""
    with shmq.Queue.create(qpath, capacity=1 << 16, max_message=4096) as q:
        yield q


@pytest.fixture
def python():
    """The interpreter running the tests (for child processes)."""
    import sys

    return sys.executable


@pytest.fixture(scope="session")
def tools():
    """The Rust `shmq` binary and the C example programs built by `tests/pytest.rs`."""
    cli = required_env("SHMQ_CLI", "the shmq command-line binary")
    cdir = required_env("SHMQ_C_DIR", "the directory of the compiled C examples")
    for exe in (cli, os.path.join(cdir, "publisher"), os.path.join(cdir, "subscriber")):
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            pytest.fail(f"{exe} is missing or not executable")
    assert shutil.which("cc"), "cc is needed for the C examples: apt-get install gcc"
    return {"cli": cli, "publisher": os.path.join(cdir, "publisher"),
            "subscriber": os.path.join(cdir, "subscriber")}
