"""resnet-tf export --format tflite|onnx|openvino: each file run by its own runtime alone, in a
process that does not import resnet_tf, on the trained quickstart and its real digits."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import resnet_tf_command, tiered

from resnet_tf.data import preprocessing
from resnet_tf.data.datasets import digits_arrays
from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.export.deploy import export_model
from resnet_tf.export.export_dir import check_output
from resnet_tf.export.int8 import Int8Options
from resnet_tf.training.loading import load_model_dir
from resnet_tf_cli import main

# Runs an export with its runtime only: no resnet_tf, no TensorFlow for the runtime formats.
RUN_ALONE = r"""
import json, sys
import numpy as np
fmt, path, pixels_path = sys.argv[1:4]
pixels = np.load(pixels_path)
if fmt == "tflite":
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path + "/model.tflite", num_threads=2)
    runner = interpreter.get_signature_runner("serving_default")
    probabilities = runner(images=pixels)["probabilities"]
    # really quantized: int8 weight tensors present
    kinds = sorted({d["dtype"].__name__ for d in interpreter.get_tensor_details()})
elif fmt == "onnx":
    import onnx, onnxruntime
    options = onnxruntime.SessionOptions()
    info = json.load(open(path + "/preprocessing.json"))
    for key, value in info.get("onnxruntime_session_config", {}).items():  # the contract's
        options.add_session_config_entry(key, value)
    session = onnxruntime.InferenceSession(path + "/model.onnx", options,
                                           providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"images": pixels})[0]
    graph = onnx.load(path + "/model.onnx").graph
    kinds = sorted({onnx.TensorProto.DataType.Name(t.data_type) for t in graph.initializer} |
                   {n.op_type for n in graph.node if "Quantize" in n.op_type})
    shape = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
else:
    import openvino as ov
    model = ov.Core().read_model(path + "/model.xml")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    probabilities = compiled({"images": pixels})[compiled.output("probabilities")]
    kinds = sorted({op.get_type_name() for op in model.get_ops() if "Quantize" in
                    op.get_type_name()} | {op.get_element_type().get_type_name() for op in model.get_ops()
                                            if op.get_type_name() == "Constant"})
