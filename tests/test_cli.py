"""pyshim-runc without root: argument parsing, signals, output formats, error reporting and exit
codes, against a fake engine (the real one is exercised by integration/test_cli.py)."""

import json
import os
import posix
import subprocess
import sys

import pytest

from runtime import cli, cli_commands, cli_docs
from runtime.cli import BOOL, INT, LIST, STR, UsageError, main, parse_flags
from runtime.errors import ContainerExists, ContainerNotFound, InvalidSpec, ProcessFinished

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- a fake engine ---------------------------------------------------------------------------
class FakeContainer:
    def __init__(self, cid, bundle="/b", status="created", pid=4242, annotations=None):
        self.id, self.bundle, self.pid = cid, bundle, pid
        self.created = "2024-01-02T03:04:05.123456Z"
        self.annotations = annotations or {}
        self._status = status
        self._data = {"rootfs": bundle + "/rootfs"}
        self.calls = []
        self.spec = type("S", (), {"raw": {"process": {
            "args": ["sh"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0},
            "terminal": True, "consoleSize": {"height": 1, "width": 1},
            "capabilities": {"bounding": ["CAP_KILL"]}}}})()

    def status(self):
        return self._status

    def state(self):
        return {"ociVersion": "1.1.0", "id": self.id, "status": self._status,
                "pid": 0 if self._status == "stopped" else self.pid, "bundle": self.bundle,
                "annotations": dict(self.annotations)}

    def start(self):
        self.calls.append(("start",))
        self._status = "running"

    def kill(self, sig):
        if self._status == "stopped":
            raise ProcessFinished(self.id)
        self.calls.append(("kill", sig))

    def delete(self, force=False):
        self.calls.append(("delete", force))


class FakeEngine:
    def __init__(self, root, containers=()):
        self.root = root
        self.containers = {c.id: c for c in containers}
        self.created = []
        self.keyrings = []
        self.pivots = []
        self.envs = []

    def create(self, cid, bundle, stdio=None, new_keyring=True, no_pivot=False, extra_env=()):
        if cid in self.containers:
            raise ContainerExists(cid)
        if cid == "bad":
            raise InvalidSpec("process.args", "must be a non-empty array")
        c = FakeContainer(cid, bundle)
        self.containers[cid] = c
        self.created.append((cid, bundle, stdio))
        self.keyrings.append(new_keyring)
        self.pivots.append(not no_pivot)
        self.envs.append(list(extra_env))
        return c

    def load(self, cid):
        if cid not in self.containers:
            raise ContainerNotFound(cid)
        return self.containers[cid]

    def list(self):
        return sorted(self.containers)


@pytest.fixture
def engine(tmp_path):
    return FakeEngine(str(tmp_path / "root"))


def run(engine, *argv):
    return main(["--root", engine.root, *argv], engine_factory=lambda root: engine)


# --- parsing ---------------------------------------------------------------------------------
FLAGS = [(("bundle", "b"), STR, ""), (("detach", "d"), BOOL, ""), (("n",), INT, ""),
         (("env", "e"), LIST, "")]


@pytest.mark.parametrize("argv", [
    ["--bundle", "/x", "id"], ["-b", "/x", "id"], ["--bundle=/x", "id"], ["-bundle=/x", "id"],
    ["id", "--bundle", "/x"], ["--b", "/x", "id"]])
def test_flags_in_go_syntax_and_after_positionals(argv):
    opts, pos = parse_flags(argv, FLAGS)
    assert opts.bundle == "/x" and pos == ["id"]


def test_bool_int_list_flags_and_unset_defaults():
    opts, pos = parse_flags(["-d", "--n", "0x10", "-e", "A=1", "--env=B=2", "x"], FLAGS)
    assert (opts.detach, opts.n, opts.env, pos) == (True, 16, ["A=1", "B=2"], ["x"])
    opts, _ = parse_flags(["--detach=false"], FLAGS)
    assert opts.detach is False
    opts, _ = parse_flags([], FLAGS)
    assert opts.bundle is None and opts.detach is None and opts.env == []


