"""runtime.ospath: os and os.path's behaviour without importing os, and a CLI that never does."""

import os
import posixpath
import subprocess
import sys

import pytest

from runtime import ospath

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PATHS = ["", ".", "..", "/", "//", "///", "////x", "//x/y", "a", "a/", "a//b", "a/./b", "a/../b",
         "../a", "../../a/b", "/..", "/../a", "/a/..", "/a/../..", "/a/b/../../..", "a/b/..",
         "a/b/../..", "a/b/../../..", "/a/b/", "/a//b///c/", "./a", "/./a/.", "x/../../y",
         "/a/b/c/../d/./e/..", "é/ü/../ß", "a\udcff/b"]


@pytest.mark.parametrize("p", PATHS)
def test_lexical_functions_are_posixpaths(p):
    assert ospath.normpath(p) == posixpath.normpath(p)
    assert ospath.dirname(p) == posixpath.dirname(p)
    assert ospath.basename(p) == posixpath.basename(p)
    assert ospath.abspath(p) == posixpath.abspath(p)


@pytest.mark.parametrize("parts", [("a",), ("a", "b"), ("a/", "b"), ("/a", "/b", "c"), ("", "b"),
                                   ("a", ""), ("a", "", "b"), ("/", "x"), ("//", "x"),
                                   ("a", "b/", "c"), ("/r", *PATHS)])
def test_join_is_posixpaths(parts):
    assert ospath.join(*parts) == posixpath.join(*parts)


@pytest.mark.parametrize("path,start", [("/a/b/c", "/a"), ("/a", "/a/b/c"), ("/a/b", "/a/b"),
                                        ("/x/y", "/a/b"), ("a/b", "."), ("/", "/a/b"),
                                        ("/a/b", "/"), ("a", "b/c"), ("/a//b/./c", "/a/b/d/..")])
def test_relpath_is_posixpaths(path, start):
    assert ospath.relpath(path, start) == posixpath.relpath(path, start)
    assert ospath.relpath(path) == posixpath.relpath(path)


def test_relpath_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        ospath.relpath("")


def test_filesystem_queries_are_os_paths(tmp_path):
    d, f = tmp_path / "d", tmp_path / "f"
    d.mkdir()
    f.write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "dirlink").symlink_to(d)
    for p in [d, f, tmp_path / "dangling", tmp_path / "dirlink", tmp_path / "nowhere",
              f / "under-a-file", "", "nul\0byte"]:
        p = str(p)
        assert ospath.exists(p) == os.path.exists(p), p
        assert ospath.lexists(p) == os.path.lexists(p), p
        assert ospath.isdir(p) == os.path.isdir(p), p


def test_makedirs_is_os_makedirs(tmp_path):
    old = os.umask(0o022)
    try:
        ospath.makedirs(str(tmp_path / "a/b/c"), 0o700)
        os.makedirs(str(tmp_path / "A/B/C"), 0o700)
        for mine, theirs in (("a", "A"), ("a/b", "A/B"), ("a/b/c", "A/B/C")):
            assert (os.stat(tmp_path / mine).st_mode == os.stat(tmp_path / theirs).st_mode)
        assert os.stat(tmp_path / "a/b/c").st_mode & 0o777 == 0o700
        assert os.stat(tmp_path / "a").st_mode & 0o777 == 0o755  # 0o777 less the umask
        with pytest.raises(FileExistsError):
            ospath.makedirs(str(tmp_path / "a/b/c"))
        ospath.makedirs(str(tmp_path / "a/b/c"), exist_ok=True)
        ospath.makedirs(str(tmp_path / "a/b/c/"), exist_ok=True)
        ospath.makedirs(str(tmp_path / "x/y/."), exist_ok=True)
        assert os.path.isdir(tmp_path / "x/y")
        (tmp_path / "file").write_text("")
        with pytest.raises(FileExistsError):  # exist_ok covers directories only
            ospath.makedirs(str(tmp_path / "file"), exist_ok=True)
        with pytest.raises(NotADirectoryError):
            ospath.makedirs(str(tmp_path / "file/sub"))
    finally:
        os.umask(old)


@pytest.mark.parametrize("s", ["/a/b", "é", "a\udcffb", ""])
def test_fsencode_is_os_fsencode(s):
    assert ospath.fsencode(s) == os.fsencode(s)


def test_getenv_follows_os_environ_once_os_is_loaded(monkeypatch):
    monkeypatch.setenv("PYSHIM_OSPATH_TEST", "set later")
    assert ospath.getenv("PYSHIM_OSPATH_TEST") == "set later"
    monkeypatch.delenv("PYSHIM_OSPATH_TEST")
    assert ospath.getenv("PYSHIM_OSPATH_TEST", "dflt") == "dflt"


def _fresh(code: str, env=None) -> str:
    """Run `code` in a fresh `python -IS` (as the CLI's launcher does) with the repo on path."""
    r = subprocess.run([sys.executable, "-IS", "-c", f"import sys; sys.path.insert(0, {REPO!r})\n"
                        + code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_getenv_without_os_reads_the_process_environment():
    env = {"PYSHIM_OSPATH_TEST": "caf\u00e9", "PATH": "/usr/bin:/bin"}
    out = _fresh("from runtime import ospath\n"
                 "print(ospath.getenv('PYSHIM_OSPATH_TEST'), ospath.getenv('NOPE', 'd'),"
                 " 'os' in sys.modules)", env)
    assert out == "caf\u00e9 d False"


# Everything a CLI command may import on its way (create, run, exec, start, state, kill, delete,
# ps, pause, resume, update, list, --version), on a v1 or a v2 host, with or without seccomp.
CLI_MODULES = ["runtime.cgwarm", "runtime.cli", "runtime.cli_commands", "runtime.cli_tty",
               "runtime.cli_docs", "runtime.log", "runtime.fastjson", "runtime.sys.linux",
               "runtime.proc", "runtime.state", "runtime.container", "runtime.launch",
               "runtime.execproc", "runtime.init", "runtime.child", "runtime.executor",
               "runtime.mounts", "runtime.spec", "runtime.namespaces", "runtime.hooks",
               "runtime.console", "runtime.caps", "runtime.paths", "runtime.record",
               "runtime.errors", "runtime.ctrcgroup", "runtime.cgroups.hierarchy",
               "runtime.cgroups.v1", "runtime.cgroups.v2", "runtime.cgroups.base",
               "runtime.cgroups.fs", "runtime.cgroups.stats", "runtime.cgroups.plan",
               "runtime.seccomp"]


def test_the_cli_and_the_engine_it_imports_leave_os_unloaded():
    """os (and _collections_abc under it) would add ~1 ms to every pyshim-runc command."""
    out = _fresh(f"for m in {CLI_MODULES!r}: __import__(m)\n"
                 "print(sorted(m for m in ('os', 'posixpath', '_collections_abc', 'ctypes')"
                 " if m in sys.modules))")
    assert out == "[]"
