"""What a run reports is what it saved, trained from and validated on: the paths one step off
the main road (a re-run after an early kill, `--distribute mirrored`, evaluating an export, a
run started from another run, a short run), each through the `resnet-tf` command on real files,
with no resnet_tf code replaced."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import yaml
from conftest import ROOT, copy_run
from conftest import resnet_tf_command as command
from image_data import write_digits_folder

TINY = dict(model="resnet_v2_stack", units=[1], base_depth=4, block_strides=[1],
            include_root_block=False, dataset="folder", image_size=16, augment=False,
            central_fraction=1.0, batch_size=16, optimizer="adam", learning_rate=0.003)


def write_config(path, **values):
    with open(path, "w") as f:
        yaml.safe_dump(values, f)
    return str(path)


def log_rows(run):
    with open(os.path.join(run, "training_log.csv")) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def split_files(run, split):
    """The real paths of a run's recorded images of `split`."""
    with open(os.path.join(run, "files", f"{split}.txt")) as f:
        return {os.path.realpath(line.rstrip("\n").split("\t", 1)[1]) for line in f}


def kill_before_the_first_commit(args, run):
    """Starts `resnet-tf train ARGS`, SIGKILLs it as soon as its config.yaml is written (the
    run is then one to resume) and checks that no epoch was committed by then."""
    process = subprocess.Popen([sys.executable, "-m", "resnet_tf_cli", "train", *args],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = os.path.join(run, "config.yaml")
    while not os.path.exists(config):
        assert process.poll() is None, "train ended before writing its config"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not os.path.exists(os.path.join(run, "backup", "state.json")), \
        "an epoch was committed before the kill: the machine is too fast for this test"


# --------------------------------------------------------------------------------------------
# 1. A re-run after a kill before the first commit starts from the run's initialization


@pytest.mark.large
@pytest.mark.parametrize("quantization_aware", [False, True], ids=["fine-tune", "qat"])
def test_a_rerun_after_an_early_kill_starts_from_the_same_initialization(
        quickstart_run, tmp_path, quantization_aware):
    run = str(tmp_path / "ft")
    args = ["--config", "quickstart", "--model-dir", run, "--init-from", quickstart_run,
            "--epochs", "1"] + (["--quantization-aware"] if quantization_aware else [])
    kill_before_the_first_commit(args, run)
    again = command("train", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "starting again from the same file" in again.stdout
    assert os.path.join(quickstart_run, "checkpoints", "best.keras") in again.stdout
    # From the trained quickstart the first epoch is all but perfect; from random weights
    # (the bug) it was 0.72 (fine-tune) and 0.57 (QAT).
    assert log_rows(run)[0]["accuracy"] > 0.95
    if quantization_aware:  # evaluate says what the model computes in
        evaluated = command("evaluate", "--model-dir", run)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        assert "keras, int8 (quantization-aware)" in evaluated.stdout


@pytest.mark.large
def test_a_rerun_whose_starting_checkpoint_changed_is_refused(quickstart_run, tmp_path):
    source = copy_run(quickstart_run, tmp_path / "source")
    run = str(tmp_path / "ft")
    args = ["--config", "quickstart", "--model-dir", run, "--init-from", source,
            "--epochs", "1"]
    kill_before_the_first_commit(args, run)
    shutil.copy(os.path.join(source, "checkpoints", "last.keras"),
                os.path.join(source, "checkpoints", "best.keras"))  # the source trained on
    before = sorted(os.listdir(run))
    refused = command("train", *args)
    assert refused.returncode == 2
    assert "init_from=" in refused.stderr and "has changed since" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sorted(os.listdir(run)) == before
    os.remove(os.path.join(source, "checkpoints", "best.keras"))
    gone = command("train", *args)
    assert gone.returncode == 2 and "which is gone" in gone.stderr


# --------------------------------------------------------------------------------------------
# 2. --distribute mirrored reports what it saved


@pytest.mark.large
def test_a_mirrored_run_reports_the_accuracy_and_loss_of_the_model_it_saved(tmp_path):
    """Each replica's batch norm updates its own copy of the moving statistics; the run must
    validate and save one model. The saved model, evaluated alone, gives the logged numbers."""
    import keras

    from resnet_tf.data.datasets import make_datasets
    from resnet_tf.training.loading import load_model_dir
    from resnet_tf.training.model_dir import ModelDir
    from resnet_tf.training.optimization import make_loss

    run = str(tmp_path / "mirrored")
    trained = command("train", "--config", "quickstart", "--model-dir", run, "--epochs", "3",
                      "--distribute", "mirrored", "--cpu-devices", "2")
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert metrics["replicas"] == 2
    evaluated = command("evaluate", "--model-dir", run, "--json", tmp_path / "e.json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    result = json.load(open(tmp_path / "e.json"))
    assert result["top1"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    # The loss is a finer witness than the accuracy: replica 0's statistics alone move it.
    model, config, _ = load_model_dir(run)
    data = make_datasets(config, ModelDir(run).read_data_record())
    model.compile(loss=make_loss(config))
    loss = model.evaluate(data.val, steps=data.validation_steps, verbose=0)
    assert loss == pytest.approx(metrics["val_loss"], rel=1e-4)
    assert keras.backend.backend() == "tensorflow"


# --------------------------------------------------------------------------------------------
# 3. and 4. An export is scored on the run's own validation images; a run started from
# another run never validates on that run's training images


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A small run on a folder of real digits with validation_split (default
    batch_norm_decay: the run is short, so it must warn), and its config."""
    work = tmp_path_factory.mktemp("folder")
    folder = write_digits_folder(work / "digits", per_class=30)
    config = write_config(work / "digits.yaml", **TINY, train_data=folder,
                          validation_split=0.2, epochs=1)
    run = str(work / "a")
    result = command("train", "--config", config, "--model-dir", run)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(work=work, folder=folder, config=config, run=run, stderr=result.stderr)


def test_a_short_run_names_batch_norm_decay_and_a_value_that_fits(folder_run):
    stderr = folder_run["stderr"]
    assert "batch_norm_decay 0.997" in stderr
    assert "Set batch_norm_decay: " in stderr


def add_images(folder, count, unreadable=2):
    """`count` more digit images (another seed's order) and `unreadable` broken files."""
    import tensorflow as tf

    from resnet_tf.data.datasets import digits_arrays

    (x, y), _ = digits_arrays(0.0, seed=0)
    for i in range(count):
        with open(os.path.join(folder, str(y[-1 - i]), f"new-{i}.png"), "wb") as f:
            f.write(tf.io.encode_png(x[-1 - i]).numpy())
    for i in range(unreadable):
        with open(os.path.join(folder, str(i), f"broken-{i}.png"), "wb") as f:
            f.write(b"not a png")


def test_an_export_is_scored_on_exactly_the_runs_validation_images(folder_run, tmp_path,
                                                                   capsys):
    """The user's `evaluate --export DIR --model-dir RUN` runs as a command; the steps around
    it, whose process is not what is tested, run in-process (`resnet_tf_cli.main`)."""
    from resnet_tf_cli import main

    work = tmp_path
    folder = str(shutil.copytree(folder_run["folder"], work / "digits"))
    run, export = str(work / "run"), str(work / "export")
    config = write_config(work / "c.yaml", **TINY, train_data=folder, validation_split=0.2,
                          epochs=1, batch_norm_decay=0.9)
    assert main(["train", "--config", config, "--model-dir", run]) == 0
    assert main(["export", "--model-dir", run, "--output", export, "--format", "tflite"]) == 0
    recorded = len(split_files(run, "val"))
    add_images(folder, 40)  # the folder changes after the run
    scored = command("evaluate", "--export", export, "--model-dir", run, "--json",
                     work / "e.json")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert f"the validation images recorded in {run}" in scored.stdout
    result = json.load(open(work / "e.json"))
    assert result["count"] == recorded
    assert main(["evaluate", "--model-dir", run, "--json", str(work / "k.json")]) == 0
    assert json.load(open(work / "k.json"))["top1"] == pytest.approx(result["top1"], abs=1e-9)
    capsys.readouterr()
    # A config's split of a folder is drawn anew: said loudly.
    assert main(["evaluate", "--export", export, "--config", config]) == 0
    err = capsys.readouterr().err
    assert "drawn anew" in err and "--model-dir RUN" in err
    assert main(["evaluate", "--export", export, "--model-dir", run, "--data", folder]) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.large
@pytest.mark.parametrize("quantization_aware", [False, True], ids=["fine-tune", "qat"])
def test_a_run_from_another_run_never_validates_on_its_training_images(
        folder_run, tmp_path, quantization_aware):
    folder = shutil.copytree(folder_run["folder"], tmp_path / "digits")
    first = str(tmp_path / "a")
    config = write_config(tmp_path / "c.yaml", **TINY, train_data=str(folder),
                          validation_split=0.2, epochs=1, batch_norm_decay=0.9)
    assert command("train", "--config", config, "--model-dir", first).returncode == 0
    add_images(str(folder), 60, unreadable=0)
    second = str(tmp_path / "b")
    result = command("train", "--config", config, "--model-dir", second, "--init-from", first,
                     *(["--quantization-aware"] if quantization_aware else []))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the validation split follows init_from" in result.stdout
    assert not split_files(second, "val") & split_files(first, "train")
    assert split_files(first, "val") <= split_files(second, "val")
    new_val = split_files(second, "val") - split_files(first, "val")
    assert 0 < len(new_val) < 60  # the 60 new images are split anew


# --------------------------------------------------------------------------------------------
# 6., 10., 11.: smaller things


def test_a_given_train_examples_is_checked_against_the_records(tmp_path):
    from image_data import write_colour_tfrecords

    write_colour_tfrecords(tmp_path / "train.tfrecord", 30, num_classes=3)
    config = write_config(tmp_path / "c.yaml", **dict(TINY, dataset="tfrecord"),
                          train_data=str(tmp_path / "train.tfrecord"), num_classes=3,
                          train_examples=5000, epochs=1)
    result = command("train", "--config", config, "--model-dir", tmp_path / "run")
    assert result.returncode == 2
    assert "train_examples=5000" in result.stderr and "hold 30 records" in result.stderr
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.large
def test_train_on_a_run_with_a_torn_model_file_writes_it_again(quickstart_run, tmp_path):
    run = copy_run(quickstart_run, tmp_path / "run")
    model = os.path.join(run, "model.keras")
    size = os.path.getsize(model)
    with open(model, "r+b") as f:
        f.truncate(size // 2)
    result = command("train", "--config", "quickstart", "--model-dir", run)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "was torn; written again from the committed epoch 8" in result.stdout
    evaluated = command("evaluate", "--model-dir", run, "--json", tmp_path / "e.json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert json.load(open(tmp_path / "e.json"))["top1"] == pytest.approx(
        metrics["val_accuracy"], abs=1e-6)


def test_calibrating_on_fewer_images_than_asked_is_said(quickstart_run, tmp_path):
    folder = write_digits_folder(tmp_path / "few", per_class=3)  # 30 images
    result = command("export", "--model-dir", quickstart_run, "--output", tmp_path / "e",
                     "--format", "tflite", "--precision", "int8", "--calibration-data", folder,
                     "--max-accuracy-drop", "0.99")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "calibrated on 30 images, fewer than the 300 asked for" in result.stderr


# --------------------------------------------------------------------------------------------
# 7., 8., 9.: what evaluate and export say


def test_a_truncated_openvino_weights_file_is_named(quickstart_run, tmp_path):
    from resnet_tf_cli import main

    export = str(tmp_path / "ov")
    assert main(["export", "--model-dir", quickstart_run, "--output", export,
                 "--format", "openvino"]) == 0
    weights = os.path.join(export, "model.bin")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 3)
    result = command("evaluate", "--export", export, "--model-dir", quickstart_run)
    assert result.returncode == 2
    assert f"{weights!r} is truncated" in result.stderr and "Traceback" not in result.stderr


def test_keras_runners_name_what_the_model_computes_in():
    from resnet_tf import quantize_model, resnet_v2_stack
    from resnet_tf.export.runtimes import keras_runner

    def tiny(dtype="float32"):
        return resnet_v2_stack(units=[1], base_depth=2, block_strides=[1], num_classes=3,
                               input_shape=(8, 8, 3), include_root_block=False, dtype=dtype)

    assert keras_runner(tiny()).precision == "float32"
    assert keras_runner(tiny("mixed_bfloat16")).precision == "mixed_bfloat16"
    assert keras_runner(quantize_model(tiny())).precision == "int8 (quantization-aware)"


def test_the_tflite_bound_search_prints_no_tensorflow_deprecation(quickstart_run, tmp_path,
                                                                  capfd):
    """The bound search runs TensorFlow's QuantizationDebugger, which warns that
    tf.lite.Interpreter is deprecated each time; nothing of it reaches the user."""
    from resnet_tf.export.deploy import serving_function, write_serving_saved_model
    from resnet_tf.export.formats.tflite import TFLiteQuantizer
    from resnet_tf.export.int8 import calibration_pixels, quantizable_layers
    from resnet_tf.training.loading import load_model_source

    source = load_model_source(model_dir=quickstart_run)
    calibration = calibration_pixels(source, count=16)
    saved_model = str(tmp_path / "sm")
    write_serving_saved_model(serving_function(source.model, source.prep), source.model,
                              saved_model)
    quantizer = TFLiteQuantizer(saved_model, calibration, source.model)
    target = str(tmp_path / "t")
    os.makedirs(target)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantizer.write([quantizable_layers(source.model)[0]], target)
    captured = capfd.readouterr()
    assert os.path.getsize(os.path.join(target, "model.tflite")) > 0
    assert "deprecated" not in captured.err + captured.out
    assert not [w for w in caught if "deprecated" in str(w.message)]
    assert np.isfinite(calibration).all()
