"""The export formats, one module each: everything about a runtime in one place.

    from resnet_tf.export.formats import FORMATS
    FORMATS["onnx"].open_runner(export_dir, "int8")

A format module holds, for its runtime:

  NAME, RUNTIME, FILES     `--format NAME`; what runs it (`bench --runtimes RUNTIME:...`); the
                           file(s) of an export dir, the first being what the runner opens
  RUNTIME_PRECISIONS       the precisions its runner runs (bench)
  UNSUPPORTED              {precision: why not}: what `export` refuses, in one sentence
  CONVERTERS               (module, what) pairs the export needs: a missing one is one line
  FROM_SERVING_FUNCTION    True: converted from `deploy.serving_function`'s SavedModel by
                           `write_float(serve, saved_model, target, precision)`; False:
                           `write_model(model, target, prep)` (the SavedModel itself)
  PREPARES_IMAGES          True: the file crops, resizes and normalises raw images itself
  CLASS_NAMES_DIR          where in an export dir class_names.txt goes ("" the dir itself)
  STORED_PRECISION         {runtime precision: the file's}: a precision the runtime computes
                           in from a file of another (OpenVINO's bfloat16 from float32)
  make_quantizer(...)      the post-training int8 quantizer (`int8.Quantizer`): `write(
                           float_layers, target)` keeps the named layers in float, so that the
                           generic bound search (`int8.bounded`) works on every format
  write_quantization_aware(serve, saved_model, target)
                           the int8 file of a quantization-aware model (no calibration)
  int8_info()              what an int8 file's preprocessing.json adds for its runtime
  open_runner(path, precision, prep, threads)
                           the runtime on an export dir: an `export.runner.Runner`

Adding a runtime is adding its module here and to `FORMATS` (docs/architecture.md). No module
imports TensorFlow or a runtime at its top.
"""

from resnet_tf.export.formats import onnx, openvino, saved_model, tflite

FORMATS = {module.NAME: module for module in (saved_model, tflite, onnx, openvino)}