print(json.dumps({"probabilities": np.asarray(probabilities).tolist(), "kinds": kinds,
                  "imported": sorted(m for m in ("resnet_tf", "tensorflow", "keras")
                                     if m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, quickstart_run):
    """The README's quickstart, trained (real digits; the session's shared run, read-only),
    and its validation pixels and labels."""
    root = tmp_path_factory.mktemp("deploy")
    model_dir = quickstart_run
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    model, config, _ = load_model_dir(model_dir)
    _, (x_val, y_val) = digits_arrays(0.2, config.seed)
    pixels = preprocessing.prepare_pixels(tf.constant(x_val),
                                          config.eval_preprocessing()).numpy()
    np.save(root / "pixels.npy", pixels)
    scaled = preprocessing.scale_to_signed_unit(pixels / 255.0)
    expected = tf.nn.softmax(model(scaled, training=False)).numpy()
    return dict(root=root, model_dir=model_dir, metrics=metrics, model=model, config=config,
                pixels=pixels, labels=y_val, expected=expected)


def run_alone(fmt, path, pixels_path):
    result = subprocess.run([sys.executable, "-c", RUN_ALONE, fmt, path, str(pixels_path)],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


CASES = [("tflite", "float32"), ("tflite", "float16"), ("tflite", "int8"),
         ("onnx", "float32"), ("onnx", "int8"),
         ("openvino", "float32"), ("openvino", "float16"), ("openvino", "int8")]


@pytest.mark.parametrize("fmt,precision", tiered(CASES, [
    ("tflite", "float32"), ("tflite", "int8"), ("onnx", "float32"), ("openvino", "float32")]))
def test_each_format_runs_alone_with_the_keras_numbers(quickstart, fmt, precision):
    output = str(quickstart["root"] / f"{fmt}-{precision}")
    assert main(["export", "--model-dir", quickstart["model_dir"], "--output", output,
                 "--format", fmt, "--precision", precision]) == 0
    info = json.load(open(os.path.join(output, "preprocessing.json")))
    assert (info["format"], info["precision"], info["image_size"]) == (fmt, precision, 16)
    assert info["caller_applies"] == ["central_crop", "resize"] and info["value_range"] == [0,
                                                                                            255]
    assert open(os.path.join(output, "class_names.txt")).read().split() == [str(i)
                                                                             for i in range(10)]
    served = run_alone(fmt, output, quickstart["root"] / "pixels.npy")
    assert served["imported"] == []  # the runtime alone
    probabilities = np.array(served["probabilities"])
    expected, labels = quickstart["expected"], quickstart["labels"]
    assert probabilities.shape == expected.shape
    # TFLite's int8 softmax has 1/256 steps: its rows sum to 1 within a few steps.
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-3 if precision != "int8"
                               else 2e-2)
    if precision == "float32":
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    elif precision == "float16":
        np.testing.assert_allclose(probabilities, expected, atol=0.05)
        assert np.mean(probabilities.argmax(-1) == expected.argmax(-1)) >= 0.99
    else:
        # Real int8: integer weights inside, and top-1 within a point of float32 on real digits.
        assert {"int8", "INT8", "i8"} & set(served["kinds"]), served["kinds"]
        float_top1 = np.mean(expected.argmax(-1) == labels)
        assert np.mean(probabilities.argmax(-1) == labels) >= float_top1 - 0.01
        assert not np.allclose(probabilities, expected, atol=1e-4)  # it did change
    # One image alone scores as in the batch (dynamic batch dimension).
    one = np.array(run_alone(fmt, output, _save(quickstart["root"], quickstart["pixels"][:1]))[
        "probabilities"])
    np.testing.assert_allclose(one[0], probabilities[0], atol=1e-4 if precision != "int8"
                               else 2e-2)


def _save(root, array):
    path = root / "one.npy"
    np.save(path, array)
    return path


def test_evaluate_reproduces_training_and_reads_every_source(quickstart, tmp_path, capsys):
    from image_data import write_image_folder, write_slim_tfrecord

    model_dir = quickstart["model_dir"]
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--model-dir", model_dir, "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["top1"] == pytest.approx(quickstart["metrics"]["val_accuracy"], abs=1e-6)
    assert (result["count"], result["runtime"], result["precision"]) == (359, "keras",
                                                                          "float32")
    assert 0 < result["top5"] <= 1 and result["images_per_s"] > 0
    assert "top-1 0.9" in capsys.readouterr().out
    # The same numbers through a float32 export and its runtime, with the config named.
    export = str(quickstart["root"] / "onnx-float32")
    if not os.path.isdir(export):
        export_model(quickstart["model"], export, EvalPreprocessing("inception", 16, 1.0),
                     format="onnx", class_names=[str(i) for i in range(10)])
    assert main(["evaluate", "--export", export, "--config", "quickstart", "--json",
                 str(report)]) == 0
    assert json.loads(report.read_text())["top1"] == pytest.approx(result["top1"], abs=1e-6)
    # An image folder whose sub-folders are class names, and slim TFRecords (labels 1..).
    digits = {str(d): (0, 0, 0) for d in range(3)}
    folder = write_image_folder(tmp_path / "folder", per_class=2, classes=digits)
    assert main(["evaluate", "--model-dir", model_dir, "--data", folder]) == 0
    assert "over 6 images" in capsys.readouterr().out
    write_slim_tfrecord(tmp_path / "val.tfrecord", count=5, label_base=1)
    assert main(["evaluate", "--model-dir", model_dir, "--tfrecords",
                 str(tmp_path / "val.tfrecord")]) == 0
    assert "over 5 images" in capsys.readouterr().out
    # A folder whose names are not the model's classes is a sentence.
    other = write_image_folder(tmp_path / "colours", per_class=1)
    assert main(["evaluate", "--model-dir", model_dir, "--data", other]) == 2
    assert "are not classes of the model" in capsys.readouterr().err


@pytest.mark.large
def test_slim_checkpoint_int8_needs_real_calibration_data(tmp_path, capsys):
    from image_data import write_image_folder
    from slim_reference import save_slim_checkpoint

    from resnet_tf import resnet_v2_50, slim_variables

    model = resnet_v2_50(num_classes=1001)
    values = {name: np.asarray(v) for name, v in slim_variables(model).items()}
    checkpoint = save_slim_checkpoint(values, str(tmp_path / "resnet_v2_50.ckpt"))
    args = ["export", "--slim-checkpoint", checkpoint, "--output", str(tmp_path / "q"),
            "--format", "tflite", "--precision", "int8", "--image-size", "32"]
    assert main(args) == 2
    assert "needs --calibration-data" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "q")
    folder = write_image_folder(tmp_path / "calib", per_class=2)
    assert main(args + ["--calibration-data", folder]) == 0
    assert "Calibrating int8 on 6 images" in capsys.readouterr().out
    # The Python API refuses int8 without calibration images too.
    with pytest.raises(ValueError, match="never calibrates on random data"):
        export_model(model, str(tmp_path / "r"), EvalPreprocessing("inception", 32), format="onnx",
                     precision="int8")


def test_unsupported_and_missing_runtimes_are_one_sentence(quickstart, tmp_path, capsys,
                                                           monkeypatch):
    model_dir = quickstart["model_dir"]
    assert main(["export", "--model-dir", model_dir, "--output", str(tmp_path / "x"),
                 "--format", "onnx", "--precision", "float16"]) == 2
    assert "no float16 convolutions" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    assert main(["export", "--model-dir", model_dir, "--output", str(tmp_path / "x"),
                 "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'resnet_tf[deploy]'" in err
    assert not os.path.exists(tmp_path / "x")


def test_overwrite_replaces_only_an_earlier_export(quickstart, tmp_path, capsys):
    model_dir = quickstart["model_dir"]
    before = sorted(os.listdir(model_dir))
    # The model dir itself, a file, a foreign dir: refused with a sentence, nothing touched.
    for output in (model_dir, str(tmp_path / "file.txt"), str(tmp_path / "mine")):
        if output.endswith(".txt"):
            open(output, "w").write("keep")
        elif output.endswith("mine"):
            os.makedirs(output)
            open(os.path.join(output, "notes.txt"), "w").write("keep")
        assert main(["export", "--model-dir", model_dir, "--output", output,
                     "--overwrite"]) == 2
        assert "error:" in capsys.readouterr().err
    assert sorted(os.listdir(model_dir)) == before
    assert open(tmp_path / "mine" / "notes.txt").read() == "keep"
    # An earlier export (any format) is replaced whole.
    target = str(tmp_path / "export")
    assert main(["export", "--model-dir", model_dir, "--output", target, "--format",
                 "tflite"]) == 0
    assert main(["export", "--model-dir", model_dir, "--output", target]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "--model-dir", model_dir, "--output", target, "--format",
                 "openvino", "--overwrite"]) == 0
    assert sorted(os.listdir(target)) == ["class_names.txt", "model.bin", "model.xml",
                                          "preprocessing.json"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".export-")]
    with pytest.raises(ValueError, match="is a file"):
        check_output(str(tmp_path / "file.txt" / "sub"), overwrite=True)


def test_predict_with_a_runtime_export(quickstart, tmp_path, capsys):
    export = str(quickstart["root"] / "tflite-float32")
    if not os.path.isdir(export):
        export_model(quickstart["model"], export, EvalPreprocessing("inception", 16, 1.0),
                     format="tflite", class_names=[str(i) for i in range(10)])
    image = tmp_path / "digit.png"
    x_val = digits_arrays(0.2, 0)[1][0]
    image.write_bytes(tf.io.encode_png(x_val[0]).numpy())
    assert main(["predict", "--export", export, "--top", "2", str(image)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    best = int(quickstart["expected"][0].argmax())
    assert lines[1].split()[1:] == [str(best), f"({best})"]
    assert float(lines[1].split()[0]) == pytest.approx(quickstart["expected"][0, best],
                                                       abs=1e-4)


def test_a_mixed_precision_model_exports_as_float32():
    """A model trained under mixed_bfloat16 keeps float32 variables; its exports compute in
    float32 (a copy with float32 policies and the same weights)."""
    from resnet_tf import resnet_v2, resnet_v2_block
    from resnet_tf.models.precision import dtype_policy_scope, float32_model

    blocks = [resnet_v2_block("block1", 2, 1, 2)]
    with dtype_policy_scope("mixed_bfloat16"):
        mixed = resnet_v2(blocks, num_classes=3, include_root_block=False)
    reference = resnet_v2(blocks, num_classes=3, include_root_block=False)
    reference.set_weights(mixed.get_weights())
    copy = float32_model(mixed)
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    assert float32_model(reference) is reference
    images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(copy(images, training=False),
                                  reference(images, training=False))


# --------------------------------------------------------------------------------------------
# int8 measured at export, and bounded


def cli_json(*args):
    """`resnet-tf` in a subprocess, as a user runs it, which must succeed."""
    result = resnet_tf_command(*args)
    assert result.returncode == 0, (args, result.stderr[-3000:])
    return result


FLOAT_FILES = {"tflite": ["model.tflite"], "onnx": ["model.onnx"],
               "openvino": ["model.xml", "model.bin"]}


def size_of(path, fmt):
    return sum(os.path.getsize(os.path.join(path, f)) for f in FLOAT_FILES[fmt])


@pytest.mark.large
@pytest.mark.parametrize("fmt", ["tflite", "onnx", "openvino"])
def test_int8_accuracy_is_measured_bounded_and_reproduced(quickstart, tmp_path, fmt):
    """`export --precision int8 --max-accuracy-drop 0.003`: accuracy.json holds the int8 file's
    top-1 with its own runtime beside float32's on the run's validation images; an independent
    `evaluate --export` reproduces it, within the bound of `evaluate --model-dir`; the file is
    at most 0.6 of float32's; the same command twice gives the same figures (and bytes)."""
    model_dir = quickstart["model_dir"]
    output = str(tmp_path / "int8")
    result = cli_json("export", "--model-dir", model_dir, "--output", output, "--format", fmt,
                      "--precision", "int8", "--max-accuracy-drop", "0.003")
    assert "over 359 images" in result.stdout
    accuracy = json.load(open(os.path.join(output, "accuracy.json")))
    for key in ("top1", "top5", "count", "reference_top1", "drop", "float_layers", "data",
                "runtime"):
        assert key in accuracy, key
    assert accuracy["count"] == 359 and accuracy["drop"] <= 0.003
    assert accuracy["drop"] == pytest.approx(accuracy["reference_top1"] - accuracy["top1"],
                                             abs=1e-6)
    assert accuracy["data"].startswith("the validation images recorded in")
    assert accuracy["reference_top1"] == pytest.approx(quickstart["metrics"]["val_accuracy"],
                                                       abs=1e-6)
    cli_json("evaluate", "--export", output, "--config", "quickstart", "--json",
             str(tmp_path / "e.json"))
    evaluated = json.load(open(tmp_path / "e.json"))
    assert abs(evaluated["top1"] - accuracy["top1"]) <= 1 / 359 + 1e-9
    assert quickstart["metrics"]["val_accuracy"] - evaluated["top1"] <= 0.003 + 1 / 359
    cli_json("export", "--model-dir", model_dir, "--output", str(tmp_path / "f32"), "--format",
             fmt)
    assert size_of(output, fmt) <= 0.6 * size_of(str(tmp_path / "f32"), fmt)
    # Every layer named as float really is float in the file the runtime runs alone.
    served = run_alone(fmt, output, quickstart["root"] / "pixels.npy")
    assert served["imported"] == []
    again = str(tmp_path / "again")
    cli_json("export", "--model-dir", model_dir, "--output", again, "--format", fmt,
             "--precision", "int8", "--max-accuracy-drop", "0.003")
    assert json.load(open(os.path.join(again, "accuracy.json"))) == accuracy
    if fmt != "openvino":  # OpenVINO's xml names ops by a per-process counter; its .bin is equal
        assert open(os.path.join(again, FLOAT_FILES[fmt][0]), "rb").read() == \
            open(os.path.join(output, FLOAT_FILES[fmt][0]), "rb").read()
    else:
        assert open(os.path.join(again, "model.bin"), "rb").read() == \
            open(os.path.join(output, "model.bin"), "rb").read()


@pytest.mark.large
def test_a_bound_that_cannot_be_met_is_one_sentence_and_no_export(quickstart, tmp_path,
                                                                  capsys):
    """Calibrated on images unlike the data (near-black), no mix of float convolutions
    recovers the accuracy: the export names the best drop it reached and writes nothing."""
    from image_data import write_image_folder

    dark = write_image_folder(tmp_path / "dark", per_class=4,
                              classes={str(d): (1, 1, 1) for d in range(10)})
    output = tmp_path / "refused"
    code = main(["export", "--model-dir", quickstart["model_dir"], "--output", str(output),
                 "--format", "onnx", "--precision", "int8", "--calibration-data", dark,
                 "--calibration-images", "40", "--max-accuracy-drop", "0.01"])
    err = capsys.readouterr().err
    assert code == 2 and not output.exists()
    assert err.count("\n") == 1 and "the best reached was a drop of" in err
    assert "nothing was written" in err
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".export-")]
    # TFLite: such a calibration makes int32 biases overflow, a file that would abort LiteRT.
    code = main(["export", "--model-dir", quickstart["model_dir"], "--output", str(output),
                 "--format", "tflite", "--precision", "int8", "--calibration-data", dark])
    err = capsys.readouterr().err
    assert code == 2 and not output.exists() and "the int8 biases overflow" in err


def test_int8_without_labelled_images_says_its_accuracy_was_not_measured(quickstart, tmp_path,
                                                                          capsys):
    from image_data import write_image_folder

    calibration = write_image_folder(tmp_path / "calib", per_class=3,
                                     classes={str(d): (d * 20, 0, 0) for d in range(10)})
    export_model(quickstart["model"], str(tmp_path / "e"), EvalPreprocessing("inception", 16, 1.0),
                 format="onnx", precision="int8",
                 quantization=Int8Options(calibration=quickstart["pixels"][:32]))
    assert "int8 accuracy not measured" in capsys.readouterr().out
    assert json.load(open(tmp_path / "e" / "accuracy.json"))["measured"] is False
    # --validation-data: a folder named as the model's classes.
    assert main(["export", "--model-dir", quickstart["model_dir"], "--output",
                 str(tmp_path / "v"), "--format", "onnx", "--precision", "int8",
                 "--validation-data", calibration]) == 0
    accuracy = json.load(open(tmp_path / "v" / "accuracy.json"))
    assert accuracy["count"] == 30 and accuracy["data"] == f"the image folder {calibration}"
    # The CPU it was measured on, with the instruction sets int8 kernels depend on.
    from resnet_tf.machine import cpu_features

    assert accuracy["cpu"] == dict(accuracy["cpu"], **cpu_features())
    assert {"processor", "vnni", "avx512", "amx"} <= set(accuracy["cpu"])
    for args, message in ((["--validation-data", calibration], "is for --precision int8"),
                          (["--max-accuracy-drop", "0.01"], "is for --precision int8")):
        assert main(["export", "--model-dir", quickstart["model_dir"], "--output",
                     str(tmp_path / "x"), "--format", "onnx", *args]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.large
def test_bench_times_exports_beside_each_other(quickstart, tmp_path, capsys):
    exports = []
    for fmt in ("tflite", "onnx"):
        path = str(tmp_path / fmt)
        export_model(quickstart["model"], path, EvalPreprocessing("inception", 16, 1.0),
                     format=fmt, precision="int8",
                     quantization=Int8Options(calibration=quickstart["pixels"][:64]))
        exports.append(path)
    assert main(["bench", "--exports", ",".join(exports), "--num-batches", "3", "--burn-in", "1",
                 "--batch-size", "4", "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "tflite:int8" in out and "onnxruntime:int8" in out and "1.00x" in out
    report = json.load(open(tmp_path / "b.json"))
    assert [r["name"] for r in report["results"]] == exports


KEPT_FLOAT = ["block2.unit_1.bottleneck_v2/conv2", "logits"]

# Which convolutions of an int8 file compute in float, by the file alone (no resnet_tf).
FLOAT_CONVS = r"""
import json, sys
import numpy as np
fmt, path = sys.argv[1:3]
if fmt == "tflite":
    from ai_edge_litert import schema_py_generated as schema  # the file's flatbuffer schema
    model = schema.Model.GetRootAs(open(path + "/model.tflite", "rb").read(), 0)
    graph = model.Subgraphs(0)
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    convs = [op for op in ops if max(model.OperatorCodes(op.OpcodeIndex()).BuiltinCode(),
             model.OperatorCodes(op.OpcodeIndex()).DeprecatedBuiltinCode())
             == schema.BuiltinOperator.CONV_2D]
    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if k.isupper()}
    kinds = [names[graph.Tensors(op.Inputs(1)).Type()] for op in convs]
elif fmt == "onnx":
    import onnx
    graph = onnx.load(path + "/model.onnx").graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    kinds = ["int8" if made_by.get(n.input[1]) == "DequantizeLinear" else "float32"
             for n in convs]
else:
    import openvino as ov
    model = ov.Core().read_model(path + "/model.xml")
    kinds = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Convolution":
            source = op.input_value(0).get_node().get_type_name()
            kinds.append("int8" if source == "FakeQuantize" else "float32")
print(json.dumps({"kinds": kinds}))
"""


def float_conv_count(fmt, path):
    result = subprocess.run([sys.executable, "-c", FLOAT_CONVS, fmt, str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    kinds = json.loads(result.stdout.strip().splitlines()[-1])["kinds"]
    return sum(kind == "float32" for kind in kinds), len(kinds)


@pytest.mark.large
@pytest.mark.parametrize("fmt", ["tflite", "onnx", "openvino"])
def test_a_root_convolution_can_be_kept_in_float(tmp_path, fmt):
    """A net with a root block (here the CIFAR ResNet): its first convolution, into which
    OpenVINO folds the input normalization, is found and kept in float like any other."""
    from resnet_tf.export.deploy import serving_function, write_serving_saved_model
    from resnet_tf.export.formats import FORMATS
    from resnet_tf.training.config import config_from_dict
    from resnet_tf.training.trainer import build_model

    config = config_from_dict(dict(dataset="digits", image_size=32, preprocessing="cifar",
                                   model="cifar_resnet_v1", depth=8, shortcut="A"))
    model = build_model(config, 10)
    rng = np.random.default_rng(0)
    for weight in model.weights:  # batch norm statistics as after training
        if "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
    prep = config.eval_preprocessing()
    serve = serving_function(model, prep)
    write_serving_saved_model(serve, model, str(tmp_path / "sm"))
    pixels = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    quantizer = FORMATS[fmt].make_quantizer(model, serve, str(tmp_path / "sm"), pixels,
                                            str(tmp_path))
    counts = {}
    for name, layers in (("full", []), ("kept", ["conv1"])):
        os.makedirs(tmp_path / name)
        quantizer.write(layers, str(tmp_path / name))
        counts[name], total = float_conv_count(fmt, tmp_path / name)
        assert total >= 8
    assert counts["kept"] - counts["full"] == 1, counts


@pytest.mark.large
@pytest.mark.parametrize("fmt", ["tflite", "onnx", "openvino"])
def test_layers_kept_in_float_are_float_in_the_file_and_run(quickstart, tmp_path, fmt):
    """Each runtime's mechanism keeps exactly the named convolutions in float, and the file
    runs with its runtime alone (ONNX with the session config preprocessing.json names)."""
    from resnet_tf.data.pixels import EvalPreprocessing
    from resnet_tf.export.deploy import serving_function, write_serving_saved_model
    from resnet_tf.export.formats import FORMATS

    model = quickstart["model"]
    prep = EvalPreprocessing("inception", 16, 1.0)
    serve = serving_function(model, prep)
    write_serving_saved_model(serve, model, str(tmp_path / "sm"))
    quantizer = FORMATS[fmt].make_quantizer(model, serve, str(tmp_path / "sm"),
                                            quickstart["pixels"][:64], str(tmp_path))
    counts = {}
    for name, layers in (("full", []), ("kept", KEPT_FLOAT)):
        os.makedirs(tmp_path / name)
        quantizer.write(layers, str(tmp_path / name))
        counts[name], total = float_conv_count(fmt, tmp_path / name)
        assert total >= 12
    assert counts["kept"] - counts["full"] == len(KEPT_FLOAT), counts
    # The exported dir (through export_model's bound) runs alone with its own contract.
    output = str(tmp_path / "bounded")
    export_model(model, output, EvalPreprocessing("inception", 16, 1.0), format=fmt,
                 precision="int8", quantization=Int8Options(calibration=quickstart["pixels"][:64]))
    served = run_alone(fmt, output, quickstart["root"] / "pixels.npy")
    assert served["imported"] == []
