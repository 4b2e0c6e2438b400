#!/usr/bin/env bash
# Installs pyshim on a Kubernetes node that runs containerd, as root:
#   1. the shim: a virtualenv at PREFIX/venv (default /opt/pyshim/venv) made with the node's
#      python3 (>= 3.11, with the venv module), holding `pip install SOURCE` (a pyshim checkout or
#      a built wheel); then PREFIX/bin/containerd-shim-pyshim-v2 and PREFIX/bin/pyshim-runc, fast
#      launchers (python -IS, as hack/install.sh writes them), linked into BINDIR (default
#      /usr/local/bin, on containerd's PATH);
#   2. the runtime handler `pyshim` in containerd's config (default /etc/containerd/config.toml):
#      the table of deploy/containerd-pyshim.toml, appended between marker lines, for config
#      version 1, 2 (containerd 1.6/1.7) or 3 (containerd 2.x); runc stays the default; a missing
#      config is created with only that table; the first change keeps a .pyshim-backup copy;
#   3. a restart of containerd (systemctl, when systemd runs), which running containers survive.
# Safe to run again: the config is edited (and containerd restarted) only when the handler is
# missing; the shim is reinstalled from SOURCE (an upgrade).
#
# Usage: deploy/install-node.sh [options]
#   --source WHAT       what to pip install: a checkout, a wheel, or with --wheelhouse a
#                       requirement such as `pyshim` (default: the checkout this script is in)
#   --wheelhouse DIR    install from these wheels only (pip --no-index --find-links DIR), for
#                       nodes without access to PyPI (the installer image ships one)
#   --prefix DIR        where the venv and launchers go (default /opt/pyshim)
#   --bindir DIR        where the shim is linked (default /usr/local/bin)
#   --config FILE       containerd's config (default /etc/containerd/config.toml)
#   --handler NAME      the runtime handler's name (default pyshim)
#   --config-path FILE  pass this pyshim config file to the shim as runtime options (ConfigPath)
#   --skip-shim         only edit containerd's config
#   --no-restart        do not restart containerd (say so instead)
#   --uninstall         undo 1 and 2 (removes PREFIX, the links, the marked config block)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_arg=$(cd "$here/.." && pwd)
wheelhouse=""
prefix=/opt/pyshim
bindir=/usr/local/bin
config=/etc/containerd/config.toml
handler=pyshim
config_path=""
skip_shim=0
restart=1
uninstall=0
SHIM=containerd-shim-pyshim-v2
CLI=pyshim-runc

die() { echo "install-node.sh: $*" >&2; exit 1; }
say() { echo "install-node.sh: $*"; }

while (( $# )); do
    case $1 in
        --source) source_arg=$2; shift 2 ;;
        --wheelhouse) wheelhouse=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --bindir) bindir=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --handler) handler=$2; shift 2 ;;
        --config-path) config_path=$2; shift 2 ;;
        --skip-shim) skip_shim=1; shift ;;
        --no-restart) restart=0; shift ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $handler =~ ^[A-Za-z0-9_-]+$ ]] || die "--handler: letters, digits, - and _ only"
(( EUID == 0 )) || die "must run as root"
command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "python3 >= 3.11 needed, found $(python3 -V 2>&1)"

