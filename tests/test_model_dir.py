"""The model dir survives anything: SIGKILL at chosen moments of training (mid-epoch, after the
log row, during a checkpoint or backup write, after the commit), torn backup files, a failed
start. Each kill is followed by the same command, which must finish with consistent records."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from image_data import write_image_folder

from resnet_tf.training.model_dir import ModelDir

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
EPOCHS = 4

# Runs `resnet-tf train ...` and SIGKILLs itself at the moment argv[1] names, in epoch argv[2]
# (0-based). Nothing in resnet_tf knows about it: the faults are injected from outside.
KILLER = r"""
import os, signal, sys
import keras
import resnet_tf.training.model_dir as model_dir
import resnet_tf.training.trainer as training

moment, target = sys.argv[1], int(sys.argv[2])
argv = sys.argv[3:]
state = {"epoch": -1}


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def torn_write(path):  # half a file, then the kill
    with open(path, "wb") as f:
        f.write(b"\x89HDF\r\n" + os.urandom(3000))
    die()


class KillingEpochEnd(training.EpochEnd):
    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        state["epoch"] = epoch

    def on_train_batch_end(self, batch, logs=None):
        if moment == "mid-epoch" and state["epoch"] == target and batch == 1:
            die()


training.EpochEnd = KillingEpochEnd
real_write_log, real_commit = model_dir.ModelDir.write_log, model_dir.ModelDir.commit
real_save, real_save_weights = keras.Model.save, keras.Model.save_weights
real_write_json = model_dir.write_json


def write_log(self, rows):
    real_write_log(self, rows)
    if moment == "after-log" and state["epoch"] == target:
        die()


def save(self, path, *args, **kwargs):
    if moment == "during-checkpoint" and state["epoch"] == target:
        torn_write(path)
    return real_save(self, path, *args, **kwargs)


def save_weights(self, path, *args, **kwargs):
    if moment == "during-backup" and state["epoch"] == target:
        torn_write(path)
    return real_save_weights(self, path, *args, **kwargs)


def write_json(value, path):
    if moment == "before-state" and path.endswith("state.json") and state["epoch"] == target:
        die()
    return real_write_json(value, path)


def commit(self, model, epochs, *args):
    real_commit(self, model, epochs, *args)
    if moment == "after-commit" and epochs == target + 1:
        die()


real_build_model = training.build_model


def build_model(*args, **kwargs):  # Ctrl-C while the model is built, before any epoch
    if moment == "before-training":
        os.kill(os.getpid(), signal.SIGINT)
    return real_build_model(*args, **kwargs)


training.build_model = build_model
model_dir.ModelDir.write_log, model_dir.ModelDir.commit = write_log, commit
keras.Model.save, keras.Model.save_weights = save, save_weights
model_dir.write_json = write_json
from resnet_tf_cli import main
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images") / "colours", per_class=6)


def write_config(path, folder, **extra):
    values = dict(dict(model="resnet_v2_stack", units=[1, 1], base_depth=8, include_root_block=False,
                       image_size=16, augment=False, batch_norm_decay=0.9, dataset="folder",
                       train_data=folder, validation_split=0.25, batch_size=3, epochs=EPOCHS,
                       optimizer="adam", learning_rate=1e-3), **extra)
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return str(path)


