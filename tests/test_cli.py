"""The resnet-tf command: --help at once and quiet, one sentence per user error, and a plain
`pip install .` that works from any directory."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from resnet_tf import benchmark, cli, config, export_dir, runtimes, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(*args, cwd=ROOT, env=None, python=sys.executable):
    return subprocess.run([python, "-m", "resnet_tf.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


def test_help_answers_at_once_without_tensorflow():
    began = time.perf_counter()
    result = command("--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "train,export,predict,evaluate,download,bench" in result.stdout.replace(" ", "")
    assert time.perf_counter() - began < 3  # TensorFlow alone takes ~4 s to import
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from resnet_tf.cli import build_parser; "
         "sys.argv = ['resnet-tf']; build_parser().parse_args(['export', '--help'])"],
        capture_output=True, text=True, cwd=ROOT)
    assert loaded.returncode == 0
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "resnet_tf.cli", "bench", "--help"],
        capture_output=True, text=True, cwd=ROOT)
    imported = {line.split("|")[-1].strip() for line in probe.stderr.splitlines()}
    assert not {"tensorflow", "keras", "jax"} & imported


def test_the_cli_choices_are_the_modules_choices():
    """The command line offers the modules' own choices (no copies to keep in step)."""
    assert cli.FORMATS is export_dir.FORMATS and cli.PRECISIONS is export_dir.PRECISIONS
    assert cli.MODES is benchmark.MODES and cli.COMPARE is benchmark.COMPARE
    assert cli.DISTRIBUTE is config.DISTRIBUTE and cli.DTYPES is config.DTYPES
    assert set(runtimes.FORMAT_OF_RUNTIME.values()) == set(export_dir.FORMATS) - {"saved_model"}


def test_a_run_prints_no_tensorflow_noise(tmp_path):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = command("evaluate", "--model-dir", str(tmp_path / "none"), env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"resnet-tf evaluate: error: No trained model in '{tmp_path / 'none'}' (no config.yaml: "
        "run `resnet-tf train` first)"]
    verbose = command("--verbose", "evaluate", "--model-dir", str(tmp_path / "none"), env=env)
    assert len(verbose.stderr.strip().splitlines()) > 1  # TensorFlow's start-up logging


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
    from resnet_tf.config import config_from_dict
    from resnet_tf.model_dir import ModelDir

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


@pytest.mark.slow
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