# --- 2. containerd's config: done by python3 (tomllib) so that the result is checked ----------
edit_config() {  # MODE=install|uninstall
    python3 - "$1" "$config" "$handler" "$config_path" <<'PY'
import os, sys, tomllib
mode, path, handler, config_path = sys.argv[1:]
BEGIN = f"# BEGIN pyshim runtime handler {handler} (deploy/install-node.sh; remove with --uninstall)"
END = f"# END pyshim runtime handler {handler}"
RUNTIME = "io.containerd.pyshim.v2"
text = open(path).read() if os.path.exists(path) else ""
try:
    cfg = tomllib.loads(text)
except tomllib.TOMLDecodeError as e:
    sys.exit(f"install-node.sh: {path} is not valid TOML ({e}); fix it first")
lines = text.splitlines(keepends=True)
marked = [i for i, l in enumerate(lines) if l.rstrip("\n") in (BEGIN, END)]
if mode == "uninstall":
    if len(marked) != 2:
        print(f"install-node.sh: no pyshim block for handler {handler} in {path}")
        sys.exit(0)
    start = marked[0] - 1 if marked[0] > 0 and not lines[marked[0] - 1].strip() else marked[0]
    new = "".join(lines[:start] + lines[marked[1] + 1:])
    tomllib.loads(new)
    open(path + ".tmp", "w").write(new)
    os.replace(path + ".tmp", path)
    print(f"install-node.sh: removed the pyshim block from {path}")
    sys.exit(0)
version = cfg.get("version", 1 if text.strip() else 2)
plugin = {1: "cri", 2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}.get(version)
if plugin is None:
    sys.exit(f"install-node.sh: {path}: unknown config version {version}")
containerd = cfg.get("plugins", {}).get(plugin, {}).get("containerd", {})
have = containerd.get("runtimes", {}).get(handler)
if have is not None:
    if have.get("runtime_type") != RUNTIME:
        sys.exit(f"install-node.sh: {path} already has a runtime handler {handler!r} of type "
                 f"{have.get('runtime_type')!r}; pick another --handler")
    print(f"install-node.sh: {path} already has the {handler} handler")
    sys.exit(0)
table = f'plugins.{plugin}' if version == 1 else f'plugins."{plugin}"'
block = [BEGIN]
default = containerd.get("default_runtime_name", "runc")
if default == "runc" and "runc" not in containerd.get("runtimes", {}):
    # containerd replaces its built-in runtimes (runc) with the config's as soon as the config
    # names one: keep runc, the default, by spelling it out.
    block += [f"[{table}.containerd.runtimes.runc]", '  runtime_type = "io.containerd.runc.v2"']
block += [f"[{table}.containerd.runtimes.{handler}]", f'  runtime_type = "{RUNTIME}"']
if config_path:
    block += [f"[{table}.containerd.runtimes.{handler}.options]",
              f'  ConfigPath = "{config_path}"']
block.append(END)
prefix = "" if text.strip() else "version = 2\n"
sep = "" if not text or text.endswith("\n") else "\n"
new = text + sep + prefix + "\n" + "\n".join(block) + "\n"
try:
    tomllib.loads(new)
except tomllib.TOMLDecodeError as e:
    sys.exit(f"install-node.sh: adding the handler would break {path} ({e}); add "
             "deploy/containerd-pyshim.toml by hand")
if text and not os.path.exists(path + ".pyshim-backup"):
    open(path + ".pyshim-backup", "w").write(text)
os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
open(path + ".tmp", "w").write(new)
os.replace(path + ".tmp", path)
print(f"install-node.sh: added the {handler} handler ({RUNTIME}) to {path}; "
      f"the default runtime stays {default!r}")
sys.exit(10)  # changed
PY
}

restart_containerd() {
    if (( ! restart )); then
        say "containerd's config changed: restart containerd to load it (--no-restart given)"
    elif [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl restart containerd
        say "restarted containerd"
    else
        say "no systemd here: restart containerd yourself to load the new config"
    fi
}

if (( uninstall )); then
    for bin in "$SHIM" "$CLI"; do
        if [[ $(readlink "$bindir/$bin" 2>/dev/null) == "$prefix/bin/$bin" ]]; then
            rm -f "$bindir/$bin"
            say "removed $bindir/$bin"
        fi
    done
    if [[ -d $prefix/venv || -d $prefix/bin ]]; then
        rm -rf "$prefix/venv" "$prefix/bin"
        say "removed $prefix/venv and $prefix/bin"
    fi
    edit_config uninstall
    exit 0
fi

# --- 1. the shim ------------------------------------------------------------------------------
if (( ! skip_shim )); then
    python3 -c 'import venv, ensurepip' 2>/dev/null ||
        die "python3's venv module is missing (apt-get install python3-venv)"
    [[ -e $source_arg || -n $wheelhouse ]] || die "--source $source_arg does not exist"
    venv=$prefix/venv
    if [[ ! -x $venv/bin/python ]]; then
        python3 -m venv "$venv"
    fi
    pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade)
    if [[ -n $wheelhouse ]]; then
        pip+=(--no-index --find-links "$wheelhouse")
    fi
    "${pip[@]}" "$source_arg"
    purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    mkdir -p "$prefix/bin"
    write_launcher() {  # NAME MODULE [FIRST-LINE] (as hack/install.sh's: see the comments there)
        local launcher first=""
        [[ -z ${3:-} ]] || first="$3"$'\n'
        launcher=$(printf '#!%s -IS\n# Written by deploy/install-node.sh (python -I -S: no site.py on the container start path).\nimport sys\nsys.path.append(%s)\n%sfrom %s import main\nsys.exit(main())\n' \
            "$venv/bin/python" "'$purelib'" "$first" "$2")
        printf '%s\n' "$launcher" >"$prefix/bin/$1.tmp"
        chmod 755 "$prefix/bin/$1.tmp"
        mv "$prefix/bin/$1.tmp" "$prefix/bin/$1"
    }
    write_launcher "$SHIM" shim.main
    write_launcher "$CLI" runtime.cli 'from runtime import cgwarm; cgwarm.early(sys.argv)'
    mkdir -p "$bindir"
    for bin in "$SHIM" "$CLI"; do
        ln -sfn "$prefix/bin/$bin" "$bindir/$bin"
    done
    "$bindir/$CLI" --version >/dev/null || die "$bindir/$CLI --version failed: the install is broken"
    say "installed $bindir/$SHIM -> $prefix/bin/$SHIM ($("$venv/bin/python" -V))"
fi

# --- 2 and 3 ----------------------------------------------------------------------------------
rc=0
edit_config install || rc=$?
case $rc in
    0) say "nothing to restart" ;;
    10) restart_containerd ;;
    *) exit "$rc" ;;
esac
