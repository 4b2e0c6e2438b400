"""pyshim-runc: a runc-compatible command line over the engine (runtime.container).

Invariants:
- runc's interface: its global flags, commands, command flags (Go flag syntax: -x, --x, -x=v,
  --x v), positional arguments, stdout formats and exit codes: 1 for any error, 3 for an unknown
  command, the container's status for `run` and `exec` in the foreground.
- An error is reported exactly like runc 1.1 does: a logrus line (text, or JSON with
  --log-format json) in the log (--log FILE, default stderr), plus the bare message on stderr
  when the log is a file. containerd's runc shim reads the last error from that JSON log.
- A command the engine cannot do yet fails with "<what>: not supported by this engine yet",
  never with a traceback; engine errors (runtime.errors) already name the field or path.
- Start-up is latency for every caller (containerd's runc shim runs the binary three times per
  container): this module imports only posix and sys (not even os: runtime.ospath); the engine,
  json and signal are imported by the commands that need them (runtime.cli_commands,
  runtime.cli_docs).
"""

import posix
import sys

PROG = "pyshim-runc"
VERSION = "0.1.0"
DEFAULT_ROOT = "/run/pyshim-runc"

BOOL, STR, INT, LIST = "bool", "str", "int", "list"


class UsageError(Exception):
    """Bad command line: runc prints "Incorrect Usage" and the command's help, exit 1."""

    def __init__(self, message: str, command: str | None = None, code: int = 1):
        super().__init__(message)
        self.command = command
        self.code = code


