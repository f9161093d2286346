"""The errors resnet_tf raises for a mistake in what the user gave.

A `UserError` is about an argument, a config value, a path or a file the user named: its message
is one sentence that names what was wrong and the value, and `resnet-tf` prints just that (exit
status 2). Every other exception is a bug (in resnet_tf, Keras, TensorFlow or a runtime) and the
command keeps its traceback. `UserError` is a `ValueError`, so code that catches `ValueError`
from the Python API keeps working.

Standard library only.
"""

from __future__ import annotations

import importlib


class UserError(ValueError):
    """A mistake in an argument, a config, a path or a file: the message says which."""


class MissingPathError(UserError, FileNotFoundError):
    """A path the user named does not exist (or is not the kind of file it should be)."""


class PathExistsError(UserError, FileExistsError):
    """A path the user named exists and would be overwritten."""


class MissingRuntime(UserError, ImportError):
    """A runtime or converter of the `deploy` extra is not installed."""


DEPLOY_EXTRA = "pip install 'resnet_tf[deploy]'"


def require(module: str, what: str):
    """Imports `module` or raises `MissingRuntime`, one sentence naming the `deploy` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingRuntime(f"{what} is not installed ({error.name or module} is missing); "
                             f"install the deployment runtimes with: {DEPLOY_EXTRA}") from None


def one_line(error: BaseException) -> str:
    """An exception's whole message on one line (its type's name when it has none): what a
    sentence quotes of a library's error, never cut."""
    return " ".join(str(error).split()) or type(error).__name__


def torn_file(what: str, kind: str, error: BaseException) -> UserError:
    """The sentence for a weight file that cannot be read whole (`what` names it)."""
    return UserError(f"weights {what} is not a complete {kind} file ({one_line(error)}); a "
                     "download cut short or a damaged file: fetch it again")
