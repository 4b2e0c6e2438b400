"""PrivateContainerd(cri=True) itself: the CRI plugin is ready with both handlers, the pause image
and a network; the blackhole route lives exactly as long as the instance; a second instance takes
another subnet; stop() removes pods left running (and their network namespaces), and never a
route it did not add."""
from __future__ import annotations

import os
import subprocess

import pytest

from integration.containerd import (CRI_NAMESPACE, PAUSE_IMAGE, ContainerdError,
                                    PrivateContainerd)
from integration.conftest import pyshim_shims


def routes(subnet: str) -> str:
    return subprocess.run(["ip", "-4", "route", "show", "root", subnet], capture_output=True,
                          text=True, timeout=30).stdout.strip()


def test_second_instance_network_lifecycle_and_teardown(cri_containerd, tmp_path):
    first = cri_containerd.pod_subnet
    assert routes(first) == f"blackhole {first}"
    c = PrivateContainerd(cri=True, shims=pyshim_shims(), namespace=CRI_NAMESPACE)
    try:
        assert c.pod_subnet != first, "two live instances share a subnet"
        assert routes(c.pod_subnet) == f"blackhole {c.pod_subnet}"
        with c.cri_client() as cri:
            st = cri.status()
            conds = {x.type: x.status for x in st.status.conditions}
            assert conds == {"RuntimeReady": True, "NetworkReady": True}, st
            config = st.info["config"]
            assert '"restrictOOMScoreAdj":true' in config.replace(" ", "")
            for handler, rtype in (("runc", "io.containerd.runc.v2"),
                                   ("pyshim", "io.containerd.pyshim.v2")):
                assert f'"{handler}":{{"runtimeType":"{rtype}"' in config.replace(" ", "")
            assert cri.image_status(PAUSE_IMAGE).image.id
            # a pod left running on pyshim: stop() must take it down through CRI
            pod = cri.run_pod(cri.pod_config("left", log_directory=str(tmp_path),
                                             host_network=False, hostname="left"), "pyshim")
            netns = c.sandbox_netns()[pod]
            assert os.path.exists(netns)
    finally:
        subnet = c.pod_subnet
        notes = c.stop()
    assert any(n.startswith("removed CRI pod") for n in notes), notes
    assert not os.path.exists(netns)
    assert routes(subnet) == ""
    assert routes(first) == f"blackhole {first}", "the other instance's route was touched"


def test_a_route_it_did_not_add_is_refused_and_kept(prerequisites):
    subnet = "10.88.250.0/24"
    if routes(subnet):
        pytest.skip(f"{subnet} is routed on this host already")
    subprocess.run(["ip", "route", "add", "blackhole", subnet], check=True, timeout=30)
    try:
        with pytest.raises(ContainerdError, match="no free pod subnet"):
            PrivateContainerd(cri=True, pod_subnet=subnet)
        assert routes(subnet) == f"blackhole {subnet}"
    finally:
        subprocess.run(["ip", "route", "del", "blackhole", subnet], timeout=30)