class CliError(Exception):
    """A failure to report on stderr/the log and exit with `code`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def unsupported(what: str) -> CliError:
    return CliError(f"{what}: not supported by this engine yet")


# --- the command table -----------------------------------------------------------------------
# name -> (summary, usage, flags, (min args, max args or None), stop): flags are
# (names, kind, help); with stop=N the Nth positional and all after it are positional (runc's
# exec and ps pass them through; every other command lets flags follow positionals, as
# urfave/cli v1 reorders them).
_ID = "<container-id>"
_BUNDLE = (("bundle", "b"), STR, "path to the root of the bundle directory, defaults to the "
                                 "current directory")
_CONSOLE = (("console-socket",), STR, "path to an AF_UNIX socket which will receive a file "
                                      "descriptor referencing the master end of the console's "
                                      "pseudoterminal")
_PIDFILE = (("pid-file",), STR, "specify the file to write the process id to")
_PRESERVE = (("preserve-fds",), INT, "pass N additional file descriptors to the container "
                                     "(fds 3 to N+2 of this process)")
_FORMAT = (("format", "f"), STR, "select one of: table or json (default: \"table\")")
COMMANDS = {
    "create": ("create a container", f"[command options] {_ID}", [
        _BUNDLE, _CONSOLE, _PIDFILE,
        (("no-pivot",), BOOL, "do not use pivot root to jail process inside rootfs.  This "
                              "should be used whenever the rootfs is on top of a ramdisk"),
        (("no-new-keyring",), BOOL, "do not create a new session keyring for the container. "
                                    "This will cause the container to inherit the calling "
                                    "processes session key"),
        _PRESERVE], (1, 1), None),
    "start": ("executes the user defined process in a created container", _ID, [], (1, 1), None),
    "state": ("output the state of a container", _ID, [], (1, 1), None),
    "kill": ("kill sends the specified signal (default: SIGTERM) to the container's init process",
             f"[command options] {_ID} [signal]", [
                 (("all", "a"), BOOL, "send the specified signal to all processes inside the "
                                      "container")], (1, 2), None),
    "delete": ("delete any resources held by the container", f"[command options] {_ID}", [
        (("force", "f"), BOOL, "forcibly deletes the container if it is still running "
                               "(uses SIGKILL)")], (1, 1), None),
    "run": ("create and run a container", f"[command options] {_ID}", [
        _BUNDLE, _CONSOLE,
        (("detach", "d"), BOOL, "detach from the container's process"),
        (("keep",), BOOL, "do not delete the container after it exits"),
        _PIDFILE,
        (("no-subreaper",), BOOL, "accepted; the CLI is a subreaper while it waits"),
        (("no-pivot",), BOOL, "do not use pivot root to jail process inside rootfs.  This "
                              "should be used whenever the rootfs is on top of a ramdisk"),
        (("no-new-keyring",), BOOL, "do not create a new session keyring for the container. "
                                    "This will cause the container to inherit the calling "
                                    "processes session key"),
        _PRESERVE], (1, 1), None),
    "exec": ("execute new process inside the container",
             f"[command options] {_ID} <command> [command options]  || -p process.json {_ID}", [
                 _CONSOLE,
                 (("cwd",), STR, "current working directory in the container"),
                 (("env", "e"), LIST, "set environment variables"),
                 (("tty", "t"), BOOL, "allocate a pseudo-TTY"),
                 (("user", "u"), STR, "UID (format: <uid>[:<gid>])"),
                 (("additional-gids", "g"), LIST, "additional gids"),
                 (("process", "p"), STR, "path to the process.json"),
                 (("detach", "d"), BOOL, "detach from the container's process"),
                 _PIDFILE,
                 (("process-label",), STR, "set the asm process label for the process"),
                 (("apparmor",), STR, "set the apparmor profile for the process"),
                 (("no-new-privs",), BOOL, "set the no new privileges value for the process"),
                 (("cap", "c"), LIST, "add a capability to the bounding set for the process"),
                 _PRESERVE,
                 (("cgroup",), LIST, "run the process in an (existing) sub-cgroup(s). Format is "
                                     "[<controller>:]<cgroup>."),
                 (("ignore-paused",), BOOL, "allow exec in a paused container")],
             (1, None), 1),
    "ps": ("ps displays the processes running inside a container",
           f"[command options] {_ID} [ps options]", [_FORMAT], (1, None), 1),
    "list": ("lists containers started by pyshim-runc with the given root", "[command options]", [
        _FORMAT, (("quiet", "q"), BOOL, "display only container IDs")], (0, 0), None),
    "pause": ("pause suspends all processes inside the container", _ID, [], (1, 1), None),
    "resume": ("resumes all processes that have been previously paused", _ID, [], (1, 1), None),
    "update": ("update container resource constraints", f"[command options] {_ID}", [
        (("resources", "r"), STR, "path to the file containing the resources to update or '-' "
                                  "to read from the standard input"),
        (("blkio-weight",), STR, "per cgroup weight, range is from 10 to 1000"),
        (("cpu-period",), STR, "CPU CFS period (in usecs)"),
        (("cpu-quota",), STR, "CPU CFS hardcap limit (in usecs)"),
        (("cpu-share", "cpu-shares"), STR, "CPU shares (relative weight vs. other containers)"),
        (("cpu-rt-period",), STR, "CPU realtime period (in usecs)"),
        (("cpu-rt-runtime",), STR, "CPU realtime hardcap limit (in usecs)"),
        (("cpuset-cpus",), STR, "CPU(s) to use"),
        (("cpuset-mems",), STR, "memory node(s) to use"),
        (("memory",), STR, "memory limit (in bytes, or with a k/m/g suffix)"),
        (("memory-reservation",), STR, "memory reservation or soft_limit"),
        (("memory-swap",), STR, "total memory usage (memory + swap); '-1' for unlimited swap"),
        (("pids-limit",), STR, "maximum number of pids allowed in the container"),
        (("l3-cache-schema",), STR, "Intel RDT/CAT L3 cache schema (not supported)"),
        (("mem-bw-schema",), STR, "Intel RDT/MBA memory bandwidth schema (not supported)")],
        (1, 1), None),
    "events": ("display container events such as OOM notifications, cpu, memory, and IO usage "
               "statistics", f"[command options] {_ID}", [
                   (("interval",), STR, "set the stats collection interval (default: 5s)"),
                   (("stats",), BOOL, "display the container's stats then exit")], (1, 1), None),
    "features": ("show the enabled features", "", [], (0, 0), None),
    "spec": ("create a new specification file", "[command options]", [
        (("bundle", "b"), STR, "path to the root of the bundle directory"),
        (("rootless",), BOOL, "generate a configuration for a rootless container")], (0, 0), None),
    "checkpoint": ("checkpoint a running container (not supported)", f"{_ID}", [], (0, None), 0),
    "restore": ("restore a container from a previous checkpoint (not supported)", f"{_ID}", [],
                (0, None), 0),
}
GLOBAL_FLAGS = [
    (("debug",), BOOL, "enable debug logging"),
    (("log",), STR, "set the log file to write pyshim-runc logs to (default is '/dev/stderr')"),
    (("log-format",), STR, "set the log format ('text' (default), or 'json')"),
    (("root",), STR, f"root directory for storage of container state (default: "
                     f"\"{DEFAULT_ROOT}\")"),
    (("criu",), STR, "accepted and ignored (no checkpoint/restore)"),
    (("systemd-cgroup",), BOOL, "the systemd cgroup driver (not supported)"),
    (("rootless",), STR, "accepted and ignored ('true', 'false', or 'auto')"),
    (("help", "h"), BOOL, "show help"),
    (("version", "v"), BOOL, "print the version"),
]


class Opts(dict):
    """Parsed flags: o.pid_file is None when the flag was not given (lists default to [])."""

    def __getattr__(self, name):
        return self.get(name)


def _table(flags) -> dict:
    out = {}
    for names, kind, _ in flags:
        for n in names:
            out[n] = (names[0].replace("-", "_"), kind)
    return out


_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


def parse_flags(args: list[str], flags, stop: int | None = None,
                command: str | None = None) -> tuple[Opts, list[str]]:
    """Go-flag-style parsing -> (options, positionals); see COMMANDS for `stop`."""
    table = _table(flags)
    opts = Opts({names[0].replace("-", "_"): [] for names, kind, _ in flags if kind == LIST})
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if stop is not None and len(pos) >= stop:
            pos.append(a)
            continue
        if a == "--":
            pos.extend(args[i:])
            break
        if len(a) < 2 or a[0] != "-":
            pos.append(a)
            continue
        name, eq, value = a.lstrip("-").partition("=")
        if name not in table:
            raise UsageError(f"flag provided but not defined: -{name}", command)
        dest, kind = table[name]
        if kind == BOOL:
            if eq and value not in _TRUE + _FALSE:
                raise UsageError(f"invalid boolean value {value!r} for -{name}", command)
            opts[dest] = not eq or value in _TRUE
            continue
        if not eq:
            if i >= len(args):
                raise UsageError(f"flag needs an argument: -{name}", command)
            value = args[i]
            i += 1
        if kind == INT:
            try:
                value = int(value, 0)
            except ValueError:
                raise UsageError(f"invalid value {value!r} for flag -{name}: parse error",
                                 command) from None
        if kind == LIST:
            opts[dest].append(value)
        else:
            opts[dest] = value
    return opts, pos


# --- logging ---------------------------------------------------------------------------------
def _go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _logrus_value(s: str) -> str:
    # logrus quotes a value unless it is made only of these characters
    if s and all(c.isascii() and (c.isalnum() or c in "-._/@^+") for c in s):
        return s
    return _go_quote(s)


def _now() -> str:
    import time
    t = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))
    off = time.strftime("%z", time.localtime(t))
    return stamp + ("Z" if off in ("+0000", "-0000", "") else f"{off[:3]}:{off[3:]}")


class Log:
    """runc's logrus set-up: lines go to --log FILE (default stderr) in --log-format; an error
    also goes to stderr as a bare message when the log is a file."""

    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False):
        self.path = path if path not in (None, "", "/dev/stderr") else None
        self.fmt = fmt
        self.debug_enabled = debug

    def line(self, level: str, msg: str) -> str:
        if self.fmt == "json":
            from . import fastjson as json
            return json.dumps({"level": level, "msg": msg, "time": _now()},
                              separators=(",", ":")) + "\n"
        return f"time={_go_quote(_now())} level={level} msg={_logrus_value(msg)}\n"

    def _write(self, level: str, msg: str) -> bool:
        """Write one line to the log; False if the log is stderr (or cannot be opened)."""
        text = self.line(level, msg)
        if self.path is None:
            sys.stderr.write(text)
            sys.stderr.flush()
            return False
        try:
            fd = posix.open(self.path, posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND
                            | posix.O_CLOEXEC, 0o644)
        except OSError as e:
            sys.stderr.write(f"{PROG}: cannot open log file {self.path}: {e.strerror}\n")
            return False
        try:
            posix.write(fd, text.encode(errors="replace"))
        finally:
            posix.close(fd)
        return True

    def write(self, level: str, msg: str) -> None:
        """A line at `level` ("debug" lines only with --debug)."""
        if level != "debug" or self.debug_enabled:
            self._write(level, msg)

    def error(self, msg: str) -> None:
        if self._write("error", msg):
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    def warning(self, msg: str) -> None:
        self._write("warning", msg)

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self._write("debug", msg)


# --- help ------------------------------------------------------------------------------------
def _flag_help(flags) -> str:
    rows = []
    for names, kind, text in flags:
        value = "" if kind == BOOL else " value"
        rows.append((", ".join(("--" if len(n) > 1 else "-") + n + value for n in names), text))
    width = max((len(r[0]) for r in rows), default=0)
    return "".join(f"   {a.ljust(width)}  {b}\n" for a, b in rows)


def command_help(name: str) -> str:
    summary, usage, flags, _, _ = COMMANDS[name]
    text = f"NAME:\n   {PROG} {name} - {summary}\n\nUSAGE:\n   {PROG} {name} {usage}\n"
    if flags:
        text += "\nOPTIONS:\n" + _flag_help(flags)
    return text


def main_help() -> str:
    width = max(len(n) for n in COMMANDS)
    cmds = "".join(f"   {n.ljust(width)}  {COMMANDS[n][0]}\n" for n in COMMANDS)
    return (f"NAME:\n   {PROG} - a runc-compatible command line over pyshim's OCI engine\n\n"
            f"USAGE:\n   {PROG} [global options] command [command options] [arguments...]\n\n"
            f"VERSION:\n   {VERSION}\n\nCOMMANDS:\n{cmds}\nGLOBAL OPTIONS:\n"
            + _flag_help(GLOBAL_FLAGS))


def version_text() -> str:
    from .cli_docs import OCI_VERSION_MAX
    return (f"{PROG} version {VERSION}\nspec: {OCI_VERSION_MAX}\n"
            f"python: {sys.version.split()[0]}\n")


# --- entry -----------------------------------------------------------------------------------
class Context:
    """What every command gets: the global options, the log, and the engine (made lazily)."""

    def __init__(self, gopts: Opts, log: Log, engine_factory=None, real_process: bool = False,
                 listen_fds: int = 0):
        self.root = gopts.root or DEFAULT_ROOT
        self.gopts = gopts
        self.log = log
        self.real_process = real_process  # may close inherited fds, install signal handlers
        self.listen_fds = listen_fds  # systemd socket-activation fds from 3 (create, run)
        self._engine_factory = engine_factory
        self._engine = None

    def engine(self):
        if self._engine is None:
            if self._engine_factory is None:
                from .container import Engine
                self._engine = Engine(self.root)
            else:
                self._engine = self._engine_factory(self.root)
        return self._engine


def _check_args(name: str, pos: list[str]) -> None:
    lo, hi = COMMANDS[name][3]
    if lo == hi == 1 and len(pos) != 1:
        raise UsageError(f'{PROG}: "{name}" requires exactly 1 argument(s)', name)
    if len(pos) < lo:
        raise UsageError(f'{PROG}: "{name}" requires a minimum of {lo} argument(s)', name)
    if hi is not None and len(pos) > hi:
        raise UsageError(f'{PROG}: "{name}" requires a maximum of {hi} argument(s)', name)


def error_text(e: BaseException) -> str | None:
    """The one line an engine or OS error is reported as; None for any other exception."""
    from .errors import EngineError
    if isinstance(e, EngineError):
        return str(e)
    if isinstance(e, OSError):
        return f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"
    return None


def listen_fds() -> int:
    """systemd socket activation, as runc's create and run take it (go-systemd's
    activation.Files): LISTEN_FDS fds from 3 on, when LISTEN_PID is this process."""
    from . import ospath
    try:
        if int(ospath.getenv("LISTEN_PID", "")) != posix.getpid():
            return 0
        return max(int(ospath.getenv("LISTEN_FDS", "")), 0)
    except ValueError:
        return 0


# Commands that move a process into a cgroup (the container's init, an exec'd process).
_MOVES_A_PROCESS = frozenset(("create", "run", "exec"))


def main(argv: list[str] | None = None, engine_factory=None) -> int:
    """The program: returns the exit code. `engine_factory(root)` replaces runtime.container.Engine
    (tests); argv None means the real process (sys.argv), which may also close inherited fds
    and install signal handlers, and which exits here. The real process runs without the
    cycle collector (~1.2 ms of every create/run/exec, most of it while importing the engine),
    until a command waits for as long as a container runs (cli_commands.long_wait)."""
    if argv is None:
        import gc
        gc.disable()
    rc = _main(argv, engine_factory)
    if argv is None:
        exit_now(rc)
    return rc


def exit_now(rc: int) -> None:
    """Flush stdout and stderr and exit without the interpreter's teardown (2 ms of every
    command: nothing of ours needs it). Output that cannot be written is an error."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            rc = rc or 1
    posix._exit(rc)


