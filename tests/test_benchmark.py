"""resnet-tf bench: the seed's report format and statistics, and the options (tiny settings)."""

import json
import math
import re

import pytest

import resnet_tf_cli as cli
from resnet_tf.commands.benchmark import Timing, time_run

STEP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}: step (\d+), duration = \d+\.\d{3}$")
SUMMARY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}: (.+) across (\d+) steps, "
                     r"(\d+\.\d{3}) \+/- (\d+\.\d{3}) sec / batch$")


def test_statistics_are_the_seeds():
    timing = Timing("Forward", [0.1, 0.2, 0.3, 0.6])
    mean = 0.3
    assert timing.mean == pytest.approx(mean)
    # sqrt(E[d^2] - E[d]^2), the population standard deviation
    assert timing.sd == pytest.approx(math.sqrt((0.01 + 0.04 + 0.09 + 0.36) / 4 - mean ** 2))
    assert timing.median == pytest.approx(0.25)
    assert Timing("x", [0.2, 0.2, 0.2]).sd == 0.0  # no negative variance from rounding


def test_time_run_prints_the_seeds_lines_at_the_seeds_steps():
    lines, calls = [], []
    timing = time_run(lambda: calls.append(1), "Forward", num_batches=25, burn_in=3,
                      log=lines.append)
    assert len(calls) == 28 and len(timing.durations) == 25
    # The seed prints when the overall index (burn-in included) is a multiple of 10.
    assert [int(STEP.match(line).group(1)) for line in lines[:-1]] == [7, 17]
    info, steps, mean, sd = SUMMARY.match(lines[-1]).groups()
    assert (info, steps) == ("Forward", "25")


def test_time_run_rejects_bad_counts():
    with pytest.raises(ValueError, match="num_batches=0"):
        time_run(lambda: None, "Forward", num_batches=0)
    with pytest.raises(ValueError, match="burn_in=-1"):
        time_run(lambda: None, "Forward", burn_in=-1)


def test_bench_forward_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--model", "resnet_v2_50", "--batch-size", "2", "--image-size",
                     "32", "--num-batches", "11", "--burn-in", "10", "--num-classes", "10",
                     "--json", str(path)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [int(STEP.match(line).group(1)) for line in lines[:-1]] == [0, 10]
    assert SUMMARY.match(lines[-1]).group(1) == "Forward"
    report = json.loads(path.read_text())
    (result,) = report["results"]
    assert (result["name"], result["runtime"], result["precision"]) == ("resnet_tf", "keras",
                                                                        "float32")
    assert len(result["durations"]) == 11
    assert result["images_per_s"] == pytest.approx(2 / result["median_s"])
    assert report["backend"] == "tensorflow" and report["device"].split(":")[0] in ("cpu", "gpu")
    assert {"keras", "tensorflow", "python"} <= set(report["versions"])


@pytest.mark.large
def test_bench_forward_backward_against_keras_applications(capsys):
    code = cli.main(["bench", "--model", "resnet_v2_50", "--batch-size", "2", "--image-size",
                     "32", "--num-batches", "2", "--burn-in", "1", "--num-classes", "5",
                     "--mode", "forward-backward", "--dtype", "mixed_bfloat16",
                     "--compare", "keras-applications"])
    assert code == 0
    out = capsys.readouterr().out
    infos = [m.group(1) for m in map(SUMMARY.match, out.splitlines()) if m]
    assert infos == ["Forward-backward (resnet_tf)", "Forward-backward (keras.applications)"]
    assert "the speed of keras.applications" in out


def test_bench_rejects_models_keras_applications_lacks(capsys):
    code = cli.main(["bench", "--model", "resnet_v2_200", "--image-size", "32",
                     "--compare", "keras-applications", "--num-batches", "1"])
    assert code == 2
    assert "model='resnet_v2_200'" in capsys.readouterr().err


def test_bench_option_errors_are_argparse_errors(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--batch-size", "0"])
    assert "--batch-size" in capsys.readouterr().err


# Runs the command with TensorFlow made unimportable, as on a machine without it.
WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None
from resnet_tf_cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.large
def test_bench_on_the_jax_backend_without_tensorflow(tmp_path):
    import os
    import subprocess
    import sys

    pytest.importorskip("jax")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    path = tmp_path / "jax.json"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, "bench", "--model", "resnet_v2_50",
         "--batch-size", "2", "--image-size", "32", "--num-batches", "2", "--burn-in", "1",
         "--mode", "forward-backward", "--json", str(path)],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert SUMMARY.match(result.stdout.strip().splitlines()[-1]).group(1) == "Forward-backward"
    report = json.loads(path.read_text())
    assert report["backend"] == "jax" and report["device"].split(":")[0] in ("cpu", "gpu")
    assert "tensorflow" not in report["versions"]
    # The Keras runtime entries of --runtimes need no TensorFlow either.
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, "bench", "--model", "resnet_v2_18",
         "--batch-size", "2", "--image-size", "32", "--num-batches", "2", "--burn-in", "1",
         "--runtimes", "keras:float32,keras:bfloat16"],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "keras:bfloat16" in result.stdout.splitlines()[-1]


@pytest.mark.large
def test_bench_runtimes_interleaved_report_and_json(tmp_path, capsys):
    path = tmp_path / "runtimes.json"
    runtimes = "keras:float32,keras:bfloat16,tflite:int8,onnxruntime:float32,openvino:bfloat16"
    code = cli.main(["bench", "--model", "resnet_v2_18", "--batch-size", "2", "--image-size",
                     "32", "--num-batches", "3", "--burn-in", "1", "--num-classes", "4",
                     "--runtimes", runtimes, "--json", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    infos = [m.group(1) for m in map(SUMMARY.match, out.splitlines()) if m]
    assert infos == [f"Forward ({name})" for name in runtimes.split(",")]
    assert "calibrated on 32 random images" in out  # int8 timing says so
    table = out.strip().splitlines()[-5:]
    assert [line.split()[0] for line in table] == runtimes.split(",")
    assert table[0].split()[-1] == "1.00x"
    report = json.loads(path.read_text())
    assert [(r["runtime"], r["precision"]) for r in report["results"]] == [
        tuple(entry.split(":")) for entry in runtimes.split(",")]
    for result in report["results"]:
        assert set(result) >= {"runtime", "precision", "median_s", "mean_s", "sd_s",
                               "images_per_s", "durations"}
        assert len(result["durations"]) == 3
    assert report["machine"]["cores"] >= 1 and "tensorflow" in report["versions"]


def test_bench_runtimes_errors_are_sentences(capsys):
    assert cli.main(["bench", "--runtimes", "keras:float32,tensorrt:int8"]) == 2
    assert "unknown entry 'tensorrt:int8'" in capsys.readouterr().err
    assert cli.main(["bench", "--runtimes", "onnxruntime:float16"]) == 2
    assert "known: keras:float32" in capsys.readouterr().err
    assert cli.main(["bench", "--runtimes", "keras:float32", "--compare",
                     "keras-applications"]) == 2
    assert "leave out --mode, --compare" in capsys.readouterr().err
