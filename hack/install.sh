#!/usr/bin/env bash
# Installs everything pyshim needs to build, run and test, on Debian 12, as root:
#   - Debian packages: containerd, runc, crun, busybox-static, python3-venv, criu, iproute2,
#     gcc + libc6-dev (hack/pause.c, the CRI sandbox program, is built with gcc -static),
#     containernetworking-plugins (CNI plugins in /usr/lib/cni for CRI pod-network pods), ...
#   - a virtualenv at <repo>/.venv made with Debian's /usr/bin/python3, holding
#     `pip install -e <repo>[dev]`
#   - /usr/local/bin/containerd-shim-pyshim-v2 -> <repo>/.venv/bin/containerd-shim-pyshim-v2
#     so that containerd finds the shim on PATH, and likewise /usr/local/bin/pyshim-runc (the
#     runc-compatible command line over the same engine).
# Idempotent and quiet: prints nothing when all is in place, skips apt when the packages are
# there and pip when pyproject.toml (and the set of top-level packages) did not change.
# On failure it says which step failed and shows the end of that step's output.
# Usage: hack/install.sh [-v]     (-v: say what it does)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
verbose=0
[[ ${1:-} == -v ]] && verbose=1

PACKAGES=(containerd runc crun busybox-static python3 python3-venv criu iproute2
          util-linux mount ca-certificates gcc libc6-dev containernetworking-plugins)
VENV=$root/.venv
SHIM=containerd-shim-pyshim-v2
CLI=pyshim-runc
STAMP=$VENV/.pyshim-install-stamp

log=$(mktemp /tmp/pyshim-install.XXXXXX.log)
step=""
say() { if (( verbose )); then echo "install: $*"; fi; }
fail() {
    echo "hack/install.sh: FAILED at: $step" >&2
    if [[ -s $log ]]; then
        echo "--- last lines of its output ($log) ---" >&2
        tail -n 40 "$log" >&2
    fi
    exit 1
}
trap 'rc=$?; if (( rc != 0 )); then fail; else rm -f "$log"; fi' EXIT
run() { step="$*"; say "$*"; "$@" >>"$log" 2>&1; }

step="checking for root"
if (( EUID != 0 )); then
    echo "hack/install.sh: must run as root (it installs Debian packages and /usr/local/bin/$SHIM)" >&2
    exit 1
fi

# Serialize concurrent runs (test.sh and demo.sh both call this).
exec 9>/tmp/pyshim-install.lock
flock 9

# --- Debian packages ------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) != "install ok installed" ]]; then
        missing+=("$p")
    fi
done
if (( ${#missing[@]} )); then
    export DEBIAN_FRONTEND=noninteractive
    run apt-get update -q
    run apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

step="checking the installed tools"
for b in containerd ctr runc crun containerd-shim-runc-v2 /bin/busybox /usr/bin/python3 gcc \
         /usr/lib/cni/ptp /usr/lib/cni/host-local /usr/lib/cni/loopback; do
    command -v "$b" >/dev/null || { echo "hack/install.sh: $b missing after apt-get install" >&2; exit 1; }
done

# --- virtualenv -----------------------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
    rm -rf "$VENV"
    run /usr/bin/python3 -m venv "$VENV"
fi

# The pip step re-runs when pyproject.toml changes, or the set of top-level packages does
# (an editable install maps the top-level packages it saw at install time).
want=$( { sha256sum "$root/pyproject.toml" | cut -d' ' -f1
          cd "$root" && ls -d shim*/ runtime*/ proto*/ 2>/dev/null | sort
          "$VENV/bin/python" -VV; } | sha256sum | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want" || ! -e $VENV/bin/$SHIM ]]; then
    rm -f "$STAMP"
    run "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$root[dev]"
    echo "$want" >"$STAMP"
fi

# --- fast launchers -------------------------------------------------------------------------
# containerd runs the shim for every container start and delete, and its runc shim runs the
# runtime CLI three times per container: start-up time is latency. pip's console script pays for
# site.py and the editable-install finder (~10 ms here); these launchers run the interpreter
# with -I -S (isolated, no site) and put exactly the repo and the venv's site-packages on
# sys.path: the repo first, the venv's site-packages after the standard library, as in any
# Python (the CLI imports nothing from it; the search for the standard library's C modules
# then never lists it: ~0.15 ms of a create). Each replaces pip's script of the same name.
step="writing the fast launchers"
purelib=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
write_launcher() {  # NAME MODULE [FIRST-LINE]
    local launcher first=""
    [[ -z ${3:-} ]] || first="$3"$'\n'
    launcher=$(printf '#!%s -IS\n# Written by hack/install.sh: see the comment there.\nimport sys\nsys.path.insert(0, %s)\nsys.path.append(%s)\n%sfrom %s import main\nsys.exit(main())\n' \
        "$VENV/bin/python" "'$root'" "'$purelib'" "$first" "$2")
    if [[ "$(cat "$VENV/bin/$1" 2>/dev/null)" != "$launcher" ]]; then
        printf '%s\n' "$launcher" >"$VENV/bin/$1.tmp"
        chmod 755 "$VENV/bin/$1.tmp"
        mv "$VENV/bin/$1.tmp" "$VENV/bin/$1"
    fi
}
write_launcher "$SHIM" shim.main
# The CLI's: the cgroup move's grace period starts before anything else is imported
# (runtime/cgwarm.py).
write_launcher "$CLI" runtime.cli 'from runtime import cgwarm; cgwarm.early(sys.argv)'

# --- the shim on containerd's PATH, the CLI on everyone's -----------------------------------
for bin in "$SHIM" "$CLI"; do
    if [[ $(readlink /usr/local/bin/$bin 2>/dev/null) != "$VENV/bin/$bin" ]]; then
        run ln -sf "$VENV/bin/$bin" /usr/local/bin/$bin
    fi
done
step=""
