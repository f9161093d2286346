"""The `resnet-tf` command line: train, export, predict, evaluate, download, bench.

A package beside `resnet_tf`, not in it: `import resnet_tf` imports Keras (to register its
layers), while `resnet-tf --help` should answer at once and TensorFlow's start-up chatter
should meet the filter. So this package is the parser and the dispatch (`parser`) and the
native-output filter (`native_output`), standard library only; each command's work is
`resnet_tf.commands.<command>.run(args)`, imported when it runs.

A user error (`errors.UserError`: a wrong path, a bad value, a refused overwrite) or an
`OSError` (permissions, a full disk) is one sentence on stderr and exit status 2; anything
else is a bug and keeps its traceback. `--debug` shows the traceback of a user error too.
Ctrl-C or SIGTERM during `train` end it with one sentence and the conventional status (130,
143), from the first moment (`interruptible`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from resnet_tf_cli.native_output import (
    NATIVE_CHATTER,
    NATIVE_NOTICE,
    quiet_native_output,
)
from resnet_tf_cli.parser import (
    CHECKPOINTS,
    COMPARE,
    DISTRIBUTE,
    DTYPES,
    FORMATS,
    MODES,
    PRECISIONS,
    WEIGHT_SOURCES,
    build_parser,
)

__all__ = ["main", "run", "build_parser", "quiet_native_output", "NATIVE_CHATTER",
           "NATIVE_NOTICE", "CHECKPOINTS", "COMPARE", "DISTRIBUTE", "DTYPES", "FORMATS", "MODES",
           "PRECISIONS", "WEIGHT_SOURCES"]


def main(argv=None):
    return run(build_parser().parse_args(argv))


def run(args):
    """Runs a parsed command: a user error is one sentence and status 2, a bug a traceback."""
    quiet = not args.verbose and os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") not in ("0", "1")
    try:
        with quiet_native_output() if quiet else contextlib.nullcontext():
            if args.command == "train":
                return interruptible(args)
            return args.handler(args)
    except Exception as error:
        from resnet_tf.errors import UserError

        if not isinstance(error, (UserError, OSError)) or args.debug:
            raise
        print(f"resnet-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


class _Stop(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt."""


def interruptible(args) -> int:
    """Runs `train` so that Ctrl-C or SIGTERM at any moment, while the library still imports
    too, ends it with one sentence and status 128 + the signal's number (130, 143); the run
    itself stops with `TrainingInterrupted`, its model dir consistent."""
    received = {}

    def on_sigterm(number, frame):
        received["signal"] = number
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return args.handler(args)
    except KeyboardInterrupt as interrupted:  # TrainingInterrupted, or before it could begin
        number = received.get("signal", signal.SIGINT)
        why = str(interrupted) or "interrupted before training began; re-run the same command"
        print(f"resnet-tf train: {args.model_dir}: {why}", file=sys.stderr)
        return 128 + number
    finally:
        signal.signal(signal.SIGTERM, previous)
