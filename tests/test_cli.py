"""The resnet-tf command: --help at once and quiet, one sentence per user error, and a plain
`pip install .` that works from any directory."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import resnet_tf_command

import resnet_tf_cli as cli
from resnet_tf.commands import benchmark
from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.export import export_dir, runtimes
from resnet_tf.training import config, model_dir
from resnet_tf.training import trainer as training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_answers_at_once_without_tensorflow():
    result = resnet_tf_command("--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "train,export,predict,evaluate,download,bench" in result.stdout.replace(" ", "")
    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "resnet_tf_cli", "--help"],
                           capture_output=True, text=True, cwd=ROOT)
    assert not {"tensorflow", "keras", "jax"} & {
        line.split("|")[-1].strip() for line in probe.stderr.splitlines()}
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from resnet_tf_cli import build_parser; "
         "sys.argv = ['resnet-tf']; build_parser().parse_args(['export', '--help'])"],
        capture_output=True, text=True, cwd=ROOT)
    assert loaded.returncode == 0
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "resnet_tf_cli", "bench", "--help"],
        capture_output=True, text=True, cwd=ROOT)
    imported = {line.split("|")[-1].strip() for line in probe.stderr.splitlines()}
    assert not {"tensorflow", "keras", "jax"} & imported


def test_the_cli_choices_are_the_modules_choices():
    """The command line offers the modules' own choices (no copies to keep in step)."""
    assert cli.FORMATS == export_dir.FORMATS and cli.PRECISIONS == export_dir.PRECISIONS
    assert cli.MODES == benchmark.MODES and cli.COMPARE == benchmark.COMPARE
    assert cli.DISTRIBUTE == config.DISTRIBUTE and cli.DTYPES == config.DTYPES
    assert cli.CHECKPOINTS == model_dir.CHECKPOINTS
    from resnet_tf.weights.catalog import NAMED

    assert cli.WEIGHT_SOURCES == NAMED
    assert set(runtimes.FORMAT_OF_RUNTIME.values()) == set(export_dir.FORMATS) - {"saved_model"}


def test_a_run_prints_no_tensorflow_noise(tmp_path):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = resnet_tf_command("evaluate", "--model-dir", str(tmp_path / "none"), env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"resnet-tf evaluate: error: No trained model in '{tmp_path / 'none'}' (no config.yaml: "
        "run `resnet-tf train` first)"]
    verbose = resnet_tf_command("--verbose", "evaluate", "--model-dir", str(tmp_path / "none"),
                                env=env)
    assert len(verbose.stderr.strip().splitlines()) > 1  # TensorFlow's start-up logging
    # --model is checked once the filter is in place: a download that cannot reach its host
    # (a proxy on a closed port of 127.0.0.1 here) is its one sentence on stderr.
    offline = dict(env, KERAS_HOME=str(tmp_path / "keras"), HTTPS_PROXY="http://127.0.0.1:9",
                   https_proxy="http://127.0.0.1:9")
    result = resnet_tf_command("download", "--model", "resnet_v1_50", "--weights", "torchvision",
                               env=offline)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("resnet-tf download: error: Could not download https://")


CRASH_UNDER_THE_FILTER = r"""
import os, sys
import resnet_tf_cli as cli
with cli.quiet_native_output():
    os.write(2, b"I0000 00:00:1.0 123 cpu_feature_guard.cc:210] chatter\n")
    os.write(2, b"E0000 00:00:1.0 123 cuda_executor.cc:1] failed call to cuInit\n")
    print("a sentence from Python", file=sys.stderr)
    os.write(2, b"F0000 00:00:1.0 123 conv_ops.cc:1] Check failed: the last words\n")
    os.abort()
"""


