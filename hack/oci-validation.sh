#!/usr/bin/env bash
# The OCI runtime-tools validation suite against runc-compatible CLIs: builds the validation
# executables and runtimetest with Debian's Go, runs every executable (or $TESTS) for each
# runtime in $RUNTIME, keeps each one's TAP output, prints ok / not ok / skip per runtime.
#
#   RUNTIME="runc pyshim-runc" hack/oci-validation.sh          # as root
#
# Environment:
#   RUNTIME            runtimes to validate, by name or path (default: pyshim-runc)
#   TESTS              validation executables to run, e.g. "default hostname linux_ns_itype"
#                      (default: all of them)
#   OUT                where the TAP goes: $OUT/<runtime>/<test>.tap|.err, $OUT/summary.txt
#                      (default: /var/tmp/pyshim-oci-validation/results)
#   RUNTIME_TOOLS_SRC  a runtime-tools source tree (default: Debian's, under /usr/share/gocode,
#                      with this repo's integration/runtime-tools laid over it: Debian ships no
#                      validation/ nor cmd/runtimetest). With vendor/modules.txt it builds in
#                      module mode (-mod=vendor), otherwise in GOPATH mode over
#                      /usr/share/gocode. Never written to.
#   TEST_TIMEOUT       seconds per executable (default 300)
#   VERBOSE=1          print each executable's counts and failing lines
#
# Offline by construction: GOPROXY=off, GOFLAGS=-mod=vendor or GO111MODULE=off; the only
# network use is apt-get for Debian's packages (skipped when they are installed).
# Exit status: 0 the suite ran (whatever it counted), 1 an error, 2 the suite cannot be built
# here (the reason is printed).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
WORK=${OCI_WORK:-/var/tmp/pyshim-oci-validation}
OUT=${OUT:-$WORK/results}
RUNTIME=${RUNTIME:-pyshim-runc}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
DEBIAN_SRC=/usr/share/gocode/src/github.com/opencontainers/runtime-tools
SRC=${RUNTIME_TOOLS_SRC:-$DEBIAN_SRC}
OVERLAY=""  # laid over $SRC when that has no validation programs of its own
if [[ -z ${RUNTIME_TOOLS_SRC:-} && ! -d $SRC/validation && -d $root/integration/runtime-tools ]]; then
    OVERLAY=$root/integration/runtime-tools
fi
PACKAGES=(golang-go golang-github-opencontainers-runtime-tools-dev busybox-static)
GOARCH_=$(dpkg --print-architecture)

die() { echo "oci-validation: $*" >&2; exit 1; }
unavailable() { echo "oci-validation: the validation suite cannot be built here: $*" >&2; exit 2; }

(( EUID == 0 )) || die "must run as root (containers, and apt-get)"

# --- Debian's packages ----------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) != "install ok installed" ]]; then
        missing+=("$p")
    fi
