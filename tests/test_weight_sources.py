"""Weights from keras.applications, torchvision and timm in slim's models, equal to the
sources' own code: keras.applications live through tf_keras (its `.h5` served on 127.0.0.1),
torchvision and timm against the logits their own code gave on the same random weights
(tests/data/sources, written by tests/make_source_outputs.py) and, where PyTorch is installed,
live in the large tier."""

import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from conftest import tiered
from release_server import Server
from source_weights import (
    images,
    keras_applications_h5,
    relative_error,
    torch_state,
    write_safetensors,
)

import resnet_tf
from resnet_tf.errors import UserError
from resnet_tf.weights import sources

TOLERANCE = 1e-4  # max |ours - theirs| / max |theirs|, the bound


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def _builder(family, depth):
    return getattr(resnet_tf, f"resnet_{family}_{depth}")


@pytest.mark.parametrize("name, family, depth", tiered([
    ("ResNet50V2", "v2", 50), ("ResNet50", "v1", 50), ("ResNet101V2", "v2", 101),
    ("ResNet101", "v1", 101), ("ResNet152V2", "v2", 152), ("ResNet152", "v1", 152)],
    fast=[("ResNet50V2", "v2", 50), ("ResNet50", "v1", 50)]))
def test_keras_applications_h5_over_a_url_gives_keras_logits(tmp_path, keras_home, name, family,
                                                             depth):
    served = tmp_path / "served"
    served.mkdir()
    reference = keras_applications_h5(name, served / f"{name.lower()}.h5")
    server = Server(served)
    model = _builder(family, depth)(num_classes=1000, weights=f"{server.url}/{name.lower()}.h5")
    for size in (224, 161):  # an odd size: the padding of every strided layer shows
        x = images(size)
        assert relative_error(model.predict(x, verbose=0),
                              reference.predict(x, verbose=0)) <= TOLERANCE
    assert server.requests == [f"/{name.lower()}.h5"]
    again = _builder(family, depth)(num_classes=1000, weights=f"{server.url}/{name.lower()}.h5")
    assert server.requests == [f"/{name.lower()}.h5"]  # cached: no second download
    np.testing.assert_array_equal(again.get_weights()[0], model.get_weights()[0])


CASES = [("torchvision", 18, 224, None), ("torchvision", 50, 224, None),
         ("torchvision", 50, 225, 16), ("timm", 50, 224, None), ("timm", 34, 161, None)]


@pytest.mark.parametrize("source, depth, size, output_stride", tiered(
    CASES, fast=[("torchvision", 50, 225, 16), ("timm", 34, 161, None)]))
def test_torch_state_dicts_give_the_sources_stored_logits(tmp_path, source, depth, size,
                                                          output_stride):
    """torchvision's and timm's keys in a safetensors file (what timm publishes) give the
    logits their own code gave on the same weights (no PyTorch needed here)."""
    from make_source_outputs import case_path

    path = write_safetensors(torch_state(depth), tmp_path / "model.safetensors")
    model = resnet_tf.create_model(f"resnet_v1_{depth}", num_classes=1000, weights=str(path),
                                   output_stride=output_stride)
    expected = np.load(case_path(source, depth, size, output_stride))["logits"]
    assert relative_error(model.predict(images(size), verbose=0), expected) <= TOLERANCE


# The stronger ResNets (`models.variants`): each kind at its source's size and an odd one, and
# at output_stride 16 (torchvision's replace_stride_with_dilation, timm's output_stride).
VARIANT_CASES = [
    ("torchvision", "resnext50_32x4d", 224, None), ("torchvision", "resnext50_32x4d", 225, 16),
    ("torchvision", "wide_resnet50_2", 161, None), ("torchvision", "resnext101_64x4d", 224, None),
    ("timm", "resnet50d", 224, None), ("timm", "resnet50d", 225, 16),
    ("timm", "seresnext50_32x4d", 161, None), ("timm", "seresnext50_32x4d", 224, 16),
    ("timm", "resnet101d", 225, None), ("timm", "seresnext101d_32x8d", 224, None),
    ("timm", "seresnext101d_32x8d", 193, 16)]


@pytest.mark.parametrize("source, name, size, output_stride", tiered(VARIANT_CASES, fast=[
    ("torchvision", "resnext50_32x4d", 225, 16), ("timm", "resnet50d", 225, 16),
    ("timm", "seresnext50_32x4d", 161, None)]))
