"""runtime/__init__.py's _PycFinder: the package's modules load from their valid pyc files
without importlib's path machinery, and everything else still goes through importlib."""

import importlib.util
import os
import py_compile
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python(code: str, path: str, *flags: str) -> str:
    """Run code in a fresh `python -IS` whose sys.path starts with path; its stdout."""
    prog = f"import sys\nsys.path[:0] = [{path!r}]\n" + textwrap.dedent(code)
    r = subprocess.run([sys.executable, "-IS", *flags, "-c", prog], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


LOADER = """
import importlib, sys
m = importlib.import_module(sys.argv[1] if len(sys.argv) > 1 else {name!r})
print(type(m.__spec__.loader).__name__, m.VALUE)
"""


@pytest.fixture
def pkg(tmp_path):
    """A package named runtime (this repo's __init__.py) with a module and a subpackage."""
    root = tmp_path / "runtime"
    (root / "sub").mkdir(parents=True)
    shutil.copy(os.path.join(REPO, "runtime", "__init__.py"), root / "__init__.py")
    (root / "mod.py").write_text("VALUE = 'one'\n")
    (root / "sub" / "__init__.py").write_text("VALUE = 'sub'\n")
    (root / "sub" / "leaf.py").write_text("VALUE = 'leaf'\n")
    return tmp_path


def load(pkg, name: str, *flags: str) -> list[str]:
    return python(LOADER.format(name=name), str(pkg), *flags).split()


def test_the_engines_modules_load_through_the_finder_as_importlib_would_describe_them():
    names = ["runtime.cli", "runtime.cgroups.plan", "runtime.sys.linux", "runtime.spec"]
    python(f"import importlib\nfor n in {names!r}: importlib.import_module(n)", REPO)  # pycs
    out = python(f"""
        import importlib, importlib.util, inspect
        for n in {names!r} + ["runtime.sys"]:
            m = importlib.import_module(n)
            s = m.__spec__
            assert m.__file__ == s.origin and s.has_location, n
            assert m.__cached__ == s.cached == importlib.util.cache_from_source(m.__file__), n
            assert m.__loader__ is s.loader and m.__loader__.get_filename(n) == m.__file__, n
            assert inspect.getsource(m) == open(m.__file__).read(), n
            print(n, type(s.loader).__name__)
        """, REPO)
    assert out.split("\n")[:-1] == [f"{n} _Loader" for n in names] + \
        ["runtime.sys SourceFileLoader"]  # a package is importlib's


def test_a_module_loads_from_its_pyc_once_importlib_wrote_it(pkg):
    assert load(pkg, "runtime.mod") == ["SourceFileLoader", "one"]  # no pyc yet: compiled
    assert os.path.exists(importlib.util.cache_from_source(str(pkg / "runtime" / "mod.py")))
    assert load(pkg, "runtime.mod") == ["_Loader", "one"]
    load(pkg, "runtime.sub.leaf")
    assert load(pkg, "runtime.sub.leaf") == ["_Loader", "leaf"]
    assert load(pkg, "runtime.sub") == ["SourceFileLoader", "sub"]


@pytest.mark.parametrize("change", ["size", "mtime"])
def test_a_stale_pyc_is_importlibs_to_recompile(pkg, change):
    src = pkg / "runtime" / "mod.py"
    load(pkg, "runtime.mod")
    st = os.stat(src)
    if change == "size":
        src.write_text("VALUE = 'two-longer'\n")
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same mtime
        expect = "two-longer"
    else:
        src.write_text("VALUE = 'two'\n")  # the same size
        os.utime(src, (st.st_atime, st.st_mtime + 5))
        expect = "two"
    assert load(pkg, "runtime.mod") == ["SourceFileLoader", expect]
    assert load(pkg, "runtime.mod") == ["_Loader", expect]  # importlib rewrote the pyc


def test_a_pyc_whose_code_does_not_unmarshal_is_declined(pkg):
    # (importlib then fails on it as it would without the finder: a bad pyc is no stale one)
    load(pkg, "runtime.mod")
    pyc = importlib.util.cache_from_source(str(pkg / "runtime" / "mod.py"))
    with open(pyc, "rb") as f:
        data = f.read()
    for bad in (data[:16] + b"\xff\x00garbage", data[:20], data[:16]):
        with open(pyc, "wb") as f:
            f.write(bad)  # a valid header over a bad or truncated marshal
        out = python("""
            import sys, runtime
            finder = next(f for f in sys.meta_path if f.__name__ == "_PycFinder")
            print(finder.find_spec("runtime.mod", runtime.__path__))
            """, str(pkg))
        assert out.split() == ["None"], bad
    with open(pyc, "wb") as f:
        f.write(data)
    assert load(pkg, "runtime.mod") == ["_Loader", "one"]


def test_a_hash_based_pyc_is_importlibs(pkg):
    src = str(pkg / "runtime" / "mod.py")
    py_compile.compile(src, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    with open(src, "w") as f:
        f.write("VALUE = 'new'\n")  # only the hash can tell
    assert load(pkg, "runtime.mod") == ["SourceFileLoader", "new"]


def test_optimised_runs_are_left_to_importlib(pkg):
    load(pkg, "runtime.mod")
    assert load(pkg, "runtime.mod", "-O") == ["SourceFileLoader", "one"]


def test_a_search_path_other_than_the_packages_is_declined(pkg):
    out = python("""
        import sys, runtime
        finder = next(f for f in sys.meta_path if f.__name__ == "_PycFinder")
        print(finder.find_spec("runtime.mod", ["/elsewhere"]),
              finder.find_spec("runtime.mod", None),
              finder.find_spec("other.mod", runtime.__path__),
              finder.find_spec("runtime.missing", runtime.__path__))
        """, str(pkg))
    assert out.split() == ["None"] * 4


def test_a_failing_module_shows_its_source_line_in_the_traceback(pkg):
    (pkg / "runtime" / "bad.py").write_text("def f():\n    raise ValueError('boom')\n")
    load_bad = "import runtime.bad\ntry:\n    runtime.bad.f()\nexcept ValueError:\n" \
               "    import traceback; traceback.print_exc(file=sys.stdout)\n" \
               "print(type(runtime.bad.__spec__.loader).__name__)\n"
    python(load_bad, str(pkg))
    out = python(load_bad, str(pkg))
    assert "raise ValueError('boom')" in out and f'"{pkg}/runtime/bad.py", line 2' in out
    assert out.split()[-1] == "_Loader"


def test_no_module_of_the_engine_is_shadowed_by_a_package_of_its_name():
    # importlib would take the package runtime/X/ over runtime/X.py; the finder takes X.py.
    for folder, dirs, files in os.walk(os.path.join(REPO, "runtime")):
        for d in dirs:
            assert f"{d}.py" not in files, os.path.join(folder, d)
