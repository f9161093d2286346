"""What native libraries write to stderr, kept off it while a command runs (unless
`--verbose`): TensorFlow's C++ and absl start-up logging, CUDA probes, LiteRT's delegate notice,
the converters' settings lines. Everything else, a fatal error included, goes through.
Standard library only: the filter is in place before the command imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys

# The chatter (TensorFlow's absl lines ignore TF_CPP_MIN_LOG_LEVEL until absl starts).
NATIVE_CHATTER = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d|E\d{4} .*(?:cuInit|cuda|CUDA)|WARNING: All log messages before absl"
    r"|To enable the following instructions|fully_quantize: )")
NATIVE_NOTICE = re.compile(r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.")  # no \n

# The filter process: reads what native code writes to file descriptor 2 and passes on what
# is not chatter. A process of its own, so that the last words of a crash still get through.
_FILTER = r"""
import re, sys
chatter, notice = re.compile(sys.argv[1]), re.compile(sys.argv[2])
for line in sys.stdin.buffer:
    text = notice.sub("", line.decode("utf-8", "replace"))
    if text.strip() and not chatter.match(text):
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()
"""


@contextlib.contextmanager
def quiet_native_output():
    """While a command runs, what native libraries write to file descriptor 2 goes through a
    filter process that drops their known chatter (`NATIVE_CHATTER`, `NATIVE_NOTICE`) and
    passes the rest; Python's `sys.stderr` (the command's sentences, warnings, tracebacks)
    goes straight to the real stderr. Restored afterwards."""
    import logging

    saved_env = {key: os.environ.get(key) for key in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    loggers = {name: logging.getLogger(name) for name in ("tensorflow", "tf2onnx", "absl",
                                                          "nncf", "openvino")}
    saved_levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    saved_stderr = sys.stderr
    saved_stderr.flush()
    try:
        on_fd2 = saved_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a capturing stream (tests)
        on_fd2 = False
    saved_fd = os.dup(2)
    read_end, write_end = os.pipe()
    chatter_filter = subprocess.Popen(
        [sys.executable, "-c", _FILTER, NATIVE_CHATTER.pattern, NATIVE_NOTICE.pattern],
        stdin=read_end, stdout=subprocess.DEVNULL, stderr=saved_fd)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    if on_fd2:
        sys.stderr = os.fdopen(os.dup(saved_fd), "w", buffering=1,
                               encoding=saved_stderr.encoding, errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        if on_fd2:
            sys.stderr.close()
            sys.stderr = saved_stderr
        os.dup2(saved_fd, 2)  # the pipe's last writer here: the filter sees its end
        os.close(saved_fd)
        try:
            chatter_filter.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a child of the command still holds the pipe
            pass
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for name, logger in loggers.items():
            logger.setLevel(saved_levels[name])