def test_stop_keeps_everything_after_the_id_positional():
    opts, pos = parse_flags(["-d", "cid", "ls", "-l", "--bundle", "x"], FLAGS, stop=1)
    assert opts.detach and opts.bundle is None and pos == ["cid", "ls", "-l", "--bundle", "x"]


def test_double_dash_and_lone_dash_are_positional():
    assert parse_flags(["--", "-d"], FLAGS)[1] == ["-d"]
    assert parse_flags(["-"], FLAGS)[1] == ["-"]


@pytest.mark.parametrize("argv,msg", [
    (["--nope"], "flag provided but not defined: -nope"),
    (["--bundle"], "flag needs an argument: -bundle"),
    (["--n", "x"], "invalid value 'x' for flag -n"),
    (["--detach=maybe"], "invalid boolean value"),
])
def test_bad_flags_are_usage_errors(argv, msg):
    with pytest.raises(UsageError, match=msg):
        parse_flags(argv, FLAGS)


@pytest.mark.parametrize("raw,sig", [("TERM", 15), ("SIGTERM", 15), ("15", 15), ("kill", 9),
                                     ("SigKill", 9), ("usr1", 10), ("0", 0), ("SIGRTMIN", 34)])
def test_parse_signal_like_runc(raw, sig):
    assert cli_commands.parse_signal(raw) == sig


def test_parse_signal_knows_every_name_of_signal_Signals():
    import signal
    for name, sig in signal.Signals.__members__.items():
        assert cli_commands.parse_signal(name) == cli_commands.parse_signal(name[3:]) == sig


@pytest.mark.parametrize("raw", ["FOO", "SIG_DFL", "_DFL", "999", "-1", "", "S I G"])
def test_unknown_signals_are_errors(raw):
    with pytest.raises(cli.CliError, match="unknown signal"):
        cli_commands.parse_signal(raw)


# --- lifecycle against the fake engine -------------------------------------------------------
def test_create_passes_bundle_and_our_stdio_and_writes_the_pid_file(engine, tmp_path):
    pidfile = tmp_path / "pid"
    assert run(engine, "create", "--bundle", "/bun", "--pid-file", str(pidfile), "c1") == 0
    cid, bundle, stdio = engine.created[0]
    assert (cid, bundle) == ("c1", "/bun")
    assert (stdio.stdin, stdio.stdout, stdio.stderr) == (0, 1, 2)
    assert pidfile.read_text() == "4242"  # no newline, like runc
    assert sorted(os.listdir(tmp_path)) == ["pid"]  # the temp file was renamed


