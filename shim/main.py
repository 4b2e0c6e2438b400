"""Entry point of `containerd-shim-pyshim-v2`. Standard library only (see bootstrap)."""

import sys

from shim import bootstrap


def main(argv: list[str] | None = None) -> int:
    """The binary; argv None means the real process, which exits here without the
    interpreter's teardown (~2 ms of every `start`, on each new shim's critical path)."""
    rc = _main(argv)
    if argv is None:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except (OSError, ValueError):
                rc = rc or 1
        import os
        os._exit(rc)
    return rc


def _main(argv: list[str] | None) -> int:
    try:
        flags = bootstrap.parse_flags(sys.argv[1:] if argv is None else argv)
    except bootstrap.UsageError as e:
        print(f"containerd-shim-pyshim-v2: {e}", file=sys.stderr)
        return 2
    if flags.action == "version":
        print(f"containerd-shim-pyshim-v2 {bootstrap.VERSION}")
        return 0
    if flags.action == "start":
        return bootstrap.start(flags)
    if flags.action == "delete":
        return bootstrap.delete(flags)
    print(f"containerd-shim-pyshim-v2: unknown action {flags.action!r} (want start or delete)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
