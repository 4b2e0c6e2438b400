"""Entry point of `containerd-shim-pyshim-v2`. Standard library only (see bootstrap)."""

import sys

from shim import bootstrap


def main(argv: list[str] | None = None) -> int:
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