def test_variant_state_dicts_give_the_sources_stored_logits(tmp_path, source, name, size,
                                                            output_stride):
    """ResNeXt, Wide ResNet, ResNet-D and SE-ResNeXt in torchvision's / timm's names (grouped
    and wider conv2, timm's deep stem, average-pool shortcuts, `se.fc1`/`se.fc2`) give the
    logits torchvision's and timm's code gave on the same random weights."""
    from make_source_outputs import case_path

    path = write_safetensors(torch_state(name), tmp_path / "model.safetensors")
    model = resnet_tf.create_model(name, num_classes=1000, weights=str(path),
                                   output_stride=output_stride)
    expected = np.load(case_path(source, name, size, output_stride))["logits"]
    assert relative_error(model.predict(images(size), verbose=0), expected) <= TOLERANCE


def test_variant_files_are_recognised_and_refused_in_one_sentence(tmp_path):
    path = write_safetensors(torch_state("resnext50_32x4d"), tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="ResNeXt-50 32x4d.*build it with resnext50_32x4d, not "
                                        "resnet_v1_50"):
        resnet_tf.resnet_v1_50(num_classes=1000, weights=str(path))
    plain = write_safetensors(torch_state(50), tmp_path / "plain.safetensors")
    with pytest.raises(UserError, match="build it with resnet_v1_50, not resnet50d"):
        resnet_tf.resnet50d(num_classes=1000, weights=str(plain))
    from source_weights import random_arrays, torch_state_shapes

    other = random_arrays(torch_state_shapes(101, groups=32, width_per_group=8, se=True), 0)
    other_path = write_safetensors(other, tmp_path / "other.safetensors")
    with pytest.raises(UserError, match=r"SE-ResNeXt-101 32x8d .*\(seresnext101_32x8d\), "
                                        "which resnet_tf does not build"):
        resnet_tf.seresnext101d_32x8d(num_classes=1000, weights=str(other_path))


def released_rs_names(path):
    """Renames tf_keras' ResNet-RS layers in an `.h5` as the released files name them
    (`stem_conv_1`, `c2_block_0_conv_1`, `c2_block_0_se_reduce`; tf_keras itself loads either
    by order)."""
    import re

    import h5py

    with h5py.File(path, "r+") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        renamed = []
        for name in names:
            new = re.sub(r"^stem_\d+_", "", name)
            new = re.sub(r"^BlockGroup(\d)__block_(\d+)__?", r"c\1_block_\2_", new)
            new = new.replace("_se_se_", "_se_")
            if new != name:
                f.move(name, new)
            renamed.append(new.encode())
        f.attrs["layer_names"] = renamed
    return path


@pytest.mark.parametrize("name, depth, trained_at", tiered(
    [("ResNetRS50", 50, 160), ("ResNetRS101", 101, 192)], fast=[("ResNetRS50", 50, 160)]))
def test_resnet_rs_h5_over_a_url_gives_tf_keras_logits(tmp_path, keras_home, name, depth,
                                                       trained_at):
    """tf_keras' own ResNetRS (the only Keras with it) with random weights, its `.h5` served on
    127.0.0.1: `resnet_rs_<depth>(weights=URL)` fed x / 255 normalised with ImageNet's mean
    and std (what tf_keras' model does inside) gives its logits at its size and an odd one."""
    import tf_keras

    served = tmp_path / "served"
    served.mkdir()
    file = f"resnet-rs-{depth}-i{trained_at}.h5"
    keras_applications_h5(name, served / file, input_shape=(trained_at, trained_at, 3))
    if depth == 50:  # the released files' names (sebastian-sz/resnet-rs-keras's scheme)
        released_rs_names(served / file)
    server = Server(served)
    model = getattr(resnet_tf, f"resnet_rs_{depth}")(num_classes=1000,
                                                     weights=f"{server.url}/{file}")
    assert sources.normalization(f"resnet_rs_{depth}", f"{server.url}/{file}") == "torchvision"
    rng = np.random.default_rng(1)
    for size in (trained_at, 193):
        pixels = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
        normalised = (pixels / 255 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
            [0.229, 0.224, 0.225], np.float32)
        reference = getattr(tf_keras.applications, name)(
            weights=None, classifier_activation=None, input_shape=(size, size, 3))
        reference.load_weights(str(served / file))
        assert relative_error(model.predict(normalised, verbose=0),
                              reference.predict(pixels, verbose=0)) <= TOLERANCE
    assert server.requests == [f"/{file}"]


