"""The package's layout rules, checked: one-way imports, no private modules of Keras or
TensorFlow, Keras-only model code, TensorFlow only where its modules are, runtimes lazily."""

import ast
import os
import subprocess
import sys

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resnet_tf")
MODULES = sorted(name[:-3] for name in os.listdir(PACKAGE)
                 if name.endswith(".py") and name != "__init__.py")

# The model code: Keras only, on every backend; TensorFlow is never imported, not even lazily.
MODEL_CODE = ("layers", "units", "resnet_utils", "resnet_v1", "resnet_v2", "cifar",
              "feature_extraction", "slim_variables", "quantizers", "quantization", "precision",
              "registry", "pixels", "errors", "utils")
# TensorFlow's own modules (tf.data, checkpoints, SavedModels, converters).
TENSORFLOW_MODULES = ("data", "preprocessing", "training", "slim_checkpoint", "deploy", "int8",
                      "evaluate", "predict")
# Runtimes and converters: imported inside the functions that use them, never at the top.
RUNTIME_PACKAGES = ("ai_edge_litert", "onnxruntime", "onnx", "tf2onnx", "openvino", "nncf")


def imports(module):
    """(top-level imports, all imports) of a module, as dotted names."""
    tree = ast.parse(open(os.path.join(PACKAGE, f"{module}.py")).read())
    top, every = set(), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        every.update(names)
        if node in tree.body:
            top.update(names)
    return top, every


def test_every_module_is_in_one_of_the_lists():
    assert set(MODULES) == set(MODEL_CODE) | set(TENSORFLOW_MODULES) | {
        "loading", "model_dir", "export_dir", "config", "weights", "runtimes", "benchmark",
        "cli"}


def test_the_package_docstring_lists_the_same_modules():
    import re

    import resnet_tf

    text = " ".join(resnet_tf.__doc__.split())
    model, tensorflow = re.search(r"Model code \((.*?)\) uses only Keras.*?modules \((.*?)\)",
                                  text).groups()
    assert sorted(re.findall(r"`(\w+)`", model)) == sorted(set(MODEL_CODE) - {"errors", "utils"})
    assert sorted(re.findall(r"`(\w+)`", tensorflow)) == sorted(TENSORFLOW_MODULES)


def test_no_import_cycle_among_the_modules():
    graph = {module: {name.split(".")[1] for name in imports(module)[1]
                      if name.startswith("resnet_tf.") and name.split(".")[1] in MODULES}
             for module in MODULES}
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            raise AssertionError("import cycle: " + " -> ".join(
                visiting[visiting.index(module):] + [module]))
        if module in done:
            return
        visiting.append(module)
        for other in sorted(graph[module]):
            visit(other)
        visiting.pop()
        done.add(module)

    for module in MODULES:
        visit(module)


def test_no_module_names_a_private_module_of_keras_or_tensorflow():
    private = ("keras.src", "tf_keras.src", "tensorflow.python")
    found = [f"{module}: {name}" for module in MODULES + ["__init__"]
             for name in imports(module)[1] if name.startswith(private)]
    found += [f"{module}.py" for module in MODULES
              if any(p in open(os.path.join(PACKAGE, f"{module}.py")).read() for p in private)]
    assert found == []


def test_model_code_never_imports_tensorflow():
    found = [f"{module}: {name}" for module in MODEL_CODE for name in imports(module)[1]
             if name.split(".")[0] == "tensorflow" or
             (name.startswith("resnet_tf.") and name.split(".")[1] in TENSORFLOW_MODULES)]
    assert found == []


def test_runtimes_are_imported_lazily():
    found = [f"{module}: {name}" for module in MODULES for name in imports(module)[0]
             if name.split(".")[0] in RUNTIME_PACKAGES]
    assert found == []


def test_every_module_but_tensorflows_imports_without_tensorflow():
    """With TensorFlow unimportable and Keras on JAX, everything outside TENSORFLOW_MODULES
    imports (the model code, the command line, the runtimes' runners, configs, model dirs)."""
    names = [m for m in MODULES if m not in TENSORFLOW_MODULES] + ["__init__"]
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import importlib, resnet_tf\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module('resnet_tf' if name == '__init__' else "
            "'resnet_tf.' + name)\n"
            "resnet_tf.register_layers()\n"
            "assert sys.modules['tensorflow'] is None\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, KERAS_BACKEND="jax"), timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_import_resnet_tf_imports_neither_keras_nor_tensorflow_and_registers_on_keras():
    code = ("import sys, resnet_tf\n"
            "assert not {'keras', 'tensorflow'} & set(sys.modules), 'imported too much'\n"
            "import keras\n"
            "assert keras.saving.get_registered_object('resnet_tf>Bottleneck') is not None\n"
            "assert callable(resnet_tf.resnet_v2) and callable(resnet_tf.slim_variables)\n"
            "from resnet_tf.resnet_v1 import BottleneckV1\n"
            "assert callable(resnet_tf.resnet_v1)\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