def test_create_defaults_the_bundle_to_the_cwd(engine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(engine, "create", "c1") == 0
    assert engine.created[0][1] == str(tmp_path)


def test_a_failing_pid_file_destroys_the_new_container(engine, tmp_path):
    assert run(engine, "create", "--pid-file", str(tmp_path / "no/such/dir/pid"), "c1") == 1
    assert engine.containers["c1"].calls == [("delete", True)]


def test_preserved_fds_reach_the_engine(engine):
    """--preserve-fds N: the CLI's fds 3..N+2 are handed on (Stdio.preserve_fds)."""
    extra = os.pipe()  # so that at least 3 and 4 are open (pytest may hold low fds too)
    try:
        n = 0
        while _is_open(3 + n):
            n += 1
        assert n >= 2
        assert run(engine, "create", "--preserve-fds", str(n), "c1") == 0
    finally:
        for fd in extra:
            os.close(fd)
    assert engine.created[0][2].preserve_fds == n


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_preserving_a_closed_fd_is_a_clear_error(engine, capsys):
    top = os.dup(0)  # the lowest free fd: 3..top-1 are open, top is not
    os.close(top)
    n = top - 2  # fds 3..top
    assert run(engine, "create", "--preserve-fds", str(n), "c1") == 1
    err = capsys.readouterr().err
    assert f"unable to stat preserved-fd {n - 1} (of {n}): fd {top} is not open" in err
    assert not engine.created


def test_a_negative_preserve_fds_is_a_clear_error(engine, capsys):
    assert run(engine, "create", "--preserve-fds", "-1", "c1") == 1
    assert "--preserve-fds -1: must not be negative" in capsys.readouterr().err
    assert not engine.created


def _bundle(tmp_path, terminal: bool) -> str:
    (tmp_path / "config.json").write_text(json.dumps({"process": {"terminal": terminal}}))
    return str(tmp_path)


@pytest.mark.parametrize("argv,terminal,msg", [
    (["create", "--console-socket", "/s"], False, "cannot use console socket"),
    (["create"], True, "cannot allocate tty if runc will detach without setting console socket"),
    (["run", "-d"], True, "cannot allocate tty"),
    (["run", "--console-socket", "/s"], True, "cannot use console socket"),
])
def test_runcs_terminal_rules(engine, tmp_path, capsys, argv, terminal, msg):
    assert run(engine, *argv, "--bundle", _bundle(tmp_path, terminal), "c1") == 1
    assert msg in capsys.readouterr().err
    assert not engine.created


def test_exec_tty_rules(engine, capsys):
    engine.containers["c"] = c = FakeContainer("c", status="running")
    c.exec = lambda p, stdio: 1
    # as runc: a failed exec is "exec failed: ..." and exit status 255
    assert run(engine, "exec", "-d", "-t", "c", "sh") == 255
    assert "exec failed: cannot allocate tty" in capsys.readouterr().err
    assert run(engine, "exec", "-d", "--console-socket", "/s", "c", "sh") == 255
    assert "exec failed: cannot use console socket" in capsys.readouterr().err


def test_the_console_master_goes_to_the_console_socket(engine, tmp_path):
    import socket
    r, w = os.pipe()
    real_create = engine.create

    def create(cid, bundle, stdio=None, new_keyring=True, no_pivot=False, extra_env=()):
        stdio.console_fd = os.dup(r)  # stands in for the pty master the engine returns
        return real_create(cid, bundle, stdio)
    engine.create = create
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        assert run(engine, "create", "--bundle", _bundle(tmp_path, True), "--console-socket",
                   path, "c1") == 0
        conn, _ = server.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        conn.close()
        assert msg == b"/dev/ptmx" and len(fds) == 1
        assert os.fstat(fds[0]).st_ino == os.fstat(r).st_ino
        os.close(fds[0])
    finally:
        server.close()
        os.close(r)
        os.close(w)


def test_a_failing_console_socket_destroys_the_container(engine, tmp_path, capsys):
    real_create = engine.create

    def create(cid, bundle, stdio=None, new_keyring=True, no_pivot=False, extra_env=()):
        stdio.console_fd = os.open("/dev/null", os.O_RDONLY)
        return real_create(cid, bundle, stdio)
    engine.create = create
    assert run(engine, "create", "--bundle", _bundle(tmp_path, True), "--console-socket",
               str(tmp_path / "nobody-listens"), "c1") == 1
    assert "--console-socket" in capsys.readouterr().err
    assert engine.containers["c1"].calls == [("delete", True)]


def test_engine_errors_are_one_logrus_line_and_exit_1(engine, capsys):
    assert run(engine, "create", "bad") == 1
    err = capsys.readouterr().err
    assert err.startswith('time="') and err.count("\n") == 1
    assert 'level=error msg="process.args: must be a non-empty array"' in err


def test_with_a_json_log_the_error_goes_there_and_bare_to_stderr(engine, tmp_path, capsys):
    log = tmp_path / "log.json"
    assert run(engine, "--log", str(log), "--log-format", "json", "state", "nope") == 1
    assert capsys.readouterr().err == "container 'nope' does not exist\n"
    line = json.loads(log.read_text())
    assert list(line) == ["level", "msg", "time"]
    assert line["level"] == "error" and line["msg"] == "container 'nope' does not exist"
    assert line["time"].endswith("Z") or line["time"][-6] in "+-"
    assert log.read_text().startswith('{"level":"error","msg":')  # Go's compact encoding


def test_text_log_file_gets_a_logrus_line(engine, tmp_path, capsys):
    log = tmp_path / "log"
    assert run(engine, "--log", str(log), "start", "nope") == 1
    assert "level=error msg=\"container 'nope' does not exist\"" in log.read_text()


def test_start_state_kill_delete(engine, capsys):
    run(engine, "create", "c1")
    c = engine.containers["c1"]
    assert run(engine, "start", "c1") == 0
    assert run(engine, "kill", "c1") == 0
    assert run(engine, "kill", "c1", "KILL") == 0
    assert run(engine, "delete", "c1") == 0
    assert run(engine, "delete", "-f", "c1") == 0
    assert c.calls == [("start",), ("kill", 15), ("kill", 9), ("delete", False), ("delete", True)]


def test_kill_of_a_stopped_container_fails(engine, capsys):
    engine.containers["s"] = FakeContainer("s", status="stopped")
    assert run(engine, "kill", "s", "9") == 1
    assert "not running" in capsys.readouterr().err


def test_kill_all_needs_engine_support(engine, capsys):
    engine.containers["c"] = c = FakeContainer("c")
    assert run(engine, "kill", "--all", "c", "KILL") == 1
    assert "kill --all: not supported by this engine yet" in capsys.readouterr().err

    def kill(sig, all=False):
        c.calls.append(("kill", sig, all))
    c.kill = kill
    assert run(engine, "kill", "-a", "c", "KILL") == 0
    assert c.calls == [("kill", 9, True)]


def test_delete_of_a_missing_container(engine, tmp_path, capsys):
    leftover = tmp_path / "root" / "gone"
    leftover.mkdir(parents=True)  # an aborted create: a dir without state.json
    assert run(engine, "delete", "gone") == 1
    assert leftover.exists()
    assert run(engine, "delete", "--force", "gone") == 0
    assert not leftover.exists()


# --- output formats --------------------------------------------------------------------------
def test_state_is_runcs_json_field_for_field(engine, capsys):
    engine.containers["c"] = FakeContainer("c", annotations={"z": "1", "a": "<b>&"})
    assert run(engine, "state", "c") == 0
    out = capsys.readouterr().out
    assert not out.endswith("\n")  # runc writes the bytes, no newline
    doc = json.loads(out)
    assert list(doc) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created",
                         "annotations", "owner"]
    assert list(doc["annotations"]) == ["a", "z"]  # Go sorts map keys
    assert '"a": "\\u003cb\\u003e\\u0026"' in out  # and escapes <>&
    assert out.startswith('{\n  "ociVersion": "1.1.0",\n  "id": "c",\n  "pid": 4242,')
    assert doc["rootfs"] == "/b/rootfs" and doc["owner"] == ""


