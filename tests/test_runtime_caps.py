"""runtime.caps: capability names, numbers and capset masks."""

from runtime import caps
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


def test_unknown_name_is_left_out_and_reported_with_its_item():
    # runc 1.1.5 and crun 1.8.1 ignore it with a warning; the warning names the item
    unknown = []
    mask = caps.to_mask(["CAP_CHOWN", "CAP_TELEPORT"], "process.capabilities.bounding",
                        last=40, unknown=unknown)
    assert mask == 1
    assert unknown == [("process.capabilities.bounding[1]", "CAP_TELEPORT")]


def test_unknown_names_in_a_spec_warn_once_each_at_create_and_exec(monkeypatch):
    from runtime import log
    from runtime import spec as S
    from runtime.specgen import default_config
    warnings = []
    monkeypatch.setattr(log, "sink", lambda level, msg: warnings.append(msg))
    c = default_config(["true"])
    c["process"]["capabilities"] = {"bounding": ["CAP_KILL", "CAP_TEST"],
                                    "effective": ["CAP_TEST", "CAP_KILL"]}
    spec = S.parse(c)
    assert spec.process.capabilities.bounding == spec.process.capabilities.effective == 1 << 5
    assert warnings == []  # parsing (start, state, ...) says nothing
    S.check_process_supported(spec.process)
    assert warnings == [
        "process.capabilities.bounding[1]: ignoring unknown capability 'CAP_TEST' (as runc and "
        "crun do)",
        "process.capabilities.effective[0]: ignoring unknown capability 'CAP_TEST' (as runc "
        "and crun do)"]


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