def _main(argv: list[str] | None, engine_factory) -> int:
    real = argv is None
    args = sys.argv[1:] if argv is None else list(argv)
    log = Log()
    try:
        gopts, rest = parse_flags(args, GLOBAL_FLAGS, stop=1)
        if gopts.log_format not in (None, "text", "json"):
            raise CliError(f"invalid log-format: {gopts.log_format}")
        log = Log(gopts.log, gopts.log_format or "text", bool(gopts.debug))
        if gopts.version:
            sys.stdout.write(version_text())
            return 0
        if not rest or gopts.help:
            if rest and rest[0] in COMMANDS:
                sys.stdout.write(command_help(rest[0]))
            else:
                sys.stdout.write(main_help())
            return 0
        if gopts.systemd_cgroup:
            raise CliError("--systemd-cgroup: the systemd cgroup driver is not supported by "
                           "this engine")
        name, cargs = rest[0], rest[1:]
        if name in ("help", "h"):
            sys.stdout.write(command_help(cargs[0]) if cargs and cargs[0] in COMMANDS
                             else main_help())
            return 0
        if name not in COMMANDS:
            raise UsageError(f"No help topic for '{name}'", None, code=3)
        _, _, flags, _, stop = COMMANDS[name]
        opts, pos = parse_flags(cargs, flags + [(("help", "h"), BOOL, "")], stop, name)
        if opts.help:
            sys.stdout.write(command_help(name))
            return 0
        _check_args(name, pos)
        listen = listen_fds() if real and name in ("create", "run") else 0
        if real and name in _MOVES_A_PROCESS:
            # Nothing of our caller's reaches the container but stdio and --preserve-fds (the
            # launcher's cgwarm thread keeps its own fd)...
            from . import cgwarm
            cgwarm.closerange(3 + listen + max(opts.preserve_fds or 0, 0))
            # ...and (cgroup v2) the cgroup move's grace period runs while the engine is
            # imported.
            if not cgwarm.started:  # not launched by hack/install.sh's launcher
                cgwarm.start()
        ctx = Context(gopts, log, engine_factory, real, listen)
        from . import cli_commands
        log.debug(f"{name} {' '.join(pos)}")
        return cli_commands.run(name, ctx, opts, pos)
    except UsageError as e:
        if e.command:
            sys.stdout.write(f"Incorrect Usage: {e}\n\n{command_help(e.command)}")
        log.error(str(e))
        return e.code
    except CliError as e:
        log.error(str(e))
        return e.code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - every failure is one line and exit 1, like runc
        text = error_text(e)
        if text is not None:
            log.error(text)
        else:
            log.error(f"internal error: {type(e).__name__}: {e}")
            if log.debug_enabled:
                import traceback
                sys.stderr.write(traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main())