def test_the_layout_is_in_the_model_and_its_keras_file(tmp_path):
    path = write_safetensors(torch_state(18), tmp_path / "model.safetensors")
    model = resnet_tf.resnet_v1_18(num_classes=1000, weights=str(path), input_shape=(64, 64, 3))
    assert [layer.name for layer in model.layers[:4]] == ["images", "conv1", "pool1_pad", "pool1"]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = images(64)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    features = resnet_tf.resnet_v1_18(weights=str(path))  # no head: every other variable
    assert features.output_shape == (None, 1, 1, 512)


def test_files_that_fit_no_builder_or_another_are_refused_in_one_sentence(tmp_path):
    path = write_safetensors(torch_state(34), tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="ResNet-34.*build it with resnet_v1_34, not resnet_v1_50"):
        resnet_tf.resnet_v1_50(num_classes=1000, weights=str(path))
    with pytest.raises(UserError, match="has 1000 classes; num_classes must be 1000 or None"):
        resnet_tf.resnet_v1_34(num_classes=10, weights=str(path))
    with pytest.raises(UserError, match="needs layout='torchvision'"):
        resnet_tf.resnet_v1_34(num_classes=1000, weights=str(path), layout="keras")
    with pytest.raises(UserError, match="layout must be one of"):
        resnet_tf.resnet_v1_34(layout="caffe")
    state = dict(torch_state(34), **{"extra.weight": np.zeros(3, np.float32)})
    other = write_safetensors(state, tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="hold tensors a timm ResNet-34 has not"):
        resnet_tf.resnet_v1_34(num_classes=1000, weights=str(other))
    (tmp_path / "junk.h5").write_bytes(b"not a file of any kind")
    with pytest.raises(UserError, match="neither a keras.applications .h5 file"):
        resnet_tf.resnet_v1_34(weights=str(tmp_path / "junk.h5"))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_FILES = os.path.join(ROOT, "tests", "data", "torch")
NO_TORCH = ("import sys\n"
            "class NoTorch:  # as on a machine without PyTorch\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, NoTorch())\n")


