"""runtime.seccomp.cache: a profile is compiled once, then read back; nothing untrusted is used."""

import os

import pytest

from runtime import seccomp
from runtime.seccomp import cache

RAW = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
       "architectures": ["SCMP_ARCH_X86_64"],
       "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]}


def profile(**changes):
    return seccomp.parse({**RAW, **changes})


@pytest.fixture
def compiles(monkeypatch):
    """Counts the real compiles."""
    calls = []
    real = cache.compile

    def counting(p):
        calls.append(p)
        return real(p)
    monkeypatch.setattr(cache, "compile", counting)
    return calls


def entries(d) -> list[str]:
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_a_profile_is_compiled_once_then_read_back(tmp_path, compiles):
    d = str(tmp_path / "cache")
    first = cache.compile_cached(profile(), d)
    assert first == seccomp.compile(profile())
    assert entries(d) == [cache.key(profile()) + ".bpf"]
    assert oct(os.stat(d).st_mode & 0o777) == "0o700"
    assert cache.compile_cached(profile(), d) == first
    assert len(compiles) == 1


def test_no_cache_dir_is_a_plain_compile(compiles):
    assert cache.compile_cached(profile(), None) == seccomp.compile(profile())
    assert len(compiles) == 1


def test_the_key_is_everything_the_filter_depends_on(monkeypatch):
    base = cache.key(profile())
    assert cache.key(profile()) == base
    assert cache.key(profile(defaultErrnoRet=13)) != base
    assert cache.key(profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])) != base
    monkeypatch.setattr(cache, "_library_id", "2.5.4 /usr/lib/libseccomp.so.2 8 9 10 11")
    assert cache.key(profile()) != base  # another libseccomp file, same version or not
    monkeypatch.undo()
    monkeypatch.setattr(cache, "_source_digest", "another compiler")
    assert cache.key(profile()) != base


def test_the_library_is_the_file_this_process_mapped():
    lib = cache._library()
    version, path, dev, ino, size, mtime = lib.split()
    assert version == seccomp.version() and "libseccomp" in path
    st = os.stat(path)
    assert (int(dev), int(ino), int(size), int(mtime)) == (st.st_dev, st.st_ino, st.st_size,
                                                            st.st_mtime_ns)


def test_a_mapped_file_is_named_only_while_it_is_the_file_mapped(tmp_path):
    lib = tmp_path / "libseccomp.so.2.5.4"
    lib.write_bytes(b"x")
    ino = os.stat(lib).st_ino
    line = "7f00-7f10 r-xp 00000000 fe:00 {ino} {path}\n"
    maps = "55aa-55bb r--p 0 fe:00 1 /usr/bin/python3.11\n" + line.format(ino=ino, path=lib)
    got = cache.mapped_file(maps, "/libseccomp")
    assert got.split()[0] == str(lib) and got.split()[2] == str(ino)
    assert cache.mapped_file(maps, "/libnothing") is None
    deleted = line.format(ino=ino, path=f"{lib} (deleted)")
    assert cache.mapped_file(deleted, "/libseccomp") is None
    replaced = line.format(ino=ino + 1, path=lib)  # the update renamed a new file over it
    assert cache.mapped_file(replaced, "/libseccomp") is None


def test_a_library_replaced_since_it_was_loaded_means_no_cache(tmp_path, compiles, monkeypatch):
    """A long-lived process (the shim) that loaded libseccomp before an update: its filters
    are the old library's, which the new file's identity would not describe."""
    monkeypatch.setattr(cache, "_library_id", "")  # looked for, not found as mapped
    d = str(tmp_path / "cache")
    for _ in range(2):
        assert cache.compile_cached(profile(), d) == seccomp.compile(profile())
    assert len(compiles) == 2 and entries(d) == []


def _bad_entries(path):
    """Ways an entry can be there and still not be trusted."""
    def truncated():
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 3)

    def empty():
        open(path, "wb").close()

    def too_big():
        with open(path, "wb") as f:
            f.write(b"\0" * 8 * (seccomp.bpf.MAX_INSNS + 1))

    def a_link():
        other = path + ".elsewhere"
        os.rename(path, other)
        os.symlink(other, path)

    def a_directory():
        os.unlink(path)
        os.mkdir(path)

    def not_ours():
        os.chown(path, 65534, 65534)
    return [truncated, empty, too_big, a_link, a_directory] + ([not_ours] if os.geteuid() == 0
                                                               else [])


@pytest.mark.parametrize("spoil", range(6))
def test_an_entry_it_cannot_trust_is_compiled_again(tmp_path, compiles, spoil):
    d = str(tmp_path / "cache")
    good = cache.compile_cached(profile(), d)
    path = os.path.join(d, cache.key(profile()) + ".bpf")
    bad = _bad_entries(path)
    if spoil >= len(bad):
        pytest.skip("needs root")
    bad[spoil]()
    assert cache.compile_cached(profile(), d) == good
    assert len(compiles) == 2
    if os.path.isfile(path) and not os.path.islink(path):  # replaced by a good one
        with open(path, "rb") as f:
            assert f.read() == good


def test_a_cache_that_cannot_be_written_costs_only_the_compile(tmp_path, compiles):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert cache.compile_cached(profile(), str(blocked)) == seccomp.compile(profile())
    assert cache.compile_cached(profile(), str(blocked / "below")) == seccomp.compile(profile())
    assert len(compiles) == 2
    assert blocked.read_text() == ""


def test_the_least_recently_used_go_beyond_max_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MAX_ENTRIES", 2)
    d = str(tmp_path / "cache")
    names = {}
    for n, errno_ret in enumerate((1, 2, 3)):
        p = profile(defaultErrnoRet=errno_ret)
        cache.compile_cached(p, d)
        names[errno_ret] = cache.key(p) + ".bpf"
        os.utime(os.path.join(d, names[errno_ret]), ns=(n * 10**9, n * 10**9))
        if errno_ret == 2:
            cache.compile_cached(profile(defaultErrnoRet=1), d)  # a hit: 1 is used again
    assert entries(d) == sorted([names[1], names[3]])


def test_the_engine_keeps_its_filters_in_its_root(tmp_path):
    from runtime import container, spec
    root = tmp_path / "root"
    config = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
              "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
              "linux": {"seccomp": RAW}}
    got = container.seccomp_filter(spec.parse(config), str(root / "c1"))
    assert got.program == seccomp.compile(profile())
    assert entries(root / ".seccomp-cache") == [cache.key(profile()) + ".bpf"]
    assert container.Engine(str(root)).list() == []  # not a container
