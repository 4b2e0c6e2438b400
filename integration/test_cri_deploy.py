"""deploy/: install-node.sh edits containerd's config as documented (containerd itself parses
the result), installs a working shim from a wheelhouse, and undoes both; the manifests are what
they say. Root (the script refuses to run otherwise) and containerd; the shim install needs pip
to reach PyPI or its cache (to build the wheelhouse)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest

from integration.containerd import BUSYBOX_IMAGE, PYSHIM_BINARY, PYSHIM_RUNTIME, PrivateContainerd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "deploy")
SCRIPT = os.path.join(DEPLOY, "install-node.sh")
CRI = "io.containerd.grpc.v1.cri"


def install(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", SCRIPT, "--no-restart", *args], capture_output=True, text=True,
                       timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"install-node.sh {args} exited {r.returncode}: {r.stdout}{r.stderr}")
    return r


def dump(config: str) -> dict:
    """containerd's view of `config` (defaults merged in)."""
    r = subprocess.run(["containerd", "--config", config, "config", "dump"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return tomllib.loads(r.stdout)


def cri_runtimes(config: str) -> tuple[str, dict]:
    c = dump(config)["plugins"][CRI]["containerd"]
    return c["default_runtime_name"], {k: v["runtime_type"] for k, v in c["runtimes"].items()}


@pytest.fixture
def root_only(prerequisites):
    return None


@pytest.mark.parametrize("start", ["default", "missing", "partial"])
def test_config_handler_added_once_runc_stays_default(root_only, tmp_path, start):
    cfg = tmp_path / "config.toml"
    if start == "default":
        cfg.write_text(subprocess.run(["containerd", "config", "default"], capture_output=True,
                                      text=True, check=True, timeout=60).stdout)
    elif start == "partial":  # a config that names no runtime: containerd's built-in runc applies
        cfg.write_text(f'version = 2\n[plugins."{CRI}"]\n  restrict_oom_score_adj = true\n')
    before = cfg.read_text() if cfg.exists() else None
    r = install("--skip-shim", "--config", str(cfg))
    assert "added the pyshim handler" in r.stdout and "restart containerd" in r.stdout
    default, runtimes = cri_runtimes(str(cfg))
    assert default == "runc"
    assert runtimes["runc"] == "io.containerd.runc.v2" and runtimes["pyshim"] == PYSHIM_RUNTIME
    once = cfg.read_text()
    r = install("--skip-shim", "--config", str(cfg))
    assert "already has the pyshim handler" in r.stdout and "nothing to restart" in r.stdout
    assert cfg.read_text() == once
    install("--uninstall", "--skip-shim", "--config", str(cfg), "--prefix", str(tmp_path / "none"))
    if before is None:
        assert tomllib.loads(cfg.read_text()) == {"version": 2}
    else:
        assert cfg.read_text() == before
        assert (tmp_path / "config.toml.pyshim-backup").read_text() == before


def test_config_options_handler_name_and_versions(root_only, tmp_path):
    cfg = tmp_path / "config.toml"
    install("--skip-shim", "--config", str(cfg), "--handler", "pyshim-shared",
            "--config-path", "/etc/pyshim/shared.toml")
    c = dump(str(cfg))["plugins"][CRI]["containerd"]["runtimes"]["pyshim-shared"]
    assert c["runtime_type"] == PYSHIM_RUNTIME
    assert c["options"] == {"ConfigPath": "/etc/pyshim/shared.toml"}
    # version 1 (plugins.cri) and 3 (containerd 2.x's io.containerd.cri.v1.runtime): the table
    # lands under the plugin name of that version.
    for version, table in ((1, ["plugins", "cri"]), (3, ["plugins", "io.containerd.cri.v1.runtime"])):
        p = tmp_path / f"v{version}.toml"
        p.write_text(f"version = {version}\n" if version != 1 else "oom_score = 0\n")
        install("--skip-shim", "--config", str(p))
        t = tomllib.loads(p.read_text())
        for k in table + ["containerd", "runtimes"]:
            t = t[k]
        assert t["pyshim"] == {"runtime_type": PYSHIM_RUNTIME}
        assert t["runc"] == {"runtime_type": "io.containerd.runc.v2"}


def test_config_refuses_a_clash_and_bad_toml(root_only, tmp_path):
    cfg = tmp_path / "config.toml"
    text = (f'version = 2\n[plugins."{CRI}".containerd.runtimes.pyshim]\n'
            '  runtime_type = "io.containerd.other.v1"\n')
    cfg.write_text(text)
    r = install("--skip-shim", "--config", str(cfg), check=False)
    assert r.returncode != 0 and "pick another --handler" in r.stderr
    cfg.write_text("version = = 2\n")
    r = install("--skip-shim", "--config", str(cfg), check=False)
    assert r.returncode != 0 and "not valid TOML" in r.stderr
    assert cfg.read_text() == "version = = 2\n"
    assert cfg.with_name(cfg.name + ".tmp").exists() is False


def test_shim_from_wheelhouse_runs_a_container(root_only, busybox_tar, tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                        "-w", str(wheels), REPO], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"pip wheel failed (no PyPI or cache?): {r.stderr[-500:]}")
    prefix, bindir, cfg = tmp_path / "opt", tmp_path / "bin", tmp_path / "config.toml"
    r = install("--source", "pyshim", "--wheelhouse", str(wheels), "--prefix", str(prefix),
                "--bindir", str(bindir), "--config", str(cfg))
    shim = bindir / PYSHIM_BINARY
    assert os.readlink(shim) == str(prefix / "bin" / PYSHIM_BINARY)
    first = shim.read_text().splitlines()[0]
    assert first == f"#!{prefix}/venv/bin/python -IS"
    # Not this checkout: the installed copy, from the venv's site-packages.
    site = re.search(r"sys.path.append\('([^']+)'\)", shim.read_text()).group(1)
    assert site.startswith(str(prefix / "venv")) and os.path.isdir(os.path.join(site, "shim"))
    # the CLI's launcher starts the cgroup move's grace period first, as hack/install.sh's
    cli = (bindir / "pyshim-runc").read_text().splitlines()
    assert cli[3:5] == [f"sys.path.append('{site}')",
                        "from runtime import cgwarm; cgwarm.early(sys.argv)"], cli
    with PrivateContainerd(shims={PYSHIM_BINARY: str(shim)},
                           extra_path=[str(bindir)]) as c:
        c.import_image(busybox_tar)
        r = c.ctr("run", "--rm", "--runtime", PYSHIM_RUNTIME, BUSYBOX_IMAGE, "deploy-check",
                  "echo", "installed pyshim", timeout=60)
        assert (r.returncode, r.stdout) == (0, "installed pyshim\n"), r.stderr + c.log_tail()
        assert c.shim_processes() == []
    install("--uninstall", "--prefix", str(prefix), "--bindir", str(bindir), "--config", str(cfg))
    assert not shim.exists() and not (prefix / "venv").exists()


def test_manifests_name_the_handler():
    rc = open(os.path.join(DEPLOY, "runtimeclass.yaml")).read()
    assert re.search(r"^kind: RuntimeClass$", rc, re.M) and re.search(r"^handler: pyshim$", rc, re.M)
    snippet = tomllib.loads(open(os.path.join(DEPLOY, "containerd-pyshim.toml")).read())
    runtimes = snippet["plugins"][CRI]["containerd"]["runtimes"]
    assert runtimes == {"runc": {"runtime_type": "io.containerd.runc.v2"},
                        "pyshim": {"runtime_type": PYSHIM_RUNTIME}}
    ds = open(os.path.join(DEPLOY, "installer-daemonset.yaml")).read()
    assert "kind: DaemonSet" in ds and "install-node.sh" in ds and "hostPID: true" in ds
    pod = open(os.path.join(DEPLOY, "example-pod.yaml")).read()
    assert "runtimeClassName: pyshim" in pod
