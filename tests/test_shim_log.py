"""shim.log: logrus-style lines on containerd's log FIFO, never raising."""

import os
import re

import pytest

from shim import log


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass
    log.configure()


def test_line_format_levels_and_escaping(pipe):
    r, w = pipe
    log.configure(debug=False, fd=w)
    logger = log.getLogger("pyshim.test")
    logger.debug("hidden %s", 1)
    logger.info('say "%s"\nnext', "hi")
    logger.warning("w%d", 2)
    lines = os.read(r, 65536).decode().splitlines()
    assert len(lines) == 2, lines  # debug is off
    assert re.fullmatch(r'time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z" level=info '
                        r'msg="say \\"hi\\"\\nnext" logger=pyshim\.test', lines[0]), lines[0]
    assert lines[1].endswith('level=warning msg="w2" logger=pyshim.test')


def test_debug_when_configured(pipe):
    r, w = pipe
    log.configure(debug=True, fd=w)
    log.getLogger("x").debug("seen %s", "now")
    assert b'level=debug msg="seen now"' in os.read(r, 4096)


def test_exception_carries_the_traceback(pipe):
    r, w = pipe
    log.configure(fd=w)
    try:
        raise KeyError("gone")
    except KeyError:
        log.getLogger("x").exception("failed %s", "op")
    out = os.read(r, 65536).decode()
    assert 'level=error msg="failed op\\nTraceback' in out and "KeyError: 'gone'" in out


def test_a_dead_log_fifo_is_not_an_error(pipe):
    r, w = pipe
    os.close(r)  # nobody reads: EPIPE (SIGPIPE is ignored by Python)
    log.configure(fd=w)
    log.getLogger("x").error("into the void")  # must not raise
    log.configure(fd=987654)  # EBADF
    log.getLogger("x").error("nowhere")


def test_bad_format_arguments_do_not_raise():
    with log.capture() as records:
        log.getLogger("x").warning("%d items", "not a number")
    assert records and records[0][0] == "warning" and "not a number" in records[0][2]


def test_capture_collects_even_debug():
    with log.capture() as records:
        log.getLogger("y").debug("d")
        log.getLogger("y").info("i %s", 1)
    assert records == [("debug", "y", "d"), ("info", "y", "i 1")]
    assert log.getLogger("y") is log.getLogger("y")
