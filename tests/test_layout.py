"""The package's layout rules, checked (docs/architecture.md explains them): sub-packages in
layers that import only downwards, no import cycle, no private modules of Keras or TensorFlow,
Keras-only model code, TensorFlow only in the modules listed, runtimes lazily, no import hooks."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "resnet_tf")

# The layers, lowest first: a sub-package imports only from its own layer or lower ones.
LAYERS = (
    ("errors", "utils", "machine", "tensorflow_ops"),  # the shared base
    ("models",),  # builders, layers, units, dtype policies, the model table (Keras only)
    ("quantization", "slim", "data"),  # QAT; slim's checkpoints; datasets and the eval recipe
    ("weights",),  # released weights: download, cache, load
    ("training",),  # configs, model dirs, the training loop, evaluation
    ("export",),  # SavedModels, the runtimes' files and runners, the int8 bound search
    ("commands",),  # each `resnet-tf` command's work: `commands.<command>.run(args)`
    ("__main__", "cli"),  # `python -m resnet_tf` (and its deprecated `.cli` spelling)
)
# Keras only, on every backend: TensorFlow is never imported, not even lazily.
KERAS_ONLY = ("errors", "utils", "machine", "models", "quantization", "slim.variables", "data.pixels",
              "data.class_names")
# The modules that import TensorFlow at their top (tf.data, checkpoints, SavedModels, ...).
TENSORFLOW_MODULES = ("tensorflow_ops", "data.datasets", "data.preprocessing", "training.trainer",
                      "training.distribute", "training.evaluate", "export.deploy", "data.files",
                      "commands.predict")
# Runtimes and converters: imported inside the functions that use them, never at the top.
RUNTIME_PACKAGES = ("ai_edge_litert", "onnxruntime", "onnx", "tf2onnx", "openvino", "nncf",
                    "torch", "safetensors", "tf_keras")


def _modules():
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
                found[dotted] = path
    return found


MODULES = _modules()  # "models.units" -> path ("__init__", "models.__init__", ...)


def imports(module):
    """(top-level imports, all imports) of a module, as dotted names."""
    tree = ast.parse(open(MODULES[module]).read())
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


def _own(name):
    """The module of resnet_tf that a dotted import names ("models.units"), or None."""
    if not name.startswith("resnet_tf."):
        return None
    parts = name.split(".")[1:]
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


def _layer(module):
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _within(module, prefixes):
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_every_module_is_in_a_layer():
    tops = {module.split(".")[0] for module in MODULES} - {"__init__"}
    assert tops == {name for names in LAYERS for name in names}


def test_sub_packages_import_only_downwards():
    found = []
    for module in MODULES:
        if module == "__init__":  # the front door: it names what the layers define
            continue
        top, every = imports(module)
        for name in every:
            other = _own(name)
            if other is None or other.split(".")[0] in ("__init__",):
                continue
            if _layer(other) > _layer(module):  # at the top or inside a function alike
                found.append(f"{module} -> {other}")
    assert found == []


def test_no_import_cycle_among_the_modules():
    graph = {module: {other for name in imports(module)[1] if (other := _own(name))
                      and other != module and not other.endswith("__init__")}
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


def test_no_import_cycle_among_the_sub_packages():
    """Counting imports inside functions too: no sub-package reaches back to itself through
    another (a lazy import that closes a loop between packages is a cycle all the same)."""
    graph = {}
    for module in MODULES:
        package = module.split(".")[0]
        graph.setdefault(package, set()).update(
            other.split(".")[0] for name in imports(module)[1]
            if (other := _own(name)) and other.split(".")[0] not in (package, "__init__"))
    for start in graph:
        seen, frontier = set(), set(graph[start])
        while frontier:
            package = frontier.pop()
            assert package != start, f"{start} reaches itself through {sorted(seen)}"
            if package not in seen:
                seen.add(package)
                frontier |= graph.get(package, set())


def test_no_module_names_a_private_module_of_keras_or_tensorflow():
    private = ("keras.src", "tf_keras.src", "tensorflow.python")
    found = [f"{module}: {name}" for module in MODULES
             for name in imports(module)[1] if name.startswith(private)]
    found += [module for module, path in MODULES.items()
              if any(p in open(path).read() for p in private)]
    assert found == []


def test_keras_only_code_never_imports_tensorflow():
    found = [f"{module}: {name}" for module in MODULES if _within(module, KERAS_ONLY)
             for name in imports(module)[1]
             if name.split(".")[0] == "tensorflow" or _within(_own(name) or "", TENSORFLOW_MODULES)]
    assert found == []


def test_only_the_tensorflow_modules_import_it_at_their_top():
    found = sorted(module for module in MODULES
                   if any(name.split(".")[0] == "tensorflow" for name in imports(module)[0]))
    assert found == sorted(TENSORFLOW_MODULES)


def test_runtimes_are_imported_lazily():
    found = [f"{module}: {name}" for module in MODULES for name in imports(module)[0]
             if name.split(".")[0] in RUNTIME_PACKAGES]
    assert found == []


def test_every_module_but_tensorflows_imports_without_tensorflow():
    """With TensorFlow unimportable and Keras on JAX, everything outside TENSORFLOW_MODULES
    imports (the model code, the command line, the runtimes' runners, configs, model dirs)."""
    names = sorted(m for m in MODULES if m not in TENSORFLOW_MODULES
                   and not m.endswith("__main__"))
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import importlib, resnet_tf, resnet_tf_cli\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module('resnet_tf' + ('' if name == '__init__' else '.' + "
            "name.removesuffix('.__init__')))\n"
            "assert sys.modules['tensorflow'] is None\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, KERAS_BACKEND="jax"), timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_no_import_hooks_and_the_public_names_are_plain_attributes():
    """`import resnet_tf` leaves the import system as it was (no finder added to
    `sys.meta_path`, no module class swapped) and registers the layers itself."""
    code = ("import sys, types\n"
            "before = list(sys.meta_path)\n"
            "import resnet_tf\n"
            "added = [f for f in sys.meta_path if f not in before and "
            "type(f).__module__.startswith(('resnet_tf', '__editable__'))]\n"
            "assert not added, added\n"
            "assert type(sys.modules['resnet_tf']) is types.ModuleType\n"
            "import keras\n"
            "assert keras.saving.get_registered_object('resnet_tf>Bottleneck') is not None\n"
            "assert callable(resnet_tf.resnet_v2) and callable(resnet_tf.slim_variables)\n"
            "from resnet_tf.models.resnet_v1 import BottleneckV1\n"
            "assert callable(resnet_tf.resnet_v1) and resnet_tf.Bottleneck.__module__ == "
            "'resnet_tf.models.resnet_v2'\n"
            "missing = [n for n in resnet_tf.__all__ if not hasattr(resnet_tf, n)]\n"
            "assert not missing, missing\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


CLI = os.path.join(ROOT, "resnet_tf_cli")


def test_the_command_line_imports_no_library_at_its_top_and_only_commands_inside():
    """`resnet-tf --help` answers without Keras: resnet_tf_cli (the parser, the dispatch, the
    native-output filter) imports nothing of resnet_tf, Keras or TensorFlow at its top, and
    inside its functions only the commands, the model table (to check --model) and errors."""
    for name in sorted(os.listdir(CLI)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(CLI, name)).read())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {(alias.name, node in tree.body) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add((node.module, node in tree.body))
        assert not {n for n, at_top in found if at_top and n.split(".")[0] in
                    ("resnet_tf", "keras", "tensorflow")}, name
        lazy = {n for n, _ in found if n.split(".")[0] == "resnet_tf"}
        assert all(n in ("resnet_tf.models.registry", "resnet_tf.errors") or
                   n.startswith("resnet_tf.commands") for n in lazy), (name, lazy)


def test_no_module_is_longer_than_a_reader_can_hold():
    """No module of the package is over 500 lines, nor the command line's over 400."""
    lengths = {module: sum(1 for _ in open(path)) for module, path in MODULES.items()}
    assert {m: n for m, n in lengths.items() if n > 500} == {}
    cli = {name: sum(1 for _ in open(os.path.join(CLI, name)))
           for name in os.listdir(CLI) if name.endswith(".py")}
    assert {name: n for name, n in cli.items() if n > 400} == {}
