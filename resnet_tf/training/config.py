"""Training configs: flat YAML files whose keys override `TrainConfig`'s defaults.

`configs/default.yaml` lists every key with its default value (a test keeps it equal to this
schema); a config file names only what it changes. Unknown keys, wrong types and values that
would silently train something else (a learning rate that rises, a validation split that a
dataset ignores) are errors that name the key, the value and the file.

Paths in a config file (`train_data`, `val_data`, `class_names`, `slim_checkpoint`,
`init_from`) are relative to the file's own directory, as in most tools; a shipped config
(`--config quickstart`) has no directory of its own, so its paths are relative to the current
one, also when named by its path, e.g. `configs/finetune_folder.yaml`). `load_config` makes
them absolute, and that is how a run records them: the run resumes, evaluates and exports from
any directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing

import yaml

from resnet_tf.data.pixels import PREPROCESSINGS, EvalPreprocessing
from resnet_tf.errors import MissingPathError, UserError
from resnet_tf.models.quantizers import WEIGHT_BITS
from resnet_tf.models.registry import MODEL_NAMES, model_arguments
from resnet_tf.utils import write_text

# The Keras dtype policies a run trains under (`dtype`, `--dtype`).
DTYPES = ("float32", "mixed_bfloat16", "mixed_float16")
# How `resnet-tf train` spreads a run over devices (`--distribute`).
DISTRIBUTE = ("none", "mirrored", "multiworker")
DATASETS = ("digits", "cifar10", "folder", "tfrecord")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential", "piecewise", "bit_hyperrule")
PREPROCESSING = ("inception", "cifar")
NORMALIZATIONS = PREPROCESSINGS  # pixels' methods: inception, vgg, torchvision, caffe
# The config keys each builder takes (the others must stay at their defaults for that model),
# read from the builders' signatures: set after TrainConfig below.
MODEL_ARGUMENTS: dict = {}


@dataclasses.dataclass
class TrainConfig:
    # Model: a registry name (`resnet-tf train --help` lists them), or "resnet_v2_stack" for a
    # custom stack of slim bottleneck blocks given by `units`, `base_depth` and `block_strides`.
    model: str = "resnet_v2_50"
    units: typing.Optional[list] = None
    base_depth: int = 64
    block_strides: typing.Optional[list] = None
    include_root_block: bool = True
    num_classes: typing.Optional[int] = None  # None: the dataset's number of classes
    # CIFAR builders only (null: the builder's default): see resnet_tf/models/cifar.py.
    depth: typing.Optional[int] = None
    unit: typing.Optional[str] = None  # cifar_resnet_v2: basic | bottleneck
    shortcut: typing.Optional[str] = None  # cifar_resnet_v1: A | B | C
    shortcut_type: typing.Optional[str] = None  # cifar_resnet_ablation
    order: typing.Optional[str] = None  # cifar_resnet_ablation
    shortcut_scale: typing.Optional[float] = None
    residual_scale: typing.Optional[float] = None
    gate_bias: typing.Optional[float] = None
    # cifar_resnet_ablation 'dropout' (default 0.5); the stronger ResNets' dropout before the
    # logits (resnet_tf/models/variants.py: their source's default).
    dropout_rate: typing.Optional[float] = None
    # The stronger ResNets (resnet_tf/models/variants.py): stochastic depth in training, the
    # last unit's drop probability (null: 0).
    drop_path_rate: typing.Optional[float] = None
    weight_decay: float = 1e-4
    batch_norm_decay: float = 0.997
    dtype: str = "float32"

    # Data.
    dataset: str = "folder"
    train_data: str = ""  # image folder, or TFRecord file pattern
    val_data: str = ""
    # Held out of train_data when val_data is empty; None: the dataset's default (digits: 0.2,
    # folder: none). The split a run made is recorded in its model dir.
    validation_split: typing.Optional[float] = None
    image_size: int = 224
    preprocessing: str = "inception"  # inception (slim's) | cifar (pad 4, random crop, flip)
    augment: bool = True  # training distortions
    color_distortion: bool = True
    central_fraction: float = 0.875  # eval crop (slim: 0.875)
    label_offset: int = 0  # 1 adds slim's background class 0 to folder labels
    class_names: str = ""  # a text file, one name per line (default: folder names / ImageNet)
    train_examples: typing.Optional[int] = None  # for TFRecords: examples per epoch
    val_examples: typing.Optional[int] = None
    shuffle_buffer: int = 10000
    seed: int = 0

    # Optimisation.
    epochs: int = 10
    batch_size: int = 32  # global, over all replicas
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: float = 2.0  # exponential: multiply by decay_rate every decay_epochs
    decay_rate: float = 0.94
    boundaries_epochs: list = dataclasses.field(default_factory=list)  # piecewise: x decay_rate
    label_smoothing: float = 0.0

    # Fine-tuning.
    slim_checkpoint: str = ""
    checkpoint_exclude: list = dataclasses.field(default_factory=list)
    checkpoint_moving_averages: bool = False  # load slim's ExponentialMovingAverage shadows
    init_from: str = ""  # a `resnet-tf train` model dir to start from (its best checkpoint)
    # Released ImageNet weights to start from, all but the head (`resnet_tf.weights.sources`):
    # "imagenet" (slim's), "torchvision", "timm", "keras", "bit-m", "bit-m-in1k" (Big
    # Transfer's ImageNet-21k, and fine-tuned on ImageNet-1k), or a URL or path of such a
    # file. The model takes the layout they need, and images are normalised as their source
    # did.
    weights: str = ""
    # How pixels become the model's input (`pixels.normalize_pixels`); null: "inception"
    # ([-1, 1]), or with `weights` their source's, which a run records here when it starts.
    normalization: typing.Optional[str] = None

    # Quantization-aware training: fine-tune with int8 rounding simulated (resnet_tf.quantization.qat)
    quantization_aware: bool = False
    # Starting from trained weights (init_from, slim_checkpoint), it trains at learning_rate
    # times this: the straight-through gradients of int8 rounding want small steps.
    qat_learning_rate_scale: float = 0.1
    # The bits of its int8 weights: 7 (the exports equal the model on every x86 CPU), or 8 (one
    # bit finer, for CPUs with VNNI only: without it OpenVINO's int8 kernels saturate on them).
    qat_weight_bits: int = 7

    def __post_init__(self):
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("preprocessing", self.preprocessing, PREPROCESSING)
        if self.normalization is not None:
            _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("model", self.model, MODEL_NAMES)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        ignored = [k for k in MODEL_KEYS if getattr(self, k) != defaults[k] and
                   k not in MODEL_ARGUMENTS.get(self.model, ())]
        if ignored:
            takers = {k: [m for m, keys in MODEL_ARGUMENTS.items() if k in keys] for k in ignored}
            raise UserError(f"model {self.model!r} takes none of {ignored} (" + "; ".join(
                f"{k}: {', '.join(models)} only" for k, models in takers.items()) + ")")
        for key in ("epochs", "batch_size", "image_size", "base_depth", "shuffle_buffer"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1. Received: {key}={getattr(self, key)}")
        for key in ("train_examples", "val_examples", "num_classes"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise UserError(f"{key} must be >= 1 or null. Received: {key}={value}")
        for key in ("units", "block_strides"):
            value = getattr(self, key)
            if value is not None and (not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
                raise UserError(f"{key} must be a non-empty list of positive integers. "
                                f"Received: {key}={value!r}")
        if self.model == "resnet_v2_stack" and self.units is None:
            raise UserError("model 'resnet_v2_stack' is a custom stack and needs `units` "
                            "(bottleneck units per block). Received: units=None")
        if self.block_strides is not None and self.units is not None and \
                len(self.block_strides) != len(self.units):
            raise UserError(f"block_strides needs one stride per block of units. Received: "
                            f"units={self.units}, block_strides={self.block_strides}")
        for key in ("validation_split", "label_smoothing"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value < 1.0:
                raise UserError(f"{key} must be in [0, 1). Received: {key}={value}")
        if not 0.0 < self.central_fraction <= 1.0:
            raise UserError(f"central_fraction must be in (0, 1]. "
                            f"Received: central_fraction={self.central_fraction}")
        if self.qat_weight_bits not in WEIGHT_BITS or isinstance(self.qat_weight_bits, bool):
            raise UserError("qat_weight_bits must be 7 or 8. Received: "
                            f"qat_weight_bits={self.qat_weight_bits!r}")
        if not 0.0 < self.qat_learning_rate_scale <= 1.0:
            raise UserError("qat_learning_rate_scale must be in (0, 1]. Received: "
                            f"qat_learning_rate_scale={self.qat_learning_rate_scale}")
        if self.learning_rate <= 0:
            raise UserError(f"learning_rate must be > 0. Received: learning_rate={self.learning_rate}")
        self._check_schedule()
        self._check_data()
        given = {key: getattr(self, key) for key in ("init_from", "slim_checkpoint", "weights")
                 if getattr(self, key)}
        if len(given) > 1:
            raise UserError(f"{' and '.join(given)} each name a starting point; give one. "
                            "Received: " + ", ".join(f"{k}={v!r}" for k, v in given.items()))

    def _check_schedule(self):
        """A schedule that cannot do what the config says is refused (a learning rate that
        rises at a 'decay', boundaries out of order, a warm-up longer than the run)."""
        if self.schedule == "piecewise" and not self.boundaries_epochs:
            raise UserError("schedule 'piecewise' needs boundaries_epochs (e.g. [82, 123]). "
                            "Received: boundaries_epochs=[]")
        boundaries = self.boundaries_epochs
        if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in boundaries):
            raise UserError(f"boundaries_epochs must be a list of numbers of epochs. "
                            f"Received: boundaries_epochs={boundaries!r}")
        if boundaries and (min(boundaries) <= 0 or any(
                later <= earlier for earlier, later in zip(boundaries, boundaries[1:]))):
            raise UserError(f"boundaries_epochs must be positive and strictly increasing. "
                            f"Received: boundaries_epochs={boundaries!r}")
        if boundaries and self.schedule != "piecewise":
            raise UserError(f"boundaries_epochs is for schedule 'piecewise'. Received: "
                            f"schedule={self.schedule!r}, boundaries_epochs={boundaries!r}")
        if self.schedule in ("exponential", "piecewise") and not 0.0 < self.decay_rate <= 1.0:
            raise UserError(f"decay_rate must be in (0, 1] (a decay). "
                            f"Received: decay_rate={self.decay_rate}")
        if self.decay_epochs <= 0:
            raise UserError(f"decay_epochs must be > 0. Received: decay_epochs={self.decay_epochs}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise UserError(f"warmup_epochs must be in [0, epochs={self.epochs}]. "
                            f"Received: warmup_epochs={self.warmup_epochs}")
        if self.warmup_epochs and self.schedule != "cosine":
            raise UserError(f"warmup_epochs={self.warmup_epochs} needs schedule 'cosine'. "
                            f"Received: schedule={self.schedule!r}")

    def _check_data(self):
        """Data keys a dataset would ignore are refused rather than ignored."""
        if self.dataset in ("folder", "tfrecord") and not self.train_data:
            raise UserError(f"dataset {self.dataset!r} needs train_data (an image folder or a "
                            "TFRecord file pattern). Received: train_data=''")
        if self.dataset in ("digits", "cifar10"):
            for key in ("train_data", "val_data"):
                if getattr(self, key):
                    raise UserError(f"dataset {self.dataset!r} has its own images; {key} is "
                                    f"for folder and tfrecord. Received: "
                                    f"{key}={getattr(self, key)!r}")
        if self.dataset == "cifar10" and self.validation_split is not None:
            raise UserError("dataset 'cifar10' validates on its 10,000 test images; "
                            f"validation_split is not used. Received: "
                            f"validation_split={self.validation_split}")
        if self.dataset == "tfrecord" and self.validation_split is not None:
            raise UserError("dataset 'tfrecord' cannot hold images out of the records; give "
                            f"val_data (a TFRecord file pattern). Received: "
                            f"validation_split={self.validation_split}")
        if self.val_data and self.validation_split:
            raise UserError(f"val_data and validation_split both name validation images; "
                            f"give one. Received: val_data={self.val_data!r}, "
                            f"validation_split={self.validation_split}")
        if self.label_offset < 0:
            raise UserError("label_offset must be >= 0. Received: "
                            f"label_offset={self.label_offset}")
        if self.label_offset and self.dataset == "tfrecord":
            raise UserError("label_offset shifts the labels of folders and built-in datasets; "
                            "TFRecords keep their stored labels (slim's ImageNet records are "
                            f"1..1000 already). Received: label_offset={self.label_offset}")
        if self.dataset != "tfrecord":
            for key in ("train_examples", "val_examples"):
                if getattr(self, key) is not None:
                    raise UserError(f"{key} is for dataset 'tfrecord' (other datasets are "
                                    f"counted). Received: {key}={getattr(self, key)}")

    def peak_learning_rate(self) -> float:
        """The learning rate the schedule starts from (or warms up to): `learning_rate`, times
        `qat_learning_rate_scale` for a quantization-aware fine-tune of trained weights."""
        if self.quantization_aware and (self.init_from or self.slim_checkpoint or
                                        self.weights):
            return self.learning_rate * self.qat_learning_rate_scale
        return self.learning_rate

    def eval_preprocessing(self) -> EvalPreprocessing:
        """How this run's validation images are prepared, and so how `evaluate`, `predict`,
        `export` and int8 calibration prepare images for its model: slim's eval crop of
        `central_fraction`, or for `preprocessing: cifar` no crop at all (the whole image,
        resized), as training validates."""
        return EvalPreprocessing(
            self.normalization or "inception", self.image_size,
            None if self.preprocessing == "cifar" else self.central_fraction, crop="central")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MODEL_ARGUMENTS.update({name: keys for name in MODEL_NAMES if (keys := model_arguments(
    name, {field.name for field in dataclasses.fields(TrainConfig)}))})
MODEL_KEYS = tuple(dict.fromkeys(k for keys in MODEL_ARGUMENTS.values() for k in keys))


def _check_choice(key, value, choices):
    if value not in choices:
        raise UserError(f"{key} must be one of {list(choices)}. Received: {key}={value!r}")


def _type_ok(value, annotation) -> bool:
    """Whether a YAML value fits a field's annotation (int is accepted for float, not bool)."""
    if typing.get_origin(annotation) is typing.Union:
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    return "null" if annotation is type(None) else annotation.__name__


