"""load_slim_checkpoint: strict (missing, unused, misshapen are named) and atomic."""

import numpy as np
import pytest
from slim_reference import random_slim_values, save_slim_checkpoint

import resnet_tf
from resnet_tf import resnet_v2, resnet_v2_block

TINY = [resnet_v2_block("block1", base_depth=2, num_units=2, stride=2),
        resnet_v2_block("block2", base_depth=4, num_units=1, stride=1)]


def weights_of(model):
    return [np.array(w) for w in model.weights]


@pytest.fixture
def model():
    return resnet_v2(TINY, num_classes=5, name="resnet_v2_tiny")


def test_loads_every_variable(tmp_path, model):
    values = random_slim_values(model)
    values["global_step"] = np.int64(1000)  # not a model variable: ignored
    path = save_slim_checkpoint(values, str(tmp_path / "model.ckpt"))
    loaded = resnet_tf.load_slim_checkpoint(model, path)
    assert len(loaded) == len(model.weights) == len(values) - 1
    for name, variable in resnet_tf.slim_variables(model).items():
        np.testing.assert_array_equal(np.asarray(variable), values[name])


def test_accepts_index_file_and_directory(tmp_path, model):
    path = save_slim_checkpoint(random_slim_values(model), str(tmp_path / "model.ckpt"))
    resnet_tf.load_slim_checkpoint(model, path + ".index")
    # A directory resolves through its `checkpoint` state file (tf.train.latest_checkpoint).
    with open(tmp_path / "checkpoint", "w") as state:
        state.write('model_checkpoint_path: "model.ckpt"\n')
    resnet_tf.load_slim_checkpoint(model, str(tmp_path))


def test_missing_and_misshapen_are_named_and_nothing_changes(tmp_path, model):
    values = random_slim_values(model)
    del values["resnet_v2_tiny/block1/unit_1/bottleneck_v2/conv2/BatchNorm/beta"]
    values["resnet_v2_tiny/logits/weights"] = np.zeros((1, 1, 16, 6), np.float32)
    path = save_slim_checkpoint(values, str(tmp_path / "bad.ckpt"))
    before = weights_of(model)
    with pytest.raises(ValueError) as error:
        resnet_tf.load_slim_checkpoint(model, path)
    message = str(error.value)
    assert "1 missing from the checkpoint: resnet_v2_tiny/block1/unit_1/bottleneck_v2/conv2/" \
           "BatchNorm/beta" in message
    assert "resnet_v2_tiny/logits/weights (checkpoint (1, 1, 16, 6), model (1, 1, 16, 5))" \
        in message
    assert "No weight was changed" in message
    for old, new in zip(before, weights_of(model)):
        np.testing.assert_array_equal(old, new)


def test_unused_variable_is_named(tmp_path, model):
    values = random_slim_values(model)
    values["resnet_v2_tiny/block3/unit_1/bottleneck_v2/conv1/weights"] = np.ones((1, 1, 1, 1),
                                                                                 np.float32)
    path = save_slim_checkpoint(values, str(tmp_path / "extra.ckpt"))
    with pytest.raises(ValueError, match="1 in the checkpoint but not in the model: "
                                         "resnet_v2_tiny/block3/unit_1"):
        resnet_tf.load_slim_checkpoint(model, path)


def test_other_scope_is_explained_and_selectable(tmp_path, model):
    values = {name.replace("resnet_v2_tiny/", "resnet_v2_50/"): value
              for name, value in random_slim_values(model).items()}
    path = save_slim_checkpoint(values, str(tmp_path / "scoped.ckpt"))
    with pytest.raises(ValueError, match=r"its scopes are \['resnet_v2_50'\]"):
        resnet_tf.load_slim_checkpoint(model, path)
    resnet_tf.load_slim_checkpoint(model, path, scope="resnet_v2_50")


def test_exclude_logits_for_a_new_head(tmp_path, model):
    path = save_slim_checkpoint(random_slim_values(model), str(tmp_path / "model.ckpt"))
    new_head = resnet_v2(TINY, num_classes=3, name="resnet_v2_tiny")
    head_before = np.array(new_head.get_layer("logits").kernel)
    loaded = resnet_tf.load_slim_checkpoint(new_head, path, exclude=["logits"])
    assert not any("logits" in name for name in loaded)
    np.testing.assert_array_equal(np.array(new_head.get_layer("logits").kernel), head_before)


def test_missing_path_is_named(tmp_path, model):
    missing = str(tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        resnet_tf.load_slim_checkpoint(model, missing)
    with pytest.raises(TypeError, match="path=None"):
        resnet_tf.load_slim_checkpoint(model, None)


def test_a_slim_training_checkpoint_loads_with_its_optimizer_state_left_out(tmp_path, capfd):
    """What users fine-tuned with slim themselves: Momentum slots, global_step and moving
    averages beside the model variables. The variables load strictly and give slim's outputs;
    the moving averages load on request; any file of the checkpoint names it."""
    from slim_reference import relative_error, run_slim_training_checkpoint

    images = np.random.default_rng(3).uniform(-1, 1, (2, 33, 33, 3)).astype(np.float32)
    path = str(tmp_path / "model.ckpt-12345")
    plain, averaged = run_slim_training_checkpoint(images, path, blocks=TINY, num_classes=5)
    model = resnet_v2(TINY, num_classes=5, include_root_block=False, spatial_squeeze=False,
                      name="resnet_v2")
    loaded = resnet_tf.load_slim_checkpoint(model, path)
    assert len(loaded) == len(model.weights)
    assert relative_error(model(images, training=False), plain) < 2e-4
    err = capfd.readouterr().err
    assert "training state left out" in err and "optimizer slots (Momentum)" in err
    assert "global_step" in err and "ExponentialMovingAverage shadows" in err
    resnet_tf.load_slim_checkpoint(model, path + ".data-00000-of-00001", moving_averages=True)
    assert relative_error(model(images, training=False), averaged) < 2e-4
    resnet_tf.load_slim_checkpoint(model, path + ".index")
    assert relative_error(model(images, training=False), plain) < 2e-4