done
if (( ${#missing[@]} )); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH=/usr/lib/go/bin:$PATH GOPROXY=off GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:-} \
       GOCACHE=$WORK/gocache CGO_ENABLED=0
command -v go >/dev/null || die "no go after installing golang-go"

# --- the source: validation/ and cmd/runtimetest are what runs ------------------------------
[[ -d $SRC ]] || unavailable "no runtime-tools source at $SRC"
if [[ -z $OVERLAY && ( ! -d $SRC/validation || ! -d $SRC/cmd/runtimetest ) ]]; then
    have=$(cd "$SRC" && ls -d */ 2>/dev/null | tr -d / | tr '\n' ' ')
    reason="$SRC has no validation/ or cmd/runtimetest/ (it has: $have)."
    if [[ $SRC == "$DEBIAN_SRC" ]]; then
        reason+=" Debian's golang-github-opencontainers-runtime-tools-dev ships only the library"
        reason+=" packages; the validation programs, runtimetest and the rootfs tarball are in no"
        reason+=" Debian binary package, and github.com/mndrix/tap-go, which both import, is not"
        reason+=" packaged either. Set RUNTIME_TOOLS_SRC to a runtime-tools checkout (its vendor/"
        reason+=" holds every dependency; nothing is downloaded)."
    fi
    unavailable "$reason"
fi

# --- build (into $WORK, only what is missing or older than its sources) ---------------------
BUILD=$WORK/build
RUN=$WORK/run
mkdir -p "$BUILD" "$RUN/validation" "$OUT"
tree=$BUILD/gopath/src/github.com/opencontainers/runtime-tools
if [[ ! -d $tree || ! -f $BUILD/.copied || $(cat "$BUILD/.copied") != "$SRC $OVERLAY" \
      || -n $(find "$SRC" $OVERLAY -newer "$BUILD/.copied" -print -quit 2>/dev/null) ]]; then
    rm -rf "$tree" && mkdir -p "$tree"
    cp -a "$SRC/." "$tree/"
    if [[ -n $OVERLAY ]]; then
        cp -a "$OVERLAY/." "$tree/"
        rm -f "$tree/go.mod" "$tree/go.sum"  # Debian's: its modules are GOPATH packages here
    fi
    echo "$SRC $OVERLAY" >"$BUILD/.copied"
fi
if [[ -f $tree/vendor/modules.txt && -f $tree/go.mod ]]; then
    mode="module mode, -mod=vendor"
    gobuild() { (cd "$tree" && GO111MODULE=on GOFLAGS=-mod=vendor go build -o "$@"); }
else
    mode="GOPATH mode over /usr/share/gocode"
    export GO111MODULE=off GOPATH=$BUILD/gopath:/usr/share/gocode
    gobuild() { (cd "$tree" && go build -o "$@"); }
    # Resolve the imports as the build will: a vendor/ directory inside the tree counts in GOPATH
    # mode too (a bare `go list IMPORT_PATH` run at the tree's root would not look there).
    unresolved=$(cd "$tree" && go list -e -deps -f '{{with .Error}}{{.Err}}{{"\n"}}{{end}}' \
        ./cmd/runtimetest ./validation/... 2>&1 | grep -o 'cannot find package "[^"]*"' \
        | sort -u | tr '\n' ' ' || true)
    [[ -z $unresolved ]] || unavailable "${unresolved}in neither GOPATH ($GOPATH) nor the" \
        "tree's vendor/: nothing may be downloaded"
fi
built=0
build() {  # OUTPUT PACKAGE_DIR
    if [[ ! -x $1 || -n $(find "$tree/$2" -name '*.go' -newer "$1" -print -quit) ]]; then
        gobuild "$1" "./$2" 2>"$1.build.log" || die "go build ./$2 failed ($mode):
$(tail -n 20 "$1.build.log")"
        built=$((built + 1))
    fi
}
build "$RUN/runtimetest" cmd/runtimetest
all_tests=()
for d in "$tree"/validation/*/; do
    name=$(basename "$d")
    [[ $name == util ]] && continue
    ls "$d"*.go >/dev/null 2>&1 || continue
    all_tests+=("$name")
    build "$RUN/validation/$name.t" "validation/$name"
done
(( ${#all_tests[@]} )) || unavailable "$SRC/validation has no test programs"
echo "oci-validation: ${#all_tests[@]} validation executables ($mode; $built built now)"

# The executables unpack rootfs-<GOARCH>.tar.gz from their working directory and copy
# runtimetest into it: use the tree's tarball, else make one from Debian's static busybox
# (made again when this script is newer than it).
rootfs_tar=$RUN/rootfs-$GOARCH_.tar.gz
if [[ ! -f $rootfs_tar || $rootfs_tar -ot ${BASH_SOURCE[0]} ]]; then
    if [[ -f $tree/rootfs-$GOARCH_.tar.gz ]]; then
        cp "$tree/rootfs-$GOARCH_.tar.gz" "$rootfs_tar"
    else
        r=$(mktemp -d)
        mkdir -p "$r"/{bin,dev,etc,proc,sys,tmp,root}
        # The tarball's "./" entry gives the bundle directory (the container's /) its mode when
        # unpacked: mktemp's 0700 would leave / untraversable for a non-root process.user or a
        # user-namespace root (process_user, linux_uid_mappings), under any runtime.
        chmod 0755 "$r"
        chmod 1777 "$r/tmp"
        cp /bin/busybox "$r/bin/busybox"
        for a in $(/bin/busybox --list); do
            [[ -e $r/bin/$a ]] || ln "$r/bin/busybox" "$r/bin/$a"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
        printf 'root:x:0:\n' >"$r/etc/group"
        tar -C "$r" -czf "$rootfs_tar" .
        rm -rf "$r"
    fi
fi

# --- what the executables leave behind ------------------------------------------------------
# Removed at exit, only what this run made (newer than $STAMP): bundles (/tmp/ocitest*; a
# util.Fatal exit skips their deferred removal, and a runtime running a container without a
# mount namespace - runc in linux_ns_itype - leaves proc/dev/sys mounted on one, in the host's
# mount namespace), containers left in a runtime's default root, and the empty cgroups the
# cgroup tests name (/cgrouptest, testdir/cgrouptest/container under a runtime's parent).
STAMP=$(mktemp /tmp/oci-validation-stamp.XXXXXX)
started=$(date +%s)
cleanup() {
    local rt id created d
    for rt in $RUNTIME; do
        command -v "$rt" >/dev/null || continue
        for id in $("$rt" list -q 2>/dev/null); do
            created=$("$rt" state "$id" 2>/dev/null | sed -n 's/.*"created": *"\([^"]*\)".*/\1/p')
            [[ -n $created ]] && (( $(date -d "$created" +%s 2>/dev/null || echo 0) >= started )) \
                || continue
            "$rt" delete --force "$id" >/dev/null 2>&1 || true
        done
    done
    while read -r d; do
        if grep -q " $d[ /]" /proc/self/mountinfo; then
            umount -R "$d" 2>/dev/null || umount -Rl "$d" 2>/dev/null || true
        fi
        grep -q " $d[ /]" /proc/self/mountinfo || rm -rf "$d"
    done < <(find /tmp -maxdepth 1 -type d \( -name 'ocitest*' -o -name 'oci-pid*' \) \
                  -cnewer "$STAMP" 2>/dev/null)
    while read -r d; do
        rmdir "$d" 2>/dev/null || true
    done < <(find /sys/fs/cgroup -mindepth 2 -maxdepth 8 -depth -type d -cnewer "$STAMP" \
                  \( -name cgrouptest -o -name container -path '*/testdir/cgrouptest/*' \
                     -o -name testdir \) 2>/dev/null)
    rm -f "$STAMP"
}
trap cleanup EXIT

# --- run ------------------------------------------------------------------------------------
read -r -a tests <<<"${TESTS:-${all_tests[*]}}"
count() {  # TAP_FILE -> "ok notok skip"
    awk '/^not ok/ {n++; next} /^ok/ { if ($0 ~ /# [Ss][Kk][Ii][Pp]/) s++; else o++ }
         END {printf "%d %d %d\n", o, n, s}' "$1"
}
summary=$OUT/summary.txt
: >"$summary"
for rt in $RUNTIME; do
    bin=$(command -v "$rt" || true)
    [[ -n $bin ]] || die "runtime $rt not found"
    name=$(basename "$rt")
    dir=$OUT/$name
    rm -rf "$dir" && mkdir -p "$dir"
    tok=0 tnot=0 tskip=0 crashed=()
    for t in "${tests[@]}"; do
        [[ -x $RUN/validation/$t.t ]] || die "no validation executable $t (have: ${all_tests[*]})"
        rc=0
        (cd "$RUN" && RUNTIME=$bin timeout -k 10 "$TEST_TIMEOUT" "./validation/$t.t" \
            >"$dir/$t.tap" 2>"$dir/$t.err" </dev/null) || rc=$?
        read -r ok notok skip < <(count "$dir/$t.tap")
        if (( rc != 0 )) && ! grep -q '^1\.\.[0-9]' "$dir/$t.tap"; then
            crashed+=("$t(exit $rc)")
        fi
        tok=$((tok + ok)) tnot=$((tnot + notok)) tskip=$((tskip + skip))
        printf '%s %s ok %d not-ok %d skip %d exit %d\n' "$name" "$t" "$ok" "$notok" "$skip" \
            "$rc" >>"$summary"
        if [[ ${VERBOSE:-0} == 1 ]]; then
            printf '  %-45s ok %4d  not ok %3d  skip %3d%s\n' "$t" "$ok" "$notok" "$skip" \
                "$( (( rc )) && echo "  (exit $rc)")"
            grep '^not ok' "$dir/$t.tap" | sed 's/^/      /' || true
        fi
    done
    printf '%-16s ok %5d  not ok %4d  skip %4d  (%d executables; without a TAP plan: %s)\n' \
        "$name" "$tok" "$tnot" "$tskip" "${#tests[@]}" "${crashed[*]:-none}" | tee -a "$summary"
done
echo "oci-validation: TAP in $OUT/<runtime>/, summary in $summary"