def test_native_chatter_is_dropped_but_a_crash_still_says_why():
    """The filter is a process of its own: when native code kills ours, what it wrote last
    (a fatal check) reaches the user; its start-up chatter does not."""
    result = subprocess.run([sys.executable, "-c", CRASH_UNDER_THE_FILTER], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Check failed: the last words" in result.stderr
    assert "a sentence from Python" in result.stderr
    assert "chatter" not in result.stderr and "cuInit" not in result.stderr


def test_user_errors_are_one_sentence(tmp_path, capsys):
    from slim_reference import save_slim_checkpoint

    from resnet_tf import resnet_v2_50, slim_variables

    model = resnet_v2_50(num_classes=1001)
    checkpoint = save_slim_checkpoint({n: np.asarray(v) for n, v in
                                       slim_variables(model).items()},
                                      str(tmp_path / "resnet_v2_50.ckpt"))
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    not_export = tmp_path / "not_export"
    not_export.mkdir()
    (tmp_path / "file.txt").write_text("x")
    data_file = [f for f in os.listdir(tmp_path) if ".data-" in f][0]
    with open(tmp_path / data_file, "r+b") as f:  # a truncated download
        f.truncate(1000)
    cases = [
        (["predict", "--export", str(not_export), str(image)], "is not a `resnet-tf export` dir"),
        (["predict", "--slim-checkpoint", checkpoint, str(tmp_path / "missing.png")],
         "No image file at"),
        (["predict", "--slim-checkpoint", checkpoint, "--image-size", "32", str(image)],
         "cannot be read"),
        (["export", "--slim-checkpoint", checkpoint, "--output", str(tmp_path / "file.txt")],
         "is a file, not a directory"),
        (["evaluate", "--export", str(tmp_path / "nowhere"), "--data", str(tmp_path)],
         "No export dir at"),
        (["train", "--config", "no_such_config", "--model-dir", str(tmp_path / "r")],
         "no shipped config of that name"),
        (["train", "--config", str(tmp_path), "--model-dir", str(tmp_path / "r")],
         "is a directory"),
    ]
    for args, message in cases:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (args, err)


def test_truncated_model_files_are_sentences(tmp_path, capsys):
    from image_data import write_image_folder

    from resnet_tf.training.config import config_from_dict
    from resnet_tf.training.model_dir import ModelDir

    folder = write_image_folder(tmp_path / "images")
    config = config_from_dict(dict(model="resnet_v2_stack", units=[1], base_depth=8,
                                   include_root_block=False, image_size=16, dataset="folder",
                                   train_data=folder, validation_split=0.25, batch_size=3,
                                   epochs=1, augment=False))
    training.train(config, str(tmp_path / "run"), verbose=0)
    paths = ModelDir(str(tmp_path / "run"))
    with open(paths.model, "r+b") as f:
        f.truncate(os.path.getsize(paths.model) // 2)
    assert cli.main(["evaluate", "--model-dir", paths.root]) == 2
    err = capsys.readouterr().err
    assert "cannot be read as a .keras model" in err and "--checkpoint" in err
    assert cli.main(["evaluate", "--model-dir", paths.root, "--checkpoint", "last"]) == 0
    # An interrupted run (no model.keras yet) is exported from its last epoch's checkpoint.
    os.remove(paths.model)
    assert cli.main(["export", "--model-dir", paths.root, "--output",
                     str(tmp_path / "e")]) == 0
    assert "using the last epoch's checkpoint" in capsys.readouterr().err


@pytest.mark.large
def test_plain_pip_install_works_from_any_directory(tmp_path):
    """`pip install .` alone (no extras) gives `import resnet_tf` and a working resnet-tf,
    with the shipped configs, outside the clone."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", ROOT],
                             capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
    help_ = subprocess.run([str(venv / "bin" / "resnet-tf"), "--help"], cwd=elsewhere,
                           capture_output=True, text=True, env=env)
    assert help_.returncode == 0 and help_.stderr == ""
    imported = subprocess.run([python, "-c", "import resnet_tf; print(resnet_tf.__file__)"],
                              cwd=elsewhere, capture_output=True, text=True, env=env)
    assert imported.returncode == 0 and str(venv) in imported.stdout
    trained = subprocess.run([str(venv / "bin" / "resnet-tf"), "train", "--config",
                              "quickstart", "--model-dir", "runs/q", "--epochs", "1"],
                             cwd=elsewhere, capture_output=True, text=True, env=env,
                             timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert trained.stderr == ""  # quiet: no TensorFlow start-up noise
    assert (elsewhere / "runs" / "q" / "metrics.json").is_file()
    # Without the deploy extra, a runtime format is one sentence naming the extra.
    exported = subprocess.run([str(venv / "bin" / "resnet-tf"), "export", "--model-dir",
                               "runs/q", "--output", "e", "--format", "onnx"], cwd=elsewhere,
                              capture_output=True, text=True, env=env, timeout=600)
    assert exported.returncode == 2
    assert exported.stderr.count("\n") == 1 and "resnet_tf[deploy]" in exported.stderr


# --------------------------------------------------------------------------------------------
# A sentence for every user error; a traceback for bugs only


def test_only_user_errors_are_sentences_a_bug_keeps_its_traceback(capsys):
    import argparse

    from resnet_tf.errors import UserError

    def fails_with(error):
        def handler(args):
            raise error
        return argparse.Namespace(command="export", verbose=True, debug=False,
                                  handler=handler)

    assert cli.run(fails_with(UserError("--output 'x' is a file"))) == 2
    assert capsys.readouterr().err == "resnet-tf export: error: --output 'x' is a file\n"
    with pytest.raises(ValueError, match="a bug deep inside"):  # not a UserError: a traceback
        cli.run(fails_with(ValueError("a bug deep inside")))
    with pytest.raises(UserError):
        cli.run(argparse.Namespace(**dict(vars(fails_with(UserError("x"))), debug=True)))


def test_debug_and_verbose_work_after_the_command(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(["evaluate", "--model-dir", str(tmp_path / "none"), "--debug"])
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "evaluate", "--model-dir", str(tmp_path / "none")])
    assert cli.main(["evaluate", "--model-dir", str(tmp_path / "none"), "--verbose"]) == 2


def test_names_a_name_alone_cannot_build_are_not_offered(capsys):
    for command in (["bench", "--model", "resnet_v2_stack"],
                    ["predict", "--model", "resnet_v2", "--weights", "imagenet", "x.png"]):
        with pytest.raises(SystemExit):
            cli.main(command)
        assert "invalid choice" in capsys.readouterr().err


def test_exports_need_the_tensorflow_backend_and_say_so():
    env = dict(os.environ, KERAS_BACKEND="jax")
    for args in (["export", "--model-dir", "runs/x", "--output", "/tmp/never-written"],
                 ["bench", "--model", "resnet_v2_50", "--runtimes", "keras:float32,tflite:int8",
                  "--num-batches", "1"]):
        result = resnet_tf_command(*args, env=env)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.count("\n") == 1 and "needs the TensorFlow backend" in \
            result.stderr and "KERAS_BACKEND=jax" in result.stderr


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    """A small trained-shape model's float32 exports in three formats, and a good image."""
    import tensorflow as tf

    from resnet_tf import resnet_v2, resnet_v2_block
    from resnet_tf.export.deploy import export_model

    root = tmp_path_factory.mktemp("exports")
    model = resnet_v2([resnet_v2_block("block1", 2, 1, 1)], num_classes=3,
                      include_root_block=False, input_shape=(8, 8, 3))
    exports = {}
    for fmt in ("saved_model", "onnx", "openvino", "tflite"):
        exports[fmt] = export_model(model, str(root / fmt), EvalPreprocessing("inception", 8),
                                    format=fmt, class_names=["a", "b", "c"])
    image = root / "good.png"
    image.write_bytes(tf.io.encode_png(np.full((10, 12, 3), 90, np.uint8)).numpy())
    return root, exports, str(image)


def test_predict_reports_each_bad_file_and_predicts_the_rest(tiny_exports, capsys):
    root, exports, image = tiny_exports
    empty = root / "empty.png"
    empty.write_bytes(b"")
    code = cli.main(["predict", "--export", exports["onnx"], str(root), image, str(empty),
                     str(root / "missing.jpg")])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == image and len(captured.out.splitlines()) == 4
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3
    assert f"{str(root)!r} is a directory, not an image file" in errors[0]
    assert f"{str(empty)!r} is not a readable JPEG, PNG, BMP, GIF or WebP image" in errors[1]
    assert "No image file at" in errors[2]


def test_options_that_do_not_apply_are_refused(tiny_exports, tmp_path, capsys):
    root, exports, image = tiny_exports
    cases = [
        (["predict", "--export", exports["onnx"], "--image-size", "32", image], "--image-size"),
        (["predict", "--export", exports["onnx"], "--checkpoint", "best", image],
         "--checkpoint does not apply to --export"),
        (["evaluate", "--model-dir", str(tmp_path), "--image-size", "32"],
         "--image-size does not apply to --model-dir"),
        (["evaluate", "--export", exports["onnx"], "--data", str(root), "--json", str(root)],
         "is a directory; give a file path"),
    ]
    for args, message in cases:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (args, err)


def test_damaged_exports_are_one_sentence(tiny_exports, tmp_path, capsys):
    import shutil

    root, exports, image = tiny_exports
    damages = {"onnx": "model.onnx", "openvino": "model.bin", "saved_model": "saved_model.pb",
               "tflite": "model.tflite"}
    for fmt, name in damages.items():
        damaged = tmp_path / fmt
        shutil.copytree(exports[fmt], damaged)
        with open(damaged / name, "r+b") as f:
            f.truncate(os.path.getsize(damaged / name) // 3)
        assert cli.main(["predict", "--export", str(damaged), image]) == 2, fmt
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "may be damaged: export it again" in err, (fmt, err)
    missing = tmp_path / "no-info"
    shutil.copytree(exports["onnx"], missing)
    os.remove(missing / "preprocessing.json")
    assert cli.main(["predict", "--export", str(missing), image]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no preprocessing.json" in err


def test_a_malformed_tf_config_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}')
    assert cli.main(["train", "--config", "quickstart", "--model-dir", str(tmp_path / "r"),
                     "--distribute", "multiworker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TF_CONFIG is not a valid cluster description" in err
    assert not (tmp_path / "r").exists()
