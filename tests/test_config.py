"""Training configs: every shipped config loads; errors name the key, the value and the file."""

import os

import pytest
import yaml

from resnet_tf.training.config import (
    TrainConfig,
    config_from_dict,
    default_values,
    load_config,
)

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs")


def test_default_yaml_lists_every_key_with_its_default():
    with open(os.path.join(CONFIGS, "default.yaml")) as f:
        assert yaml.safe_load(f) == default_values()


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CONFIGS) if f.endswith(".yaml")
                                        and f != "default.yaml"))
def test_shipped_configs_load(name):
    config = load_config(os.path.join(CONFIGS, name))
    assert isinstance(config, TrainConfig)


def test_imagenet_config_is_slims_recipe():
    config = load_config(os.path.join(CONFIGS, "imagenet_resnet_v2_50.yaml"))
    assert (config.model, config.num_classes, config.dataset) == ("resnet_v2_50", 1001, "tfrecord")
    assert (config.optimizer, config.momentum, config.batch_size) == ("sgd", 0.9, 256)
    assert (config.label_smoothing, config.weight_decay) == (0.1, 1e-4)
    assert config.warmup_epochs > 0 and config.schedule == "cosine" and config.augment


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: digits\nepochs: 3\n")
    assert load_config(str(path)).epochs == 3
    assert load_config(str(path), epochs=7, dtype=None).epochs == 7


@pytest.mark.parametrize("text, message", [
    ("dataset: digits\nepoch: 3\n", r"unknown key\(s\) \['epoch'\]"),
    ("dataset: digits\nepochs: three\n", r"epochs must be int. Received: epochs='three'"),
    ("dataset: digits\nepochs: 2.5\n", r"epochs must be int"),
    ("dataset: digits\naugment: 1\n", r"augment must be bool"),
    ("dataset: digits\nlearning_rate: true\n", r"learning_rate must be float"),
    ("dataset: digits\nunits: 3\n", r"units must be list or null"),
    ("dataset: pictures\n", r"dataset must be one of"),
    ("dataset: folder\n", r"needs train_data"),
    ("dataset: digits\nepochs: 0\n", r"epochs must be >= 1"),
    ("dataset: digits\nmodel: resnet_v2_stack\n", r"needs `units`"),
    ("- a\n- list\n", r"flat mapping"),
    ("dataset: [unclosed\n", r"not valid YAML"),
])
def test_malformed_configs_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_config(str(path))
    assert str(path) in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No config file"):
        load_config(str(tmp_path / "nope.yaml"))


def test_ints_are_floats_where_floats_are_expected():
    config = config_from_dict({"dataset": "digits", "learning_rate": 1})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)


@pytest.mark.parametrize("values,message", [
    ({"model": "resnet_v2_50", "units": [1, 1]}, r"takes none of \['units'\] \(units: "
                                                 r"resnet_v2_stack only\)"),
    ({"model": "resnet_v2_50", "base_depth": 8, "include_root_block": False},
     r"takes none of \['base_depth', 'include_root_block'\]"),
    ({"model": "cifar_resnet_v1", "order": "original"}, r"order: cifar_resnet_ablation only"),
    ({"model": "resnet_v2_stack", "units": [1], "depth": 20}, r"depth: cifar_resnet_v1, "
                                                        r"cifar_resnet_v2, cifar_resnet_ablation"),
])
def test_model_arguments_the_builder_does_not_take_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(dict(values, dataset="digits"))


def test_the_ablation_dropout_rate_reaches_the_model():
    from resnet_tf.training.trainer import build_model

    config = config_from_dict(dict(dataset="digits", model="cifar_resnet_ablation", depth=8,
                                   shortcut_type="dropout", dropout_rate=0.25, image_size=16))
    model = build_model(config, num_classes=10)
    assert {layer.dropout_rate for layer in model.layers if hasattr(layer, "dropout_rate")} == {
        0.25}


def test_yaml_exponents_without_a_dot_are_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: digits\nlearning_rate: 1e-3\nweight_decay: 5E-5\n")
    config = load_config(str(path))
    assert (config.learning_rate, config.weight_decay) == (0.001, 5e-5)
    assert load_config("quickstart").dataset == "digits"  # a shipped config by name


