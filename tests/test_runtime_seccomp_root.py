"""Root tests of linux.seccomp in real containers: a profile that answers mkdir with ENOSYS
and allows the rest, for the init (with and without noNewPrivileges, i.e. installed last or
before the privileges drop) and for an exec'd process. Skipped unless running as root."""

import os

import pytest
from test_runtime_exec_root import exec_output, process, running, stop
from test_runtime_root import env, run, subreaper  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

PROFILE = {"defaultAction": "SCMP_ACT_ALLOW",
           "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}
SCRIPT = "mkdir /tmp/x || echo failed; ls /tmp; echo ok; grep Seccomp: /proc/self/status"


def with_profile(nnp=True):
    def mutate(c):
        c["linux"]["seccomp"] = PROFILE
        c["process"]["noNewPrivileges"] = nnp
    return mutate


@pytest.mark.parametrize("nnp", [True, False])
def test_mkdir_gets_enosys_and_the_rest_works(env, nnp):
    engine, bundle = env
    (bundle / "rootfs" / "tmp").mkdir()
    out, code = run(engine, bundle, ["sh", "-c", SCRIPT], mutate=with_profile(nnp))
    assert code == 0
    lines = out.splitlines()
    assert "Function not implemented" in lines[0]  # ENOSYS, from the filter
    assert lines[1:] == ["failed", "ok", "Seccomp:\t2"]  # /tmp stays empty; mode 2 = filter
    assert not (bundle / "rootfs" / "tmp" / "x").exists()


def test_an_exec_gets_the_containers_filter(env):
    engine, bundle = env
    (bundle / "rootfs" / "tmp").mkdir()
    c = running(engine, bundle, mutate=with_profile())
    out, code, _ = exec_output(c, process(["sh", "-c", SCRIPT], noNewPrivileges=False))
    assert code == 0
    assert out[1:] == ["failed", "ok", "Seccomp:\t2"]
    stop(c)


def test_without_a_profile_mkdir_works(env):
    engine, bundle = env
    (bundle / "rootfs" / "tmp").mkdir()
    out, code = run(engine, bundle, ["sh", "-c", SCRIPT])
    assert (code, out.splitlines()) == (0, ["x", "ok", "Seccomp:\t0"])