def test_state_without_annotations_omits_them_and_stopped_has_pid_0(engine, capsys):
    engine.containers["c"] = FakeContainer("c", status="stopped")
    run(engine, "state", "c")
    doc = json.loads(capsys.readouterr().out)
    assert "annotations" not in doc and doc["pid"] == 0 and doc["status"] == "stopped"


def test_list_formats(engine, capsys):
    assert run(engine, "list", "--format", "json") == 0
    assert capsys.readouterr().out == "null\n"
    engine.containers["c1"] = FakeContainer("c1", bundle="/some/bundle")
    engine.containers["c2"] = FakeContainer("c2", status="stopped")
    run(engine, "list", "-q")
    assert capsys.readouterr().out == "c1\nc2\n"
    run(engine, "list", "--format=json")
    out = capsys.readouterr().out
    assert out.startswith('[{"ociVersion":"1.1.0","id":"c1","pid":4242,"status":"created"')
    assert [s["id"] for s in json.loads(out)] == ["c1", "c2"]
    run(engine, "list")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ID          PID         STATUS      BUNDLE         CREATED" \
                       "                       OWNER"
    assert lines[1].startswith("c1          4242        created     /some/bundle   2024-")
    assert run(engine, "list", "--format", "yaml") == 1


def test_tabwriter_pads_all_but_the_last_column():
    assert cli_commands.tabwriter([["a", "b", "c"], ["abcdefghijkl", "x", "y"]]) == \
        "a" + " " * 14 + "b" + " " * 11 + "c\n" + "abcdefghijkl   x           y\n"