def run(args, killer=None):
    command = [sys.executable, "-c", KILLER, *killer] if killer else [
        sys.executable, "-m", "resnet_tf_cli"]
    return subprocess.run(command + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def assert_consistent(model_dir, epochs=EPOCHS):
    """One log row per epoch in order, metrics.json agreeing, the state committed, the models
    readable, no temporary file left."""
    paths = ModelDir(model_dir)
    rows = paths.completed_epochs()
    assert [row["epoch"] for row in rows] == list(range(epochs))
    with open(paths.metrics) as f:
        metrics = json.load(f)
    assert metrics["epochs"] == epochs and metrics["history"] == rows
    assert metrics["val_accuracy"] == rows[-1]["val_accuracy"]
    assert paths.read_state()["epoch"] == epochs
    final, last, _ = (keras.saving.load_model(path, compile=False)
                      for path in (paths.model, paths.last, paths.best))
    for a, b in zip(final.get_weights(), last.get_weights()):  # last.keras is the last epoch's
        np.testing.assert_array_equal(a, b)
    for directory in (paths.root, paths.checkpoints, paths.backup):
        assert not [n for n in os.listdir(directory) if n.startswith(".")], directory
    with open(paths.csv) as f:
        assert len(f.read().strip().splitlines()) == epochs + 1  # header + rows, nothing torn


MOMENTS = [("mid-epoch", 1), ("after-log", 1), ("during-checkpoint", 2),
           ("during-backup", 1), ("before-state", 2), ("after-commit", 1),
           ("after-commit", EPOCHS - 1)]


@pytest.mark.large
@pytest.mark.parametrize("moment,epoch", MOMENTS)
def test_a_kill_at_any_moment_loses_at_most_the_epoch_in_flight(images, tmp_path, moment,
                                                                epoch):
    config = write_config(tmp_path / "tiny.yaml", images)
    model_dir = str(tmp_path / "run")
    args = ["train", "--config", config, "--model-dir", model_dir]
    killed = run(args, killer=[moment, str(epoch)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    committed = ModelDir(model_dir).read_state()
    expected = epoch + 1 if moment == "after-commit" else epoch
    assert (committed or {"epoch": 0})["epoch"] == expected
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    if expected < EPOCHS:  # training went on from the committed epoch, not before
        assert f"Epoch {expected + 1}/{EPOCHS}" in output and f"Epoch {expected}/" not in output
    else:
        assert "nothing to do" in output
    assert_consistent(model_dir)


@pytest.mark.large
def test_a_torn_backup_falls_back_to_the_one_before(images, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", images)
    model_dir = str(tmp_path / "run")
    args = ["train", "--config", config, "--model-dir", model_dir]
    assert run(args + ["--epochs", "2"]).returncode == 0
    paths = ModelDir(model_dir)
    newest = os.path.join(paths.backup, "epoch-2.weights.h5")
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "the newest backup was unreadable" in resumed.stdout
    assert "Epoch 2/4" in resumed.stdout  # epoch 2 again, from epoch 1's backup
    assert_consistent(model_dir)
    # With every backup unreadable: one sentence naming the dir and what to do.
    for name in os.listdir(paths.backup):
        if name.endswith(".h5"):
            open(os.path.join(paths.backup, name), "wb").close()
    failed = run(args + ["--epochs", "5"])
    assert failed.returncode == 2
    assert failed.stderr.strip().count("\n") == 0 and "No readable backup" in failed.stderr
    assert "remove that dir" in failed.stderr


@pytest.mark.large
def test_a_failed_start_leaves_no_trace(images, tmp_path):
    model_dir = tmp_path / "run"
    typo = tmp_path / "typo.yaml"
    typo.write_text(open(write_config(tmp_path / "t.yaml", images)).read().replace(
        "resnet_v2_stack", "resnet_v2_5O"))
    result = run(["train", "--config", str(typo), "--model-dir", str(model_dir)])
    assert result.returncode == 2 and "model must be one of" in result.stderr
    missing = write_config(tmp_path / "missing.yaml", str(tmp_path / "nowhere"))
    result = run(["train", "--config", missing, "--model-dir", str(model_dir)])
    assert result.returncode == 2 and "No image folder" in result.stderr
    assert not model_dir.exists()
    # The corrected command then trains (nothing recorded the failed attempts).
    good = write_config(tmp_path / "good.yaml", images, epochs=1)
    result = run(["train", "--config", good, "--model-dir", str(model_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    # Re-running a finished run, or with fewer epochs, writes nothing.
    stamps = {p: os.path.getmtime(os.path.join(model_dir, p)) for p in os.listdir(model_dir)
              if os.path.isfile(os.path.join(model_dir, p))}
    for epochs in ("1", "1"):
        result = run(["train", "--config", good, "--model-dir", str(model_dir), "--epochs",
                      epochs])
        assert result.returncode == 0 and "nothing to do" in result.stdout
    assert stamps == {p: os.path.getmtime(os.path.join(model_dir, p)) for p in stamps}


@pytest.mark.large
def test_corrupt_images_are_named_and_skipped(images, tmp_path):
    import shutil

    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "red" / "garbage.jpg").write_bytes(b"not an image at all")
    (folder / "green" / "empty.png").write_bytes(b"")
    good = (folder / "blue" / "0.png").read_bytes()
    (folder / "blue" / "torn.png").write_bytes(good[: len(good) // 2])
    config = write_config(tmp_path / "c.yaml", str(folder), epochs=1)
    result = run(["train", "--config", config, "--model-dir", str(tmp_path / "run")])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("garbage.jpg", "empty.png", "torn.png"):
        assert f"skipping '{folder}" in result.stderr and name in result.stderr
    assert_consistent(str(tmp_path / "run"), epochs=1)
    # A class with no readable image at all is a sentence, before anything is written.
    for path in (folder / "green").iterdir():
        path.write_bytes(b"junk")
    result = run(["train", "--config", config, "--model-dir", str(tmp_path / "run2")])
    assert result.returncode == 2 and "no readable image in the class folder(s) ['green']" in \
        result.stderr
    assert not (tmp_path / "run2").exists()


@pytest.mark.large
def test_torn_state_and_torn_newest_weights_resume_from_the_epoch_before(images, tmp_path):
    """Storage that loses the last write's data (zero-length files after a rename): the state
    file and the newest weights both empty; the run resumes from the newest readable backup."""
    config = write_config(tmp_path / "tiny.yaml", images)
    model_dir = str(tmp_path / "run")
    args = ["train", "--config", config, "--model-dir", model_dir]
    assert run(args + ["--epochs", "2"]).returncode == 0
    paths = ModelDir(model_dir)
    for name in ("state.json", "epoch-2.weights.h5"):
        open(os.path.join(paths.backup, name), "wb").close()
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 2/4" in resumed.stdout and "Epoch 1/4" not in resumed.stdout
    assert_consistent(model_dir)


def _run_until(args, marker, signal_number, env=None):
    """Starts `resnet-tf train`, sends `signal_number` once `marker` appears on its stdout."""
    process = subprocess.Popen([sys.executable, "-m", "resnet_tf_cli", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    seen = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            process.send_signal(signal_number)
            break
    out, err = process.communicate(timeout=600)
    return process.returncode, "".join(seen) + out, err


@pytest.mark.large
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_with_one_sentence_and_resume(tmp_path, signal_number):
    folder = write_image_folder(tmp_path / "images", per_class=40)
    # Epochs of a few seconds: the signal lands inside epoch 3, not at its edge.
    config = write_config(tmp_path / "slower.yaml", folder, image_size=48, base_depth=16)
    model_dir = str(tmp_path / "run")
    args = ["train", "--config", config, "--model-dir", model_dir]
    code, out, err = _run_until(args, "Epoch 3/4", signal_number)
    assert code == 128 + signal_number, (out[-2000:], err[-2000:])
    assert err.strip().splitlines() == [
        f"resnet-tf train: {model_dir}: interrupted during epoch 3; re-run the same command "
        "to resume"], err
    assert ModelDir(model_dir).read_state()["epoch"] == 2
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 3/4" in resumed.stdout and "Epoch 2/4" not in resumed.stdout
    assert_consistent(model_dir)


@pytest.mark.large
def test_ctrl_c_before_training_began_is_one_sentence_and_leaves_nothing(images, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", images, epochs=1)
    model_dir = str(tmp_path / "run")
    args = ["train", "--config", config, "--model-dir", model_dir]
    stopped = run(args, killer=["before-training", "0"])
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    # (the script imports Keras before the command quiets TensorFlow's start-up logging)
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"resnet-tf train: {model_dir}: interrupted before training began; re-run the same "
        "command")
    assert not os.path.exists(model_dir) or not os.listdir(model_dir)
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_consistent(model_dir, epochs=1)


@pytest.mark.large
def test_a_resume_keeps_the_runs_own_dtype_and_says_so(images, tmp_path):
    """`--dtype` given once is part of the run: the same command without it resumes in that
    dtype (not the config file's, which would be another run), with a note."""
    config = write_config(tmp_path / "tiny.yaml", images, epochs=2)
    model_dir = str(tmp_path / "run")
    args = ["train", "--config", config, "--model-dir", model_dir]
    first = run([*args, "--epochs", "1", "--dtype", "mixed_bfloat16"])
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ("resuming with the run's own dtype 'mixed_bfloat16' (the config says 'float32')"
            in resumed.stdout)
    assert "Epoch 2/2" in resumed.stdout and "Epoch 1/2" not in resumed.stdout
    assert_consistent(model_dir, epochs=2)
    with open(ModelDir(model_dir).config) as f:
        assert "mixed_bfloat16" in f.read()


@pytest.mark.large
def test_train_starts_only_in_an_empty_dir_and_resumes_only_its_own(images, tmp_path):
    """`--model-dir .` in a folder of the user's own files, or an export dir: refused before
    anything is written, every file untouched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": true}\n')
    (mine / "training_log.csv").write_text("epoch,loss\n0,1.0\n")
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    config = write_config(tmp_path / "tiny.yaml", images, epochs=1)
    result = subprocess.run([sys.executable, "-m", "resnet_tf_cli", "train", "--config", config,
                             "--model-dir", "."], cwd=mine, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 2 and "is not empty and was not written by" in result.stderr
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    export = tmp_path / "export"
    export.mkdir()
    (export / "preprocessing.json").write_text("{}")
    (export / "model.onnx").write_bytes(b"onnx")
    result = run(["train", "--config", config, "--model-dir", str(export)])
    assert result.returncode == 2 and "is not empty and was not written by" in result.stderr
    assert sorted(os.listdir(export)) == ["model.onnx", "preprocessing.json"]
    # An empty dir is fine, and the same dir then resumes.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["train", "--config", config, "--model-dir", str(empty)]).returncode == 0
    assert run(["train", "--config", config, "--model-dir", str(empty)]).returncode == 0


@pytest.mark.large
def test_a_whole_backup_of_another_model_is_named_not_called_torn(images, tmp_path):
    """A backup that reads fine but does not fit the model is a different problem from a torn
    file: the sentence says so, and does not advise deleting the run's state."""
    import keras

    from resnet_tf.training.config import load_config
    from resnet_tf.training.trainer import build_model

    config = write_config(tmp_path / "tiny.yaml", images)
    model_dir = str(tmp_path / "run")
    args = ["train", "--config", config, "--model-dir", model_dir]
    assert run(args + ["--epochs", "1"]).returncode == 0
    other = build_model(load_config(write_config(tmp_path / "o.yaml", images, base_depth=4)), 3)
    other.compile(optimizer="adam", loss="categorical_crossentropy")
    other.optimizer.build(other.trainable_variables)
    backup = os.path.join(ModelDir(model_dir).backup, "epoch-1.weights.h5")
    other.save_weights(backup)
    result = run(args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "does not fit the model" in result.stderr and "remove that dir" not in result.stderr
    assert keras  # imported for the model above
