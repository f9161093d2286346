"""resnet-tf export / predict: a SavedModel that plain TensorFlow serves, top-5 with slim's offset."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from image_data import write_image_folder

from resnet_tf.data import preprocessing
from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.export.deploy import export_model
from resnet_tf.training.config import config_from_dict
from resnet_tf.training.trainer import build_model
from resnet_tf_cli import main

SERVE = r"""
import json, sys
import numpy as np
import tensorflow as tf
export, images_path, png_path = sys.argv[1:4]
loaded = tf.saved_model.load(export)
images = np.load(images_path)
serve = loaded.signatures["serving_default"]
batch = serve(images=tf.constant(images))
alone = [serve(images=tf.constant(images[i:i + 1]))["probabilities"].numpy()[0]
         for i in range(len(images))]
with open(png_path, "rb") as f:
    from_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant([f.read()]))
print(json.dumps({
    "probabilities": batch["probabilities"].numpy().tolist(),
    "classes": batch["classes"].numpy().tolist(),
    "alone": np.array(alone).tolist(),
    "bytes": from_bytes["probabilities"].numpy().tolist(),
    "inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in
               serve.structured_input_signature[1].items()},
    "resnet_tf_imported": "resnet_tf" in sys.modules,
}))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model with non-trivial batch-norm statistics, and its config."""
    root = tmp_path_factory.mktemp("export")
    folder = write_image_folder(root / "images")
    config = config_from_dict(dict(model="resnet_v2_stack", units=[1, 1], base_depth=8,
                                   include_root_block=False, image_size=16, dataset="folder",
                                   train_data=folder, central_fraction=0.875))
    model = build_model(config, num_classes=3)
    rng = np.random.default_rng(0)
    for w in model.non_trainable_weights:  # moving statistics, as after training
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    return model, config, root


def test_plain_tensorflow_serves_the_same_numbers(trained, capsys):
    model, config, root = trained
    export = export_model(model, str(root / "export"),
                          EvalPreprocessing("inception", config.image_size, config.central_fraction),
                          class_names=["blue", "green", "red"])
    assert open(os.path.join(export, "assets", "class_names.txt")).read().split() == [
        "blue", "green", "red"]
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (4, 30, 26, 3)).astype(np.float32)
    np.save(root / "images.npy", images)
    png = images[0].round().astype(np.uint8)
    with open(root / "one.png", "wb") as f:
        f.write(tf.io.encode_png(png).numpy())
    result = subprocess.run([sys.executable, "-c", SERVE, export, str(root / "images.npy"),
                             str(root / "one.png")], capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["resnet_tf_imported"] is False
    assert served["inputs"] == {"images": ["float32", [None, None, None, 3]]}
    # The Keras model on the same preprocessing, in inference mode.
    expected = tf.nn.softmax(model(preprocessing.preprocess_for_eval(
        images / 255.0, 16, 16, config.central_fraction), training=False)).numpy()
    probabilities = np.array(served["probabilities"])
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    assert served["classes"] == list(np.argmax(expected, -1))
    np.testing.assert_allclose(np.array(served["alone"]), probabilities, atol=1e-6)
    expected_png = tf.nn.softmax(model(preprocessing.preprocess_for_eval(
        png[np.newaxis] / 255.0, 16, 16, config.central_fraction), training=False)).numpy()
    np.testing.assert_allclose(np.array(served["bytes"]), expected_png, rtol=1e-5, atol=1e-6)
    # resnet-tf predict on the export: its class names, its probabilities.
    assert main(["predict", "--export", export, "--top", "3", str(root / "one.png")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    best = int(np.argmax(expected_png[0]))
    assert lines[1].split() == [f"{expected_png[0, best]:.4f}",
                                ["blue", "green", "red"][best], f"({best})"]


def test_an_existing_export_is_never_clobbered(trained):
    model, config, root = trained
    target = root / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_model(model, str(target), EvalPreprocessing("inception", 16))
    with pytest.raises(ValueError, match="not an earlier export"):  # not even with --overwrite
        export_model(model, str(target), EvalPreprocessing("inception", 16), overwrite=True)
    assert (target / "keep.txt").read_text() == "mine"
    earlier = root / "earlier"
    export_model(model, str(earlier), EvalPreprocessing("inception", 16))
    (earlier / "stale.txt").write_text("from the last export")
    export_model(model, str(earlier), EvalPreprocessing("inception", 16), overwrite=True)
    assert not (earlier / "stale.txt").exists() and (earlier / "saved_model.pb").exists()
    assert not [p for p in os.listdir(root) if p.startswith(".export-")]  # no staging left


def test_predict_from_a_slim_checkpoint_names_classes_with_slims_offset(tmp_path, capsys):
    from slim_reference import save_slim_checkpoint

    from resnet_tf import resnet_v2_50, slim_variables

    model = resnet_v2_50(num_classes=1001)
    values = {name: np.asarray(v) for name, v in slim_variables(model).items()}
    values["resnet_v2_50/logits/biases"][1] = 100.0  # slim's class 1 = ImageNet's first class
    checkpoint = save_slim_checkpoint(values, str(tmp_path / "resnet_v2_50.ckpt"))
    image = tmp_path / "fish.jpg"
    image.write_bytes(tf.io.encode_jpeg(np.full((64, 80, 3), 128, np.uint8)).numpy())
    assert main(["predict", "--slim-checkpoint", checkpoint, "--model", "resnet_v2_50",
                 "--num-classes", "1001", str(image)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(image) and len(lines) == 6
    assert lines[1].split() == ["1.0000", "tench", "(1)"]


def test_export_and_predict_errors(tmp_path, capsys):
    assert main(["export", "--model-dir", str(tmp_path / "none"), "--output",
                 str(tmp_path / "e")]) == 2
    assert "No trained model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: exactly one model source
        main(["predict", "--model-dir", "a", "--export", "b", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["export", "--slim-checkpoint", str(tmp_path / "missing.ckpt"), "--output",
                 str(tmp_path / "e")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