def test_a_torchvision_pth_loads_without_pytorch_to_torchvisions_logits():
    """A whole torchvision ResNet-18 state dict saved by PyTorch itself
    (tests/make_torch_files.py), read with PyTorch unimportable, gives the logits
    torchvision's own code gave."""
    code = NO_TORCH + (
        "import numpy as np, resnet_tf\n"
        "sys.path.insert(0, 'tests')\n"
        "from source_weights import images, relative_error\n"
        "model = resnet_tf.resnet_v1_18(num_classes=1000, weights="
        f"{os.path.join(TORCH_FILES, 'resnet18_views.pth')!r})\n"
        f"expected = np.load({os.path.join(TORCH_FILES, 'resnet18_views.npz')!r})['logits']\n"
        "assert 'torch' not in sys.modules\n"
        "print(relative_error(model.predict(images(64), verbose=0), expected))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) <= TOLERANCE


@pytest.mark.parametrize("name", ["state_zip.pth", "state_legacy.pth", "checkpoint.pth"])
def test_pth_files_of_both_formats_read_as_pytorch_reads_them(name, capsys):
    """float32, float16, bfloat16 and int64 tensors, a scalar, a non-contiguous view, views
    sharing a storage at an offset, a Parameter, in PyTorch's zip and legacy formats and
    inside a training checkpoint, equal `torch.load(weights_only=True)`'s."""
    from resnet_tf.weights.torch_files import read_torch_file

    expected = np.load(os.path.join(TORCH_FILES, "state.npz"))
    state = read_torch_file(os.path.join(TORCH_FILES, name), name)
    assert list(state) == list(expected.files)
    for key in expected.files:
        assert state[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(state[key], expected[key])
    if name == "checkpoint.pth":
        assert "using the state dict under 'model'" in capsys.readouterr().out


def test_a_pickle_naming_a_callable_is_refused_and_runs_nothing(tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "resnet18.pth"
    with zipfile.ZipFile(path, "w") as archive:  # PyTorch's format: a zip holding a pickle
        archive.writestr("archive/data.pkl", pickle.dumps({"conv1.weight": Payload()}))
    with pytest.raises(UserError, match=r"names posix\.system.*ran nothing of it"):
        resnet_tf.resnet_v1_18(weights=str(path))
    from resnet_tf.weights.torch_files import LEGACY_HEAD

    legacy = tmp_path / "legacy.pth"  # the legacy format: the payload after its magic number
    legacy.write_bytes(LEGACY_HEAD + pickle.dumps(Payload(), protocol=2))
    with pytest.raises(UserError, match=r"names posix\.system.*ran nothing of it"):
        resnet_tf.resnet_v1_18(weights=str(legacy))
    legacy.write_bytes(pickle.dumps(Payload(), protocol=2))  # in place of the magic number
    with pytest.raises(UserError, match=r"not a complete PyTorch .pth file \(neither a zip"):
        resnet_tf.resnet_v1_18(weights=str(legacy))
    assert not marker.exists()
    with pytest.raises(UserError, match=r"a whole pickled model \(torch\.nn\.modules\.linear"):
        resnet_tf.resnet_v1_18(weights=os.path.join(TORCH_FILES, "whole_model.pth"))


def crafted_pth(path, size, stride, offset, elements=4):
    """A zip `.pth` whose one tensor "w" views a float32 storage of `elements` with the given
    size, stride and offset, written opcode by opcode (what a hostile file could say)."""
    import struct

    def integer(n):
        return b"J" + struct.pack("<i", n)

    pickled = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
               b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
               b"X\x03\x00\x00\x00cpu" + integer(elements) + b"tQ" + integer(offset) +
               b"(" + b"".join(map(integer, size)) + b"t(" + b"".join(map(integer, stride)) +
               b"t\x89ccollections\nOrderedDict\n)RtRs.")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/data/0", np.arange(elements, dtype=np.float32).tobytes())
    return str(path)


def test_views_that_leave_their_storage_or_explode_it_are_refused(tmp_path):
    from resnet_tf.weights.torch_files import read_torch_file

    fine = read_torch_file(crafted_pth(tmp_path / "ok.pth", (2, 2), (1, 2), 0), "ok.pth")
    np.testing.assert_array_equal(fine["w"], [[0, 2], [1, 3]])  # a transposed view, as torch
    for name, (size, stride, offset) in {"outside": ((4,), (1,), 1),
                                         "negative": ((4,), (1,), -1),
                                         "backwards": ((4,), (-1,), 3),
                                         "bomb": ((100_000, 100_000), (0, 0), 0)}.items():
        with pytest.raises(UserError, match="is not a complete PyTorch .pth file"):
            read_torch_file(crafted_pth(tmp_path / f"{name}.pth", size, stride, offset), name)


def test_torn_weight_files_are_one_sentence_from_the_api_and_the_cli(tmp_path, capsys):
    import resnet_tf_cli

    whole = open(os.path.join(TORCH_FILES, "resnet18_views.pth"), "rb").read()
    legacy = open(os.path.join(TORCH_FILES, "state_legacy.pth"), "rb").read()
    safetensors = open(write_safetensors(torch_state(18), tmp_path / "m.safetensors"),
                       "rb").read()
    import tensorflow as tf

    photo = tmp_path / "photo.png"
    photo.write_bytes(tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy())
    for name, data in (("torn.pth", whole[: len(whole) // 2]),
                       ("torn_legacy.pth", legacy[: len(legacy) - 100]),
                       ("torn.safetensors", safetensors[: len(safetensors) // 2])):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UserError, match=r"is not a complete .*fetch it again$"):
            resnet_tf.resnet_v1_18(weights=str(path))
        assert resnet_tf_cli.main(["predict", "--model", "resnet_v1_18", "--weights",
                                   str(path), str(photo)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not a complete" in err and "Traceback" not in err


def test_a_cached_file_whose_hash_differs_is_refused_and_kept(keras_home):
    """A random file placed under torchvision's cache name (whose name carries its SHA-256's
    first digits) is refused with the hash it should have, and left where it is."""
    entry = sources.published("torchvision", "resnet_v1_18")
    cached = keras_home / "resnet_tf" / entry.fname
    cached.parent.mkdir(parents=True)
    cached.write_bytes(open(os.path.join(TORCH_FILES, "resnet18_views.pth"), "rb").read())
    with pytest.raises(UserError, match=rf"SHA-256 beginning should be {entry.file_hash}"):
        resnet_tf.resnet_v1_18(num_classes=1000, weights="torchvision")
    assert cached.exists()
    assert entry.file_hash == "f37072fd"


def test_named_weights_come_from_the_cache_offline(keras_home, tmp_path):
    """weights="timm" reads timm's file from Keras' cache where it was placed by hand (the
    offline route the download error names); the model then prepares images as timm does."""
    entry = sources.published("timm", "resnet_v1_34")
    cache = keras_home / "resnet_tf"
    cache.mkdir(parents=True)
    write_safetensors(torch_state(34), cache / entry.fname)
    model = resnet_tf.resnet_v1_34(num_classes=1000, weights="timm")
    expected = np.load(os.path.join(os.path.dirname(__file__), "data", "sources",
                                    "timm_resnet34_161px_os32.npz"))["logits"]
    assert relative_error(model.predict(images(161), verbose=0), expected) <= TOLERANCE
    resolved = sources.resolve_weights("resnet_v1_34", "timm", None)
    assert resolved.preprocessing.info()["preprocessing"] == "torchvision"
    assert resolved.preprocessing.image_size == 288
    with pytest.raises(UserError, match="keras publishes no weights for resnet_v1_18"):
        resnet_tf.resnet_v1_18(weights="keras")
    # The command line, from the cache, with the source's classes and image size.
    import tensorflow as tf

    import resnet_tf_cli

    photo = tmp_path / "photo.png"
    photo.write_bytes(tf.io.encode_png(np.random.default_rng(0).integers(
        0, 256, (300, 260, 3), dtype=np.uint8)).numpy())
    assert resnet_tf_cli.main(["predict", "--model", "resnet_v1_34", "--weights", "timm",
                               str(photo)]) == 0


def test_slims_functional_form_of_the_v1_unit_still_builds():
    inputs = keras.Input((8, 8, 16))
    outputs = resnet_tf.models.resnet_v1.bottleneck(inputs, 16, 4, 2)
    assert tuple(outputs.shape) == (None, 4, 4, 16)
    blocks = [resnet_tf.resnet_v1_block(f"block{i}", 2, 1, 2) for i in (1, 2)]
    model = resnet_tf.resnet_v1(blocks, layout="keras", input_shape=(32, 32, 3))
    strides = [(layer.name, layer.stride, layer.stride_in) for layer in model.layers
               if "unit" in layer.name]
    assert strides == [("block1.unit_1.bottleneck_v1", 1, "conv1"),
                       ("block2.unit_1.bottleneck_v1", 2, "conv1")]


def test_every_published_weight_names_a_builder_of_the_model_table():
    from resnet_tf.models.registry import MODEL_NAMES
    from resnet_tf.weights.catalog import CATALOG

    assert set(CATALOG) == set(sources.NAMED) == {"imagenet", "torchvision", "timm", "keras",
                                                  "bit-m", "bit-m-in1k"}
    for source, entries in CATALOG.items():
        assert set(entries) <= set(MODEL_NAMES), source
        assert all(entry.source == source and entry.model == model
                   for model, entry in entries.items())


# --------------------------------------------------------------------------------------------
# Live against PyTorch (large: where torch, torchvision and timm are installed)


@pytest.mark.large
@pytest.mark.parametrize("source, depth, size, output_stride", [
    ("torchvision", 18, 224, None), ("torchvision", 34, 225, None),
    ("torchvision", 50, 225, 16), ("torchvision", 101, 224, None),
    ("torchvision", 152, 225, 16), ("timm", 50, 224, None), ("timm", 101, 225, 16)])
def test_pth_files_give_the_sources_own_logits(tmp_path, source, depth, size, output_stride):
    torch = pytest.importorskip("torch")
    from make_source_outputs import source_logits

    expected = source_logits(source, depth, size, output_stride)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save({k: torch.from_numpy(v) for k, v in torch_state(depth).items()}, path)
    model = resnet_tf.create_model(f"resnet_v1_{depth}", num_classes=1000, weights=str(path),
                                   output_stride=output_stride)
    assert relative_error(model.predict(images(size), verbose=0), expected) <= TOLERANCE


@pytest.mark.large
@pytest.mark.parametrize("source, name, size, output_stride", [
    ("torchvision", "resnext101_64x4d", 225, 16), ("torchvision", "wide_resnet50_2", 224, 16),
    ("timm", "resnet50d", 161, 16), ("timm", "seresnext101d_32x8d", 224, None)])
def test_variant_pth_files_give_the_sources_own_logits(tmp_path, source, name, size,
                                                       output_stride):
    torch = pytest.importorskip("torch")
    from make_source_outputs import source_logits

    expected = source_logits(source, name, size, output_stride)
    path = tmp_path / f"{name}.pth"
    torch.save({k: torch.from_numpy(v) for k, v in torch_state(name).items()}, path)
    model = resnet_tf.create_model(name, num_classes=1000, weights=str(path),
                                   output_stride=output_stride)
    assert relative_error(model.predict(images(size), verbose=0), expected) <= TOLERANCE


@pytest.mark.large
def test_the_stored_logits_are_what_the_sources_give_now():
    """tests/data/sources is what torchvision's and timm's installed code computes."""
    pytest.importorskip("torch")
    from make_source_outputs import CASES as STORED
    from make_source_outputs import case_path, source_logits

    for case in STORED:
        np.testing.assert_allclose(np.load(case_path(*case))["logits"], source_logits(*case),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.large
def test_a_run_from_torchvision_weights_trains_in_their_layout_and_normalisation(tmp_path,
                                                                                 capsys):
    """`train --weights FILE`: the model takes the file's layout, starts from its weights
    (all but the head), normalises images as torchvision did; the run records both, and its
    export and `evaluate` prepare images that way too."""
    import json

    import resnet_tf_cli

    path = write_safetensors(torch_state(18), tmp_path / "resnet18.safetensors")
    config = tmp_path / "r18.yaml"
    config.write_text("dataset: digits\nvalidation_split: 0.2\nimage_size: 32\naugment: false\n"
                      "central_fraction: 1.0\nmodel: resnet_v1_18\nepochs: 1\nbatch_size: 32\n"
                      "optimizer: adam\nlearning_rate: 0.001\nbatch_norm_decay: 0.9\n")
    run = str(tmp_path / "run")
    assert resnet_tf_cli.main(["train", "--config", str(config), "--model-dir", run,
                               "--weights", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"starting from {path} (weights, sha256" in out
    init = json.load(open(os.path.join(run, "init.json")))
    assert (init["key"], init["layout"], init["path"]) == ("weights", "torchvision", str(path))
    assert "normalization: torchvision" in open(os.path.join(run, "config.yaml")).read()
    model = keras.saving.load_model(os.path.join(run, "model.keras"))
    assert "pool1_pad" in [layer.name for layer in model.layers]
    assert resnet_tf_cli.main(["evaluate", "--model-dir", run, "--json",
                               str(tmp_path / "k.json")]) == 0
    export = str(tmp_path / "export")
    assert resnet_tf_cli.main(["export", "--model-dir", run, "--output", export, "--format",
                               "tflite"]) == 0
    saved = str(tmp_path / "saved")
    assert resnet_tf_cli.main(["export", "--model-dir", run, "--output", saved]) == 0
    assert resnet_tf_cli.main(["evaluate", "--export", saved, "--model-dir", run, "--json",
                               str(tmp_path / "s.json")]) == 0
    info = json.load(open(os.path.join(export, "preprocessing.json")))
    assert info["preprocessing"] == "torchvision" and info["std_rgb"] == [0.229, 0.224, 0.225]
    assert resnet_tf_cli.main(["evaluate", "--export", export, "--model-dir", run, "--json",
                               str(tmp_path / "e.json")]) == 0
    keras_top1 = json.load(open(tmp_path / "k.json"))["top1"]
    logged = json.load(open(os.path.join(run, "metrics.json")))["val_accuracy"]
    assert keras_top1 == pytest.approx(logged, abs=1e-6)  # validated as evaluate prepares
    assert json.load(open(tmp_path / "s.json"))["top1"] == pytest.approx(keras_top1, abs=1e-6)
    # A resumed run keeps the layout (init.json's), not slim's.
    assert resnet_tf_cli.main(["train", "--config", str(config), "--model-dir", run,
                               "--weights", str(path), "--epochs", "2"]) == 0
    model = keras.saving.load_model(os.path.join(run, "model.keras"))
    assert "pool1_pad" in [layer.name for layer in model.layers]
    assert json.load(open(tmp_path / "e.json"))["top1"] == pytest.approx(keras_top1, abs=1e-6)


def test_quantization_aware_training_refuses_other_normalisations(tmp_path):
    """QAT's input range is [-1, 1]: a run whose weights normalise otherwise is refused."""
    from resnet_tf.training.config import config_from_dict
    from resnet_tf.training.start import with_normalization

    path = write_safetensors(torch_state(18), tmp_path / "resnet18.safetensors")
    config = config_from_dict(dict(model="resnet_v1_18", dataset="digits", weights=str(path)))
    assert with_normalization(config).normalization == "torchvision"
    with pytest.raises(UserError, match="quantization-aware training takes inputs scaled to"):
        with_normalization(config_from_dict(dict(model="resnet_v1_18", dataset="digits",
                                                 weights=str(path), quantization_aware=True)))