def config_from_dict(values: dict, source: str = "config") -> TrainConfig:
    """Validates keys and types (naming `source`), then builds the config."""
    if not isinstance(values, dict):
        raise UserError(f"{source}: a config is a flat mapping of keys to values. "
                        f"Received: {type(values).__name__}")
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise UserError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(_FIELDS)}")
    for key, value in values.items():
        if not _type_ok(value, _HINTS[key]):
            raise UserError(f"{source}: {key} must be {_type_name(_HINTS[key])}. "
                            f"Received: {key}={value!r} ({type(value).__name__})")
    values = {k: (float(v) if v is not None and _HINTS[k] in (float, typing.Optional[float])
                  else v) for k, v in values.items()}
    try:
        return TrainConfig(**values)
    except UserError as error:
        raise UserError(f"{source}: {error}") from None


class _YamlLoader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string; YAML 1.2 and every user read
    it as a float, and so does this loader."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


SHIPPED_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "configs")


def shipped_configs() -> list:
    """The names of the configs that ship with resnet_tf (`resnet-tf train --config NAME`)."""
    return sorted(f[: -len(".yaml")] for f in os.listdir(SHIPPED_CONFIGS) if f.endswith(".yaml"))


def resolve_config_path(name: str) -> str:
    """A config file path, or the name of a shipped config ("quickstart" or "quickstart.yaml")."""
    if os.path.isfile(name):
        return name
    shipped = os.path.join(SHIPPED_CONFIGS, name if name.endswith(".yaml") else f"{name}.yaml")
    if os.sep not in name and os.path.isfile(shipped):
        return shipped
    if os.path.isdir(name):
        raise UserError(f"--config {name!r} is a directory; give a YAML file")
    raise MissingPathError(f"No config file at {name!r}, and no shipped config of that name "
                           f"(shipped: {', '.join(shipped_configs())})")


