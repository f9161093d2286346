"""What every runtime's runner is: `runner(pixels) -> probabilities`, and how a runtime that
cannot load a file says so. The runners themselves are the formats' (`export.formats`) and
Keras' (`export.runtimes`). Imports no runtime, no Keras, no TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import typing

import numpy as np

from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.errors import UserError


def default_threads() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Runner:
    """`runner(pixels)` -> probabilities float32 [N, C]; `pixels` float32 [N, S, S, 3], 0..255,
    prepared as `prep` says (`preprocessing.prepare_pixels`). A runner that `takes_any_size`
    (a SavedModel export) takes decoded images of any size and prepares them itself."""

    runtime: str
    precision: str
    predict: typing.Callable
    prep: EvalPreprocessing | None = None
    takes_any_size: bool = False

    def __call__(self, pixels) -> np.ndarray:
        return np.asarray(self.predict(np.ascontiguousarray(pixels, np.float32)), np.float32)

    def __repr__(self):
        return f"Runner({self.runtime}:{self.precision})"


@contextlib.contextmanager
def loading(path: str, runtime: str):
    """A file the runtime cannot load is a sentence naming it (a damaged or foreign export)."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001  (each runtime raises its own types)
        raise UserError(f"{path!r} cannot be loaded by {runtime} ({type(error).__name__}: "
                        f"{reason(str(error))}); the export may be damaged: export it "
                        "again") from None


def reason(message: str) -> str:
    """The line of a runtime's error that says what is wrong: OpenVINO's first lines only
    name the C++ source that threw ("Exception from src/...cpp:132:")."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    telling = [line for line in lines if not re.match(r"^(Exception from|Check .* failed at) "
                                                      r"\S+:\d+:?$", line)]
    return ((telling or lines or [""])[0])[:200]