@pytest.mark.parametrize("text, message", [
    ("schedule: piecewise\nboundaries_epochs: [1.5, 0.5]\n",
     r"boundaries_epochs must be positive and strictly increasing. Received: "
     r"boundaries_epochs=\[1.5, 0.5\]"),
    ("schedule: piecewise\nboundaries_epochs: [2, 2]\n", r"strictly increasing"),
    ("schedule: piecewise\nboundaries_epochs: [-1, 2]\n", r"must be positive"),
    ("schedule: exponential\ndecay_rate: 1.5\n",
     r"decay_rate must be in \(0, 1\] \(a decay\). Received: decay_rate=1.5"),
    ("schedule: cosine\nwarmup_epochs: 12\nepochs: 10\n",
     r"warmup_epochs must be in \[0, epochs=10\]. Received: warmup_epochs=12"),
    ("schedule: exponential\nwarmup_epochs: 1\n", r"warmup_epochs=1.0 needs schedule 'cosine'"),
    ("schedule: cosine\nboundaries_epochs: [3]\n", r"boundaries_epochs is for schedule"),
    ("dataset: tfrecord\ntrain_data: x*\nnum_classes: 5\nvalidation_split: 0.1\n",
     r"dataset 'tfrecord' cannot hold images out of the records.*validation_split=0.1"),
    ("dataset: digits\nval_data: data/val\n",
     r"dataset 'digits' has its own images; val_data is for folder and tfrecord"),
    ("dataset: folder\ntrain_data: a\nval_data: b\nvalidation_split: 0.2\n",
     r"val_data and validation_split both name validation images"),
    ("dataset: folder\ntrain_data: a\ntrain_examples: 10\n",
     r"train_examples is for dataset 'tfrecord'"),
    ("dataset: digits\ninit_from: run\nslim_checkpoint: x.ckpt\n", r"give one"),
])
def test_configs_that_would_train_something_else_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(("dataset: digits\n" if "dataset:" not in text else "") + text)
    with pytest.raises(ValueError, match=message) as error:
        load_config(str(path))
    assert str(path) in str(error.value)


def test_digits_validation_split_zero_means_no_validation():
    from resnet_tf.data.datasets import scan

    assert scan(config_from_dict({"dataset": "digits"})).counts["val"] == 359
    record = scan(config_from_dict({"dataset": "digits", "validation_split": 0.0}))
    assert record.counts == {"train": 1797, "val": 0} and not record.has("val")


def test_paths_are_relative_to_the_config_file_and_recorded_absolute(tmp_path, monkeypatch):
    (tmp_path / "project" / "data").mkdir(parents=True)
    path = tmp_path / "project" / "c.yaml"
    path.write_text("dataset: folder\ntrain_data: data/images\nclass_names: names.txt\n"
                    "slim_checkpoint: ../ckpt/model.ckpt\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(str(path))
    assert config.train_data == str(tmp_path / "project" / "data" / "images")
    assert config.class_names == str(tmp_path / "project" / "names.txt")
    assert config.slim_checkpoint == str(tmp_path / "ckpt" / "model.ckpt")
    # A shipped config has no directory of its own: its paths are the current directory's.
    assert load_config("finetune_folder").train_data == str(tmp_path / "data" / "my_images")
    # Command-line overrides are the current directory's.
    path.write_text("dataset: folder\ntrain_data: data/images\n")
    assert load_config(str(path), init_from="runs/a").init_from == str(tmp_path / "runs" / "a")


@pytest.mark.parametrize("scale", [0, -0.1, 1.5])
def test_a_qat_learning_rate_scale_outside_zero_to_one_is_refused(scale):
    with pytest.raises(ValueError, match=rf"qat_learning_rate_scale must be in \(0, 1\]\. "
                                         rf"Received: qat_learning_rate_scale={scale}"):
        config_from_dict(dict(dataset="digits", qat_learning_rate_scale=scale))