# --- engine features not there yet -----------------------------------------------------------
@pytest.mark.parametrize("argv,what", [
    (["pause", "c"], "pause"), (["resume", "c"], "resume"), (["ps", "c"], "ps"),
    (["update", "--memory", "1m", "c"], "update"), (["events", "--stats", "c"], "events"),
    (["exec", "c", "true"], "exec")])
def test_missing_engine_methods_are_clear_errors(engine, capsys, argv, what):
    engine.containers["c"] = FakeContainer("c", status="running")
    assert run(engine, *argv) == (255 if what == "exec" else 1)  # runc: exec fails with 255
    assert f"{what}: not supported by this engine yet" in capsys.readouterr().err


def test_engine_methods_are_called_when_present(engine, capsys):
    engine.containers["c"] = c = FakeContainer("c", status="running")
    c.pause = lambda: c.calls.append("pause")
    c.resume = lambda: c.calls.append("resume")
    c.update = lambda r: c.calls.append(("update", r))
    c.pids = lambda: [7, 8]
    c.stats = lambda: {"memory": {"usage": 1}}
    assert run(engine, "pause", "c") == run(engine, "resume", "c") == 0
    assert run(engine, "update", "--memory", "1m", "--cpu-shares", "512", "--pids-limit", "9",
               "c") == 0
    assert c.calls == ["pause", "resume", ("update", {"memory": {"limit": 1 << 20},
                                                      "cpu": {"shares": 512},
                                                      "pids": {"limit": 9}})]
    capsys.readouterr()
    assert run(engine, "ps", "--format", "json", "c") == 0
    assert capsys.readouterr().out == "[7,8]\n"
    assert run(engine, "events", "--stats", "c") == 0
    assert json.loads(capsys.readouterr().out) == {"type": "stats", "id": "c",
                                                   "data": {"memory": {"usage": 1}}}


def test_update_reads_resources_from_a_file(engine, tmp_path):
    engine.containers["c"] = c = FakeContainer("c", status="running")
    c.update = lambda r: c.calls.append(r)
    f = tmp_path / "r.json"
    f.write_text('{"memory": {"limit": 5}}')
    assert run(engine, "update", "-r", str(f), "--memory", "1g", "c") == 0  # the file wins
    assert c.calls == [{"memory": {"limit": 5}}]
    f.write_text("[1]")
    assert run(engine, "update", "--resources", str(f), "c") == 1


@pytest.mark.parametrize("value,n", [("512", 512), ("1k", 1024), ("100m", 100 << 20),
                                     ("1.5g", 3 << 29), ("64KiB", 64 << 10), ("2 GB", 2 << 30)])
def test_ram_in_bytes(value, n):
    assert cli_commands.ram_in_bytes(value) == n


def test_memory_swap_minus_one_and_bad_sizes():
    opts, _ = parse_flags(["--memory-swap", "-1"], cli.COMMANDS["update"][2])
    assert cli_commands.update_resources(opts) == {"memory": {"swap": -1}}
    with pytest.raises(cli.CliError, match="invalid size"):
        cli_commands.ram_in_bytes("lots")


def test_exec_process_is_the_containers_process_with_the_flags_applied():
    c = FakeContainer("c")
    opts, pos = parse_flags(["--cwd", "/tmp", "-e", "A=1", "-u", "1000:100", "-g", "5",
                             "--cap", "CAP_CHOWN", "--no-new-privs", "c", "ls", "-l"],
                            cli.COMMANDS["exec"][2], stop=1)
    p = cli_commands.exec_process(c, pos[1:], opts)
    assert p["args"] == ["ls", "-l"] and p["cwd"] == "/tmp" and p["terminal"] is False
    assert p["env"] == ["PATH=/bin", "A=1"] and "consoleSize" not in p
    assert p["user"] == {"uid": 1000, "gid": 100, "additionalGids": [5]}
    assert p["noNewPrivileges"] is True
    assert p["capabilities"]["bounding"] == ["CAP_KILL", "CAP_CHOWN"]
    assert p["capabilities"]["ambient"] == ["CAP_CHOWN"]
    assert c.spec.raw["process"]["args"] == ["sh"]  # the container's own object is untouched


