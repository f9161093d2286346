"""What a run starts from: released weights, a slim checkpoint or another run's model
(`init.json` records the file and its SHA-256, so that a re-run killed before its first
committed epoch starts from the very same file), the normalisation those weights need, and the
quantization-aware form of the model."""

from __future__ import annotations

import dataclasses
import os

from resnet_tf.errors import UserError
from resnet_tf.training.config import TrainConfig, load_recorded_config
from resnet_tf.training.model_dir import ModelDir
from resnet_tf.utils import sha256_of_files


def with_normalization(config: TrainConfig) -> TrainConfig:
    """`config` with the normalization its `weights` need filled in (recorded in the model
    dir's config.yaml, which `evaluate`, `predict` and `export` read)."""
    if config.normalization is None and config.weights:
        from resnet_tf.weights.sources import normalization

        config = dataclasses.replace(config, normalization=normalization(config.model,
                                                                         config.weights))
    elif config.normalization is None and config.init_from:  # as the run it starts from
        source = recorded_config(config.init_from)
        if source is not None and source.normalization is not None:
            config = dataclasses.replace(config, normalization=source.normalization)
    if config.quantization_aware and config.normalization not in (None, "inception"):
        raise UserError(f"quantization-aware training takes inputs scaled to [-1, 1] (its input "
                        f"range is fixed); this run's images are normalised as "
                        f"{config.normalization!r} (its weights' source): fine-tune it in float "
                        "and export it with --precision int8 (post-training) instead")
    return config


def recorded_config(model_dir: str):
    """The config a model dir's run recorded, or None (no run there yet)."""
    run_dir = ModelDir(model_dir)
    return load_recorded_config(run_dir.config) if os.path.isfile(run_dir.config) else None


def initialization(config: TrainConfig, recorded: dict | None = None) -> dict | None:
    """The weights a run starts from, as init.json records them: {"key": "slim_checkpoint" or
    "init_from", "given": the config's value, "path": the file read, "sha256": of its
    contents}; None for a run from random weights.

    `recorded` is what a run killed before its first committed epoch recorded: its re-run
    starts from that same file, and refuses (before anything is written) if the file is gone
    or changed, since `init_from`'s best checkpoint or a slim training dir's latest checkpoint
    may have moved on meanwhile."""
    if not (config.slim_checkpoint or config.init_from or config.weights):
        return None
    if recorded is not None:
        key, path = recorded["key"], recorded["path"]
        where = f"{key}={recorded['given']!r}: this run started from {path}"
        if not all(os.path.isfile(f) for f in _init_files(key, path)):
            raise UserError(f"{where}, which is gone; no epoch was committed yet, so it cannot "
                            "start again from the same weights: put it back, or use a new "
                            "--model-dir")
        if sha256_of_files(_init_files(key, path)) != recorded["sha256"]:
            raise UserError(f"{where}, which has changed since (no epoch was committed yet, "
                            "so it would start from other weights than the first run did); "
                            "use a new --model-dir to start from the file as it is now")
        return recorded
    if config.weights:
        return _weights_initialization(config)
    if config.slim_checkpoint:
        from resnet_tf.slim.checkpoint import resolve_checkpoint_path

        key, given, path = ("slim_checkpoint", config.slim_checkpoint,
                            resolve_checkpoint_path(config.slim_checkpoint))
    else:
        key, given = "init_from", config.init_from
        path = ModelDir(config.init_from).starting_checkpoint()
        # The layout the run it starts from was built in (its own starting weights').
        layout = (ModelDir(config.init_from).read_init() or {}).get("layout", "slim")
        return {"key": key, "given": given, "path": path, "layout": layout,
                "sha256": sha256_of_files(_init_files(key, path))}
    return {"key": key, "given": given, "path": path,
            "sha256": sha256_of_files(_init_files(key, path))}


def _weights_initialization(config: TrainConfig) -> dict:
    """init.json for a run from released `weights`: the file (downloaded once into the cache)
    and the layout it needs; slim's release is its unpacked checkpoint."""
    from resnet_tf.weights import sources

    if config.weights == "imagenet":
        key, path = "slim_checkpoint", sources.download("imagenet", config.model)
        layout = "slim"
    else:
        resolved = sources.resolve_weights(config.model, config.weights, None)
        if resolved.source == "slim":
            raise UserError(f"weights={config.weights!r} is a slim checkpoint: start from it "
                            "with slim_checkpoint (and checkpoint_exclude: [logits] for a new "
                            "head)")
        key, path, layout = "weights", resolved.path, resolved.layout
    return {"key": key, "given": config.weights, "path": path, "layout": layout,
            "sha256": sha256_of_files(_init_files(key, path))}


def _init_files(key: str, path: str) -> list:
    """The files whose contents identify a starting point: a .keras file; a slim checkpoint's
    .index (it holds a CRC32C of every tensor in the data files) or its single file."""
    if key == "slim_checkpoint" and not os.path.isfile(path):
        return [path + ".index"]
    return [path]


def start_from(model, config: TrainConfig, init: dict, again: bool = False) -> None:
    """Loads a run's starting weights (`initialization`): a slim checkpoint, or another model
    dir's model; says which."""
    path = init["path"]
    how = ("no epoch was committed before the run stopped: starting again from the same file, "
           if again else "starting from ")
    print(f"resnet-tf: {how}{path} ({init['key']}, sha256 {init['sha256'][:12]})", flush=True)
    if init["key"] == "slim_checkpoint":
        from resnet_tf.slim.checkpoint import load_slim_checkpoint

        exclude = ["logits"] if config.weights else config.checkpoint_exclude  # a new head
        load_slim_checkpoint(model, path, exclude=exclude,
                             moving_averages=config.checkpoint_moving_averages)
        return
    if init["key"] == "weights":
        from resnet_tf.weights.sources import assign_strictly, resolve_weights

        resolved = resolve_weights(config.model, path, None)
        assign_strictly(model, resolved.arrays, resolved.description, exclude=["logits"])
        return
    from resnet_tf.training.loading import load_keras_file

    source = load_keras_file(path)
    try:
        model.set_weights(source.get_weights())
    except ValueError as error:
        raise UserError(f"init_from={config.init_from!r}: its model does not fit this "
                        f"config's ({str(error).splitlines()[0][:200]})") from None


def init_from_record(config: TrainConfig):
    """The data record of the run `init_from` names (None without one): a run started from it
    must not validate on the images it trained on (`data.make_datasets`)."""
    if not config.init_from:
        return None
    return ModelDir(config.init_from).read_data_record(check_files=False)


def quantization_aware(model, train_data, calibrate: bool, weight_bits: int, batches: int = 8):
    """The quantization-aware form of a run's model (`quantization.quantize_model`); a new run
    sets its activation ranges from its first training batches (a resumed one restores
    them)."""
    from resnet_tf.quantization import qat as quantization

    model = quantization.quantize_model(model, weight_bits=weight_bits)
    if calibrate:
        quantization.calibrate(model, train_data.take(batches))
    return model
