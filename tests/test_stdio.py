"""Stdio wiring over real FIFOs (no root): direct stdout, stdin copy, CloseIO drain, EOF."""

import os

import pytest

from shim import aio
from shim.stdio import ProcessIO, StdioError


@pytest.fixture
def fifos(tmp_path):
    paths = {}
    for name in ("stdin", "stdout", "stderr"):
        paths[name] = str(tmp_path / name)
        os.mkfifo(paths[name])
    return paths


def test_stdout_goes_straight_to_the_fifo_and_reader_sees_eof_after_process_closes(fifos):
    reader = os.open(fifos["stdout"], os.O_RDONLY | os.O_NONBLOCK)  # like ctr, before Create
    pio = ProcessIO.open("", fifos["stdout"], "")
    child_out = os.dup(pio.child.stdout)  # what the container process holds
    pio.started()  # the shim drops its write end
    os.write(child_out, b"hello\n")
    os.close(child_out)  # the process exits
    assert os.read(reader, 100) == b"hello\n"
    assert os.read(reader, 100) == b""  # EOF: the shim holds no write end
    pio.close()
    os.close(reader)


def test_output_survives_the_reader_going_away(fifos):
    reader = os.open(fifos["stdout"], os.O_RDONLY | os.O_NONBLOCK)
    pio = ProcessIO.open("", fifos["stdout"], "")
    child_out = os.dup(pio.child.stdout)
    pio.started()
    os.close(reader)  # containerd restarts
    os.write(child_out, b"kept\n")  # no EPIPE: the shim still holds a read end
    reader = os.open(fifos["stdout"], os.O_RDONLY | os.O_NONBLOCK)
    assert os.read(reader, 100) == b"kept\n"
    os.close(child_out)
    pio.close()
    os.close(reader)


def test_missing_fifo_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(StdioError) as e:
        ProcessIO.open("", str(tmp_path / "absent"), "")
    assert str(tmp_path / "absent") in str(e.value)


def _read_all(fd, timeout=2.0):
    async def go():
        loop = aio.get_running_loop()
        data = b""
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                await aio.sleep(0.005)
                continue
            if not chunk:
                return data, True
            data += chunk
        return data, False
    return go()


def test_stdin_is_copied_and_writer_close_gives_eof(fifos):
    async def scenario():
        pio = ProcessIO.open(fifos["stdin"], "", "")
        child_in = os.dup(pio.child.stdin)
        os.set_blocking(child_in, False)
        pio.started()
        writer = os.open(fifos["stdin"], os.O_WRONLY)  # ctr opens its end after Create
        os.write(writer, b"hi\n" * 1000)
        os.close(writer)
        data, eof = await _read_all(child_in)
        os.close(child_in)
        pio.close()
        return data, eof

    data, eof = aio.run(scenario())
    assert data == b"hi\n" * 1000 and eof


def test_close_io_copies_what_is_already_written_then_closes(fifos):
    async def scenario():
        pio = ProcessIO.open(fifos["stdin"], "", "")
        child_in = os.dup(pio.child.stdin)
        os.set_blocking(child_in, False)
        pio.started()
        writer = os.open(fifos["stdin"], os.O_WRONLY)
        os.write(writer, b"last words\n")
        pio.close_stdin()  # CloseIO arrives before the pump saw the bytes; writer still open
        data, eof = await _read_all(child_in)
        os.close(writer)
        os.close(child_in)
        pio.close()
        return data, eof

    data, eof = aio.run(scenario())
    assert (data, eof) == (b"last words\n", True)


def test_no_stdin_path_means_no_pump():
    pio = ProcessIO.open("", "", "")
    assert (pio.child.stdin, pio.child.stdout, pio.child.stderr) == (None, None, None)
    pio.started()
    pio.close_stdin()
    pio.close()


def test_file_uri_appends_stdout_and_stderr_to_one_file(tmp_path):
    path = tmp_path / "logs" / "c1.log"
    path.parent.mkdir()
    path.write_text("before\n")
    pio = ProcessIO.open("", f"file://{path}", f"file://{path}")
    out, err = os.dup(pio.child.stdout), os.dup(pio.child.stderr)
    pio.started()
    os.write(out, b"out\n")
    os.write(err, b"err\n")
    os.close(out)
    os.close(err)
    pio.close()
    assert path.read_text() == "before\nout\nerr\n"


