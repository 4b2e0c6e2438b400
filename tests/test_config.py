"""pyshim's configuration: runtime options (hand-decoded), the config file, grouping policies."""

import pytest
from google.protobuf import any_pb2

from proto.containerd.runc.options import oci_pb2
from proto.runtimeoptions.v1 import api_pb2
from shim import bootstrap, config


def _any(message):
    return any_pb2.Any(type_url=message.DESCRIPTOR.full_name,
                       value=message.SerializeToString()).SerializeToString()


def test_defaults_without_options_or_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("PYSHIM_CONFIG", raising=False)
    cfg = config.load(b"")
    assert (cfg.grouping, cfg.log_level, cfg.source) == ("pod", "info", "defaults")


def test_cri_runtimeoptions_config_body_wins():
    opts = api_pb2.Options(type_url="x", config_path="/nowhere.toml",
                           config_body='grouping = "namespace"\nlog_level = "debug"\n')
    cfg = config.load(_any(opts))
    assert (cfg.grouping, cfg.log_level) == ("namespace", "debug")


def test_cri_runtimeoptions_config_path(tmp_path):
    path = tmp_path / "pyshim.toml"
    path.write_text('grouping = "container"\n')
    cfg = config.load(_any(api_pb2.Options(config_path=str(path))))
    assert (cfg.grouping, cfg.source) == ("container", str(path))


def test_runc_options_are_accepted_and_fall_back_to_the_file(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('grouping = "namespace"\n')
    monkeypatch.setenv("PYSHIM_CONFIG", str(path))
    cfg = config.load(_any(oci_pb2.Options(binary_name="x", io_uid=5)))
    assert cfg.grouping == "namespace"


@pytest.mark.parametrize("text,message", [
    ('grouping = "cluster"', "grouping = 'cluster': must be one of pod, namespace, container"),
    ('colour = "blue"', "unknown key(s): colour"),
    ('grouping = ', "not valid TOML"),
])
def test_bad_config_is_an_error_naming_source_and_key(text, message):
    with pytest.raises(config.ConfigError) as e:
        config.load(_any(api_pb2.Options(config_body=text)))
    assert "runtime options config_body" in str(e.value) and message in str(e.value)


def test_missing_explicit_config_path_is_an_error(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(_any(api_pb2.Options(config_path=str(tmp_path / "nope.toml"))))


def test_garbage_options_are_an_error():
    with pytest.raises(config.ConfigError, match="undecodable"):
        config.load(b"\x0a\xff")


def test_grouping_policies(tmp_path):
    (tmp_path / "config.json").write_text('{"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}')
    b = str(tmp_path)
    assert bootstrap.group_id(b, "c1", "pod") == "pod1"
    assert bootstrap.group_id(b, "c1", "container") == "c1"
    assert bootstrap.group_id(b, "c1", "namespace") == bootstrap.group_id(b, "c2", "namespace")
    a = bootstrap.socket_address("/run/c.sock", "ns1", bootstrap.group_id(b, "c1", "namespace"))
    other_ns = bootstrap.socket_address("/run/c.sock", "ns2", bootstrap.group_id(b, "c1", "namespace"))
    assert a != other_ns  # one shim per namespace, not per machine


# --- per container: no_pivot_root, no_new_keyring -----------------------------------------------
def test_the_container_keys_parse_as_booleans():
    cfg = config.parse("no_pivot_root = true\nno_new_keyring = true\n", "t")
    assert (cfg.no_pivot_root, cfg.no_new_keyring) == (True, True)
    assert (config.Config().no_pivot_root, config.Config().no_new_keyring) == (False, False)
    with pytest.raises(config.ConfigError, match="t: no_pivot_root = 'yes': must be true or false"):
        config.parse('no_pivot_root = "yes"', "t")


def test_container_options_from_the_runc_shims_option_types():
    runc = oci_pb2.Options(no_pivot_root=True, binary_name="x").SerializeToString()
    assert config.container_options("containerd.runc.v1.Options", runc) == (True, False)
    runc = oci_pb2.Options(no_new_keyring=True).SerializeToString()
    assert config.container_options("containerd.runc.v1.Options", runc) == (False, True)
    # what `ctr run --no-pivot` sends to a runtime that is not runc's: the old linux runtime's
    # CreateOptions, no_pivot_root = 1 and no_new_keyring = 8
    assert config.container_options("containerd.linux.runc.CreateOptions",
                                    b"\x08\x01\x40\x01") == (True, True)
    with pytest.raises(config.ConfigError, match="undecodable"):
        config.container_options("containerd.runc.v1.Options", b"\x08")


def test_container_options_from_runtimeoptions_or_the_config_file(tmp_path, monkeypatch):
    body = _any(api_pb2.Options(config_body="no_new_keyring = true\n"))
    any_type, any_value = _split_any(body)
    assert config.container_options(any_type, any_value) == (False, True)
    monkeypatch.setenv("PYSHIM_CONFIG", str(tmp_path / "c.toml"))
    (tmp_path / "c.toml").write_text("no_pivot_root = true\n")
    assert config.container_options("", b"") == (True, False)  # no options: the file


def _split_any(data: bytes) -> tuple[str, bytes]:
    from proto import wkt_lite
    a = wkt_lite.Any.FromString(data)
    return a.type_url, a.value
