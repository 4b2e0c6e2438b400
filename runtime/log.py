"""The engine's warnings: what is worth telling but is not an error (a failed poststart or
poststop hook).

By default a warning is a record of the `logging` logger the caller names (runtime.hooks...),
so a program configuring logging (the shim) gets it as usual. A program that writes its own log
lines sets `sink` instead (pyshim-runc: runc's warning lines); `logging` is then never
imported, which saves ~10 ms of start-up on every command.
"""

sink = None  # callable(level: str, message: str), or None: the logging module


def warning(logger: str, message: str) -> None:
    if sink is not None:
        sink("warning", message)
        return
    import logging
    logging.getLogger(logger).warning("%s", message)