def test_unknown_scheme_is_an_error_naming_it():
    with pytest.raises(StdioError, match="unknown stdio scheme 'ftp'"):
        ProcessIO.open("", "ftp://x/y", "")


LOGGER = """#!/bin/sh
# A stand-in for nerdctl's log driver: copies fd 3 and fd 4 to files, says ready on fd 5.
echo "$CONTAINER_NAMESPACE/$CONTAINER_ID $*" > "$DIR/meta"
exec 5>&-
cat <&3 > "$DIR/stdout" &
cat <&4 > "$DIR/stderr"
wait
"""


def test_binary_uri_feeds_a_logger_on_fds_3_and_4(tmp_path):
    logger = tmp_path / "logger.sh"
    logger.write_text(LOGGER.replace("$DIR", str(tmp_path)))
    logger.chmod(0o755)
    watched = {}

    async def scenario():
        pio = ProcessIO.open("", f"binary://{logger}?mode=json&tag=x", "", container_id="c1",
                             namespace="ns1", watch=lambda pid, cb: watched.update(pid=pid))
        out, err = os.dup(pio.child.stdout), os.dup(pio.child.stderr)
        pio.started()
        os.write(out, b"to stdout\n")
        os.write(err, b"to stderr\n")
        os.close(out)
        os.close(err)  # the process exits: the logger sees EOF on both
        _, status = os.waitpid(watched["pid"], 0)  # the test reaps (no reaper here)
        pio._logger.exited = True
        pio.close()
        return status

    assert aio.run(scenario()) == 0
    assert (tmp_path / "meta").read_text() == "ns1/c1 mode json tag x\n"
    assert (tmp_path / "stdout").read_text() == "to stdout\n"
    assert (tmp_path / "stderr").read_text() == "to stderr\n"


def test_binary_uri_with_missing_logger_is_an_error_naming_it(tmp_path):
    with pytest.raises(StdioError) as e:
        ProcessIO.open("", f"binary://{tmp_path}/absent", "")
    assert f"{tmp_path}/absent" in str(e.value) and "log driver" in str(e.value)


def test_close_io_before_start_still_delivers_what_was_written(fifos):
    # ctr sends CloseIO as soon as its own stdin ends, which can be before Start.
    async def scenario():
        pio = ProcessIO.open(fifos["stdin"], "", "")
        child_in = os.dup(pio.child.stdin)
        os.set_blocking(child_in, False)
        writer = os.open(fifos["stdin"], os.O_WRONLY)
        os.write(writer, b"early\n")
        pio.close_stdin()  # CloseIO
        pio.started()  # Start
        data, eof = await _read_all(child_in)
        os.close(writer)
        os.close(child_in)
        pio.close()
        return data, eof

    assert aio.run(scenario()) == (b"early\n", True)


def test_terminal_copies_between_pty_master_and_fifos_and_drains_at_exit(fifos):
    import pty

    async def scenario():
        reader = os.open(fifos["stdout"], os.O_RDONLY | os.O_NONBLOCK)
        pio = ProcessIO.open(fifos["stdin"], fifos["stdout"], "", terminal=True)
        master, slave = pty.openpty()  # what the engine would make inside the container
        pio.child.console_fd = master
        pio.started()
        writer = os.open(fifos["stdin"], os.O_WRONLY)
        os.write(writer, b"typed\n")
        deadline = aio.get_running_loop().time() + 2
        got = b""
        while b"typed" not in got and aio.get_running_loop().time() < deadline:
            await aio.sleep(0.01)
            try:
                got += os.read(slave, 100)  # the process reads its terminal
            except BlockingIOError:
                pass
        os.write(slave, b"last words\n")  # the process writes (ONLCR adds \\r), then exits...
        os.close(slave)
        pio.exited()  # ...and the shim drains the pty at once
        out, eof = await _read_all(reader)
        pio.resize(100, 30)
        os.close(writer)
        pio.close()
        os.close(reader)
        return got, out, eof

    got, out, eof = aio.run(scenario())
    assert b"typed" in got
    assert out.endswith(b"last words\r\n") and eof


def test_terminal_without_a_console_from_the_engine_is_an_error(fifos):
    pio = ProcessIO.open("", fifos["stdout"], "", terminal=True)
    reader = os.open(fifos["stdout"], os.O_RDONLY | os.O_NONBLOCK)
    with pytest.raises(StdioError, match="no terminal"):
        pio.started()
    pio.close()
    os.close(reader)