def test_exec_without_a_command_is_a_usage_error(engine, capsys):
    engine.containers["c"] = c = FakeContainer("c", status="running")
    c.exec = lambda p, stdio: 1
    assert run(engine, "exec", "c") == 1
    assert "Incorrect Usage" in capsys.readouterr().out


def test_exec_detached_writes_the_pid_file(engine, tmp_path):
    engine.containers["c"] = c = FakeContainer("c", status="running")
    seen = []
    c.exec = lambda p, stdio: seen.append(p) or 777
    pf = tmp_path / "p"
    assert run(engine, "exec", "-d", "--pid-file", str(pf), "c", "sleep", "1") == 0
    assert pf.read_text() == "777" and seen[0]["args"] == ["sleep", "1"]


def test_exec_in_a_stopped_container_fails(engine, capsys):
    engine.containers["c"] = c = FakeContainer("c", status="stopped")
    c.exec = lambda p, stdio: 1
    assert run(engine, "exec", "-d", "c", "true") == 255  # runc's status for a failed exec
    assert "exec failed: cannot exec in a stopped container" in capsys.readouterr().err


# --- global behaviour ------------------------------------------------------------------------
def test_usage_errors_and_unknown_commands(engine, capsys):
    assert run(engine, "state") == 1
    captured = capsys.readouterr()
    assert "Incorrect Usage" in captured.out and "requires exactly 1 argument" in captured.err
    assert run(engine, "state", "a", "b") == 1
    assert run(engine, "kill", "a", "b", "c") == 1
    assert run(engine, "frobnicate") == 3
    assert run(engine, "create", "--bogus", "x") == 1
    assert "flag provided but not defined: -bogus" in capsys.readouterr().err


