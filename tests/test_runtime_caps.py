"""runtime.caps: capability names, numbers and capset masks."""

import pytest

from runtime import caps
from runtime.errors import InvalidSpec
from runtime.specgen import DEFAULT_CAPS


def test_numbers_follow_the_kernel():
    assert caps.NUMBERS["CAP_CHOWN"] == 0
    assert caps.NUMBERS["CAP_SETPCAP"] == 8
    assert caps.NUMBERS["CAP_NET_RAW"] == 13
    assert caps.NUMBERS["CAP_SYS_ADMIN"] == 21
    assert caps.NUMBERS["CAP_SYS_RESOURCE"] == 24
    assert caps.NUMBERS["CAP_AUDIT_READ"] == 37
    assert caps.NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(set(caps.NAMES)) == len(caps.NAMES) == 41


def test_containerd_default_set_is_the_well_known_mask():
    assert caps.to_mask(DEFAULT_CAPS, "x", last=40) == 0xA80425FB


def test_mask_and_names_round_trip():
    names = ["CAP_KILL", "CAP_CHOWN", "CAP_BPF"]
    mask = caps.to_mask(names, "x", last=40)
    assert mask == 1 << 5 | 1 << 0 | 1 << 39
    assert caps.to_names(mask) == ["CAP_CHOWN", "CAP_KILL", "CAP_BPF"]


def test_names_are_case_insensitive():
    assert caps.to_mask(["cap_chown"], "x", last=40) == 1


def test_unknown_name_is_invalid_spec_naming_the_item():
    with pytest.raises(InvalidSpec) as e:
        caps.to_mask(["CAP_CHOWN", "CAP_TELEPORT"], "process.capabilities.bounding", last=40)
    assert e.value.field == "process.capabilities.bounding[1]"
    assert "CAP_TELEPORT" in str(e.value)


def test_caps_newer_than_the_kernel_are_dropped():
    # A 5.4 kernel stops at CAP_AUDIT_READ (37): asking for CAP_BPF cannot be honoured.
    assert caps.to_mask(["CAP_BPF", "CAP_KILL"], "x", last=37) == 1 << 5


def test_all_mask_and_host_last_cap():
    assert caps.all_mask(40) == (1 << 41) - 1
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert caps.last_cap() == int(f.read())


def test_capget_joins_the_two_capset_words():
    # capset/capget v3 carry two 32-bit words per set; the wrapper must join them like the
    # kernel reports them in /proc/self/status.
    from runtime.sys.linux import LINUX
    status = dict(line.split(":\t") for line in open("/proc/self/status").read().splitlines()
                  if line.startswith("Cap"))
    eff, prm, inh = LINUX.capget()
    assert (eff, prm, inh) == tuple(int(status[k], 16) for k in ("CapEff", "CapPrm", "CapInh"))
    LINUX.capset(eff, prm, inh)  # setting what we have is allowed for anyone
