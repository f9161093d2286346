"""Loading TF-slim checkpoints into resnet_tf models (TensorFlow only).

slim's released ResNet checkpoints (e.g. `resnet_v2_50_2017_04_14/resnet_v2_50.ckpt`) are
TF1 name-based checkpoints; `tf.train.load_checkpoint` reads them without tf_slim. The model
modules never import this one, so they stay backend-neutral.
"""

from __future__ import annotations

import os

import numpy as np

from resnet_tf.slim_variables import slim_variables

# Checkpoint entries that are not model variables and may always be left unused.
NON_MODEL_VARIABLES = ("global_step",)


class UnreadableCheckpoint(ValueError):
    """The checkpoint's files cannot be read (truncated, corrupt, not a checkpoint)."""


def resolve_checkpoint_path(path) -> str:
    """The checkpoint prefix for `path` (a prefix, a `.index` file, or a directory)."""
    import tensorflow as tf

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a string or os.PathLike. Received: path={path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:  # no `checkpoint` state file: the one checkpoint in it (a release)
            from resnet_tf.weights import find_checkpoint

            try:
                latest = find_checkpoint(path, "", path)
            except ValueError as error:
                raise FileNotFoundError(f"No single checkpoint in directory {path!r}: "
                                        f"{error}") from None
        return latest
    if path.endswith(".index"):
        path = path[: -len(".index")]
    if not (os.path.exists(path + ".index") or os.path.isfile(path)):
        raise FileNotFoundError(f"No slim checkpoint at path={path!r} (expected {path}.index)")
    return path


def read_checkpoint_shapes(path):
    """(reader, {name: shape}) of a checkpoint; `UnreadableCheckpoint` if it cannot be read."""
    import tensorflow as tf

    prefix = resolve_checkpoint_path(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = {n: tuple(s) for n, s in reader.get_variable_to_shape_map().items()}
    except (tf.errors.OpError, ValueError, IndexError, OSError) as error:  # a torn file
        raise UnreadableCheckpoint(_unreadable(prefix, error)) from None
    return reader, shapes


def _unreadable(prefix, error) -> str:
    reason = str(getattr(error, "message", error)).strip().splitlines()[0][:200]
    return (f"The slim checkpoint {prefix!r} cannot be read ({reason}); it may be truncated or "
            "not a checkpoint: download or copy it again. No weight was changed.")


def _describe(names, limit=10):
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_slim_checkpoint(model, path, scope: str | None = None, exclude=()) -> list[str]:
    """Loads a TF-slim checkpoint into `model`, strictly and atomically.

    Every slim variable of the model must be in the checkpoint with the same shape, and every
    model variable of the checkpoint must be used (except `global_step`): otherwise a
    `ValueError` names each missing, unused and misshapen variable, and no weight is changed.

    Args:
      model: a built resnet_tf model (e.g. `resnet_v2_50(num_classes=1001)`).
      path: the checkpoint prefix (`.../resnet_v2_50.ckpt`), its `.index` file or a directory.
      scope: the slim scope of the checkpoint's variables; default `model.name`.
      exclude: slim scopes, relative to `scope`, to skip on both sides (e.g. `["logits"]` to
        fine-tune with a new head).

    Returns:
      The slim names of the variables loaded.
    """
    import tensorflow as tf

    prefix = resolve_checkpoint_path(path)
    scope = model.name if scope is None else scope
    if isinstance(exclude, str):
        exclude = [exclude]
    skipped = tuple(f"{scope}/{e.strip('/')}/" for e in exclude)

    def kept(name):
        return not name.startswith(skipped)

    targets = {n: v for n, v in slim_variables(model, scope).items() if kept(n)}
    reader, shapes = read_checkpoint_shapes(prefix)
    shapes = {n: s for n, s in shapes.items() if kept(n) and n not in NON_MODEL_VARIABLES}

    missing = set(targets) - set(shapes)
    unused = set(shapes) - set(targets)
    misshapen = [
        f"{n} (checkpoint {shapes[n]}, model {tuple(targets[n].shape)})"
        for n in sorted(set(targets) & set(shapes))
        if shapes[n] != tuple(targets[n].shape)
    ]
    if missing or unused or misshapen:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing from the checkpoint: {_describe(missing)}")
        if unused:
            problems.append(f"{len(unused)} in the checkpoint but not in the model: "
                            f"{_describe(unused)}")
        if misshapen:
            problems.append(f"{len(misshapen)} with a different shape: {_describe(misshapen)}")
        hint = ""
        if missing and not any(n.startswith(scope + "/") for n in shapes):
            tops = sorted({n.split("/")[0] for n in shapes})
            hint = f" No checkpoint variable is under scope {scope!r}; its scopes are {tops}."
        raise ValueError(f"Checkpoint {prefix!r} does not match model {model.name!r}: "
                         + "; ".join(problems) + ". No weight was changed." + hint)

    # Read everything before assigning anything, so a failure leaves the model untouched.
    try:
        values = {n: np.asarray(reader.get_tensor(n)) for n in targets}
    except (tf.errors.OpError, ValueError, IndexError, OSError) as error:  # a torn file
        raise UnreadableCheckpoint(_unreadable(prefix, error)) from None
    for name, variable in targets.items():
        variable.assign(values[name].astype(variable.dtype))
    return sorted(targets)