def test_global_flags(engine, capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pyshim-runc version ")
    assert main(["--help"]) == 0 and "COMMANDS:" in capsys.readouterr().out
    assert main(["create", "--help"]) == 0 and "--pid-file" in capsys.readouterr().out
    assert main(["help", "kill"]) == 0 and "--all" in capsys.readouterr().out
    assert run(engine, "--log-format", "xml", "list") == 1
    assert "invalid log-format: xml" in capsys.readouterr().err
    assert run(engine, "--systemd-cgroup", "list") == 1
    assert "systemd" in capsys.readouterr().err
    assert run(engine, "--criu", "/usr/sbin/criu", "--debug", "list", "-q") == 0


def test_importing_the_cli_costs_nothing_but_the_module():
    # The binary's start-up: the module must not pull in os, json, signal, the engine...
    code = (f"import sys; sys.path.insert(0, {REPO!r}); before = set(sys.modules); "
            "import runtime.cli; print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['runtime', 'runtime.cli']"


# --- spec and features -----------------------------------------------------------------------
def test_spec_writes_runcs_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["spec"]) == 0
    text = (tmp_path / "config.json").read_text()
    assert text.startswith('{\n\t"ociVersion": "1.1.0",\n\t"process": {\n\t\t"terminal": true,')
    assert not text.endswith("\n")
    doc = json.loads(text)
    assert doc == cli_docs.default_spec()
    assert doc["hostname"] == "runc" and doc["root"] == {"path": "rootfs", "readonly": True}
    assert [m["destination"] for m in doc["mounts"]][-1] == "/sys/fs/cgroup"
    assert main(["spec"]) == 1
    assert "File config.json exists. Remove it first" in capsys.readouterr().err


def test_spec_rootless_into_a_bundle(tmp_path):
    assert main(["spec", "--rootless", "--bundle", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "config.json").read_text())
    linux = doc["linux"]
    assert list(linux) == ["uidMappings", "gidMappings", "namespaces", "maskedPaths",
                           "readonlyPaths"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert [n["type"] for n in linux["namespaces"]] == ["pid", "ipc", "uts", "mount", "user"]
    sys_mount = next(m for m in doc["mounts"] if m["destination"] == "/sys")
    assert sys_mount == {"destination": "/sys", "type": "none", "source": "/sys",
                         "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    assert not any(o.startswith("gid=") for m in doc["mounts"] for o in m.get("options", []))
    assert main(["spec", "--bundle", str(tmp_path / "missing")]) == 1


def test_features_reports_what_the_engine_accepts(capsys):
    assert main(["features"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["ociVersionMin", "ociVersionMax", "hooks", "mountOptions", "linux",
                         "annotations"]
    assert {"ro", "rbind", "nosuid", "rprivate"} <= set(doc["mountOptions"])
    linux = doc["linux"]
    assert {"mount", "pid", "network", "ipc", "uts"} <= set(linux["namespaces"])
    for ns in ("user", "cgroup", "time"):
        assert (ns in linux["namespaces"]) == cli_docs._namespace_supported(ns)
    assert linux["capabilities"][0] == "CAP_CHOWN"
    assert linux["apparmor"] == {"enabled": False} and linux["selinux"] == {"enabled": False}
    assert linux["mountExtensions"] == {"idmap": {"enabled": True}}
    assert {"idmap", "ridmap"} <= set(doc["mountOptions"])
    assert linux["intelRdt"] == {"enabled": False}
    assert linux["cgroup"]["systemd"] is False
    # hooks/seccomp/cgroups: listed only once create loads what applies them
    assert (doc["hooks"] != []) == ("runtime.hooks" in sys.modules)
    assert linux["seccomp"]["enabled"] == ("runtime.seccomp" in sys.modules)


def test_engine_warnings_become_log_lines(engine, tmp_path, capsys):
    from runtime import log as engine_log
    log = tmp_path / "log.json"
    engine.containers["c"] = c = FakeContainer("c")
    c.start = lambda: engine_log.warning("runtime.hooks", "container c: hook poststart failed")
    assert run(engine, "--log", str(log), "--log-format", "json", "start", "c") == 0
    line = json.loads(log.read_text())
    assert (line["level"], line["msg"]) == ("warning", "container c: hook poststart failed")
    assert capsys.readouterr().err == ""  # a warning is not an error: nothing on stderr


class _Exited(Exception):
    pass


@pytest.mark.parametrize("broken,rc,want", [(False, 0, 0), (False, 3, 3), (True, 0, 1),
                                            (True, 3, 3)])
def test_exit_now_flushes_and_an_unwritable_output_is_an_error(monkeypatch, broken, rc, want):
    """The real process exits without the interpreter's teardown (cli.exit_now), so it flushes
    stdout and stderr itself; output that cannot be written makes a success exit 1."""
    flushed = []

    class Out:
        def __init__(self, name):
            self.name = name

        def flush(self):
            flushed.append(self.name)
            if broken and self.name == "stdout":
                raise BrokenPipeError(32, "Broken pipe")

    def fake_exit(code):
        raise _Exited(code)
    monkeypatch.setattr(sys, "stdout", Out("stdout"))
    monkeypatch.setattr(sys, "stderr", Out("stderr"))
    monkeypatch.setattr(posix, "_exit", fake_exit)  # what exit_now calls (not os: runtime.ospath)
    with pytest.raises(_Exited) as e:
        cli.exit_now(rc)
    assert e.value.args == (want,)
    assert flushed == ["stdout", "stderr"]


def test_no_new_keyring_reaches_the_engine(engine):
    assert run(engine, "create", "c1") == 0
    assert run(engine, "create", "--no-new-keyring", "c2") == 0
    assert engine.keyrings == [True, False]


def test_no_pivot_reaches_the_engine(engine):
    assert run(engine, "run", "-d", "c1") == 0
    assert run(engine, "create", "--no-pivot", "c2") == 0
    assert engine.pivots == [True, False]


def test_listen_fds_only_when_listen_pid_is_us(monkeypatch):
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert cli.listen_fds() == 2
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))  # meant for another process
    assert cli.listen_fds() == 0
    monkeypatch.setenv("LISTEN_PID", "x")
    assert cli.listen_fds() == 0
    monkeypatch.delenv("LISTEN_FDS")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert cli.listen_fds() == 0


@pytest.mark.parametrize("args,want", [
    ([], {}), (["sub"], {"": "sub"}), (["pids:a", "cpu,cpuacct:b/c"],
                                       {"pids": "a", "cpu": "b/c", "cpuacct": "b/c"})])
def test_exec_cgroup_arguments_as_runc_reads_them(args, want):
    assert cli_commands.sub_cgroup_paths(args) == want


@pytest.mark.parametrize("args,error", [
    (["a", "b"], "invalid --cgroup argument: a (missing <controller>: prefix)"),
    ([":x"], "invalid --cgroup argument: :x (empty <controller> prefix)"),
    (["pids:a", "pids:b"], "controller pids specified multiple times")])
def test_bad_exec_cgroup_arguments(args, error):
    with pytest.raises(cli.CliError, match=error.replace("(", r"\(").replace(")", r"\)")):
        cli_commands.sub_cgroup_paths(args)


# --- the cycle collector ---------------------------------------------------------------------
def test_the_real_process_runs_its_command_without_the_cycle_collector(monkeypatch):
    import gc
    import sys

    from runtime import cli, cli_commands
    seen = []
    monkeypatch.setattr(cli, "exit_now", lambda rc: None)
    monkeypatch.setattr(sys, "argv", ["pyshim-runc", "--root", "/nonexistent/root", "state", "c"])
    monkeypatch.setattr(cli_commands, "run", lambda name, *a: seen.append(gc.isenabled()) or 0)
    try:
        cli.main()
        assert seen == [False]
        seen.clear()
        gc.enable()
        cli.main(["--root", "/nonexistent/root", "state", "c"])  # tests, embedders: untouched
        assert seen == [True]
    finally:
        gc.enable()


@pytest.mark.parametrize("argv", [["run", "c1"], ["exec", "c1", "sh"]])
def test_a_foreground_wait_has_the_cycle_collector_back(engine, monkeypatch, argv):
    """run and exec in the foreground last as long as the process: gc is on again by then,
    for new objects only (what the command allocated so far is frozen, so that the first
    collection does not walk, and copy-on-write, all of it)."""
    import gc

    from runtime import cli_commands
    engine.containers["c1"] = FakeContainer("c1", status="running")
    seen = []
    monkeypatch.setattr(cli_commands, "become_subreaper", lambda: None)
    monkeypatch.setattr(cli_commands, "wait_status",
                        lambda pid: seen.append((gc.isenabled(), gc.get_freeze_count() > 0)) or 0)
    monkeypatch.setattr(engine, "create", lambda *a, **k: engine.containers["c1"], raising=False)
    monkeypatch.setattr(engine.containers["c1"], "exec", lambda *a, **k: 4343, raising=False)
    gc.disable()
    try:
        run(engine, *argv)
    finally:
        gc.unfreeze()
        gc.enable()
    assert seen == [(True, True)]


FORWARDER = """
import sys
sys.path[:0] = [{repo!r}]
import _signal
from runtime import cli_commands

class Ctx:
    real_process = True

fwd = cli_commands.Forwarder(Ctx())
handled = sorted(s for s in _signal.valid_signals()
                 if _signal.getsignal(s) not in (_signal.SIG_DFL, _signal.SIG_IGN, None))
print(handled, flush=True)
{then}
"""


def test_the_forwarder_leaves_the_fault_signals_alone_so_a_fault_crashes():
    """A Python handler for SIGSEGV returns to the faulting instruction, which faults again:
    the CLI would spin at full CPU instead of crashing."""
    import signal
    fault = "import ctypes\nctypes.string_at(0)"
    r = subprocess.run([sys.executable, "-IS", "-c", FORWARDER.format(repo=REPO, then=fault)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == -signal.SIGSEGV, r.stderr
    handled = json.loads(r.stdout)
    assert signal.SIGTERM in handled and signal.SIGINT in handled and signal.SIGHUP in handled
    for sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGCHLD,
                signal.SIGWINCH, signal.SIGURG, signal.SIGPIPE):
        assert sig not in handled, sig
