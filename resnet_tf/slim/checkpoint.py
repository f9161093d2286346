"""Loading TF-slim checkpoints into resnet_tf models (TensorFlow only, imported when called).

slim's released ResNet checkpoints (e.g. `resnet_v2_50_2017_04_14/resnet_v2_50.ckpt`) and the
checkpoints slim's `train_image_classifier.py` writes are TF1 name-based checkpoints;
`tf.train.load_checkpoint` reads them without tf_slim. A training checkpoint holds more than
the model: the optimizer's slots (`<variable>/Momentum`, `/RMSProp`, `/Adam`, ...), its
counters (`global_step`, Adam's `beta1_power`) and, with `--moving_average_decay`, the
`<variable>/ExponentialMovingAverage` shadows. Those are training state: they are left out by
rule, and said so once; the shadows can be loaded instead of the variables
(`moving_averages=True`, as slim's `eval_image_classifier.py --moving_average_decay` does).

The model modules never import this one, so they stay backend-neutral.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np

from resnet_tf.errors import MissingPathError, UserError
from resnet_tf.slim.variables import slim_variables

# Checkpoint entries that are training state, not model variables.
TRAINING_COUNTERS = ("global_step", "beta1_power", "beta2_power")
OPTIMIZER_SLOT = re.compile(r"/(Momentum|RMSProp|Adam|Adagrad|AdagradDA|Adadelta|Ftrl|"
                            r"ProximalAdagrad|LARSOptimizer)(_\d+)?$")
MOVING_AVERAGE = "/ExponentialMovingAverage"
_CHECKPOINT_SUFFIX = re.compile(r"\.(index|meta|data-\d+-of-\d+)$")


class UnreadableCheckpoint(UserError):
    """The checkpoint's files cannot be read (truncated, corrupt, not a checkpoint)."""


def find_checkpoint(directory: str, checkpoint_name: str, source: str) -> str:
    """The checkpoint in a directory (an unpacked release): `checkpoint_name` if present, else
    the only one (a single-file `.ckpt`, or the prefix of `.index` + `.data` files)."""
    found = []
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            if name.endswith(".index"):
                found.append(os.path.join(root, name[: -len(".index")]))
            elif name.endswith(".ckpt"):
                found.append(os.path.join(root, name))
    preferred = [p for p in found if os.path.basename(p) == checkpoint_name]
    if preferred or len(found) == 1:
        return (preferred or found)[0]
    raise UserError(f"{source} holds {'no' if not found else 'several'} checkpoints "
                    f"({', '.join(os.path.basename(p) for p in found) or 'none'}); expected "
                    f"{checkpoint_name}")


def resolve_checkpoint_path(path) -> str:
    """The checkpoint prefix for `path`: a prefix, any of its files (`.index`, `.meta`,
    `.data-00000-of-00001`), a single-file checkpoint, or a directory holding one."""
    import tensorflow as tf

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a string or os.PathLike. Received: path={path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:  # no `checkpoint` state file: the one checkpoint in it (a release)
            try:
                latest = find_checkpoint(path, "", path)
            except UserError as error:
                raise MissingPathError(f"No single checkpoint in directory {path!r}: "
                                       f"{error}") from None
        return latest
    prefix = _CHECKPOINT_SUFFIX.sub("", path)
    if os.path.exists(prefix + ".index"):
        return prefix
    if os.path.isfile(path):
        return path  # a single-file (V1) checkpoint
    raise MissingPathError(f"No slim checkpoint at path={path!r} (expected {prefix}.index)")


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


def training_state(names) -> dict:
    """{"slots": [...], "counters": [...], "moving_averages": [...]}: the entries of a slim
    training checkpoint that are not model variables."""
    state = {"slots": [], "counters": [], "moving_averages": []}
    for name in names:
        if name.endswith(MOVING_AVERAGE):
            state["moving_averages"].append(name)
        elif OPTIMIZER_SLOT.search(name):
            state["slots"].append(name)
        elif name.split("/")[-1] in TRAINING_COUNTERS:
            state["counters"].append(name)
    return state


def load_slim_checkpoint(model, path, scope: str | None = None, exclude=(),
                         moving_averages: bool = False) -> list[str]:
    """Loads a TF-slim checkpoint into `model`, strictly and atomically.

    Every slim variable of the model must be in the checkpoint with the same shape, and every
    model variable of the checkpoint must be used: otherwise a `UserError` names each
    missing, unused and misshapen variable, and no weight is changed. Training state (optimizer
    slots, `global_step`, moving-average shadows) is left out and reported once on stderr.

    Args:
      model: a built resnet_tf model (e.g. `resnet_v2_50(num_classes=1001)`).
      path: the checkpoint prefix (`.../resnet_v2_50.ckpt`), any of its files or a directory.
      scope: the slim scope of the checkpoint's variables; default `model.name`.
      exclude: slim scopes, relative to `scope`, to skip on both sides (e.g. `["logits"]` to
        fine-tune with a new head).
      moving_averages: load each variable's `ExponentialMovingAverage` shadow where the
        checkpoint has one (slim's evaluation with `--moving_average_decay`).

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
    state = training_state(shapes)
    left_out = {n for names in state.values() for n in names}
    shapes = {n: s for n, s in shapes.items() if kept(n) and n not in left_out}
    sources = {n: n for n in targets}
    if moving_averages:
        if not state["moving_averages"]:
            raise UserError(f"The checkpoint {prefix!r} has no ExponentialMovingAverage "
                            "shadows to load (moving_averages=True)")
        sources = {n: n + MOVING_AVERAGE if n + MOVING_AVERAGE in left_out else n
                   for n in targets}

    _check_match(targets, shapes, prefix, scope, model.name)

    # Read everything before assigning anything, so a failure leaves the model untouched.
    try:
        values = {n: np.asarray(reader.get_tensor(sources[n])) for n in targets}
    except (tf.errors.OpError, ValueError, IndexError, OSError) as error:  # a torn file
        raise UnreadableCheckpoint(_unreadable(prefix, error)) from None
    for name, variable in targets.items():
        variable.assign(values[name].astype(variable.dtype))
    _report_training_state(prefix, state, moving_averages)
    return sorted(targets)


def _check_match(targets, shapes, prefix, scope, model_name) -> None:
    """Every target variable in the checkpoint with its shape, and every checkpoint variable
    used: else a `UserError` naming each missing, unused and misshapen one."""
    missing = set(targets) - set(shapes)
    unused = set(shapes) - set(targets)
    misshapen = [
        f"{n} (checkpoint {shapes[n]}, model {tuple(targets[n].shape)})"
        for n in sorted(set(targets) & set(shapes))
        if shapes[n] != tuple(targets[n].shape)
    ]
    if not (missing or unused or misshapen):
        return
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
    raise UserError(f"Checkpoint {prefix!r} does not match model {model_name!r}: "
                    + "; ".join(problems) + ". No weight was changed." + hint)


def _report_training_state(prefix, state, moving_averages) -> None:
    parts = []
    if state["slots"]:
        kinds = sorted({m.group(1) for m in map(OPTIMIZER_SLOT.search, state["slots"]) if m})
        parts.append(f"{len(state['slots'])} optimizer slots ({', '.join(kinds) or 'shadow'})")
    if state["counters"]:
        parts.append(", ".join(sorted(state["counters"])))
    if state["moving_averages"] and not moving_averages:
        parts.append(f"{len(state['moving_averages'])} ExponentialMovingAverage shadows (load "
                     "them instead with moving_averages=True / --moving-averages)")
    if parts:
        print(f"resnet-tf: {prefix}: training state left out: {'; '.join(parts)}",
              file=sys.stderr)