# The keys that name files or directories (relative ones are relative to the config file).
PATH_KEYS = ("train_data", "val_data", "class_names", "slim_checkpoint", "init_from")


def _is_path(key, value) -> bool:
    """Whether a config value is a path to make absolute: the path keys', and `weights` unless
    it names a source ("torchvision", ...) or is a URL."""
    if not isinstance(value, str) or not value:
        return False
    if key == "weights":
        from resnet_tf.weights.catalog import NAMED

        return value not in NAMED and "://" not in value
    return key in PATH_KEYS


def absolute_path(path: str, base: str) -> str:
    """`path` made absolute against the directory `base` (URLs such as gs://... as they are)."""
    if not path or "://" in path:
        return path
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def load_config(path: str, **overrides) -> TrainConfig:
    """Reads a YAML config (a path or a shipped config's name); `overrides` (e.g. epochs=5 from
    the command line) win over the file. Paths in the file are made absolute against its
    directory (a shipped config's against the current one); paths in `overrides` against the
    current directory."""
    path = resolve_config_path(path)
    with open(path) as f:
        try:
            values = yaml.load(f, Loader=_YamlLoader)
        except yaml.YAMLError as error:
            raise UserError(f"{path}: not valid YAML: {error}") from None
    values = {} if values is None else values
    if isinstance(values, dict):
        shipped = os.path.dirname(os.path.realpath(path)) == os.path.realpath(SHIPPED_CONFIGS)
        base = os.getcwd() if shipped else os.path.dirname(os.path.abspath(path))
        values = {k: (absolute_path(v, base) if _is_path(k, v) else v)
                  for k, v in values.items()}
        values.update({k: (absolute_path(v, os.getcwd()) if _is_path(k, v) else v)
                       for k, v in overrides.items() if v is not None})
    return config_from_dict(values, source=path)


def load_recorded_config(path: str) -> TrainConfig:
    """The config a model dir's run recorded (`save_config` writes every key). A
    quantization-aware run recorded before `qat_weight_bits` existed trained 8-bit weights."""
    config = load_config(path)
    if config.quantization_aware:
        with open(path) as f:
            recorded = yaml.load(f, Loader=_YamlLoader) or {}
        if isinstance(recorded, dict) and "qat_weight_bits" not in recorded:
            config = dataclasses.replace(config, qat_weight_bits=8)
    return config


def save_config(config: TrainConfig, path: str):
    """Writes the resolved config (atomically: other workers may be reading it)."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def default_values() -> dict:
    """Every key's default (what configs/default.yaml lists)."""
    return {
        name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        for name, f in _FIELDS.items()
    }
