"""weights="imagenet" / URL / PATH: slim's release layout, made from TF-slim's own graph (random
values, legacy single-file checkpoint), served from 127.0.0.1; never the internet."""

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import resnet_tf_command
from release_server import RELEASE, ReleaseProxy, Server, make_release
from slim_reference import relative_error

import resnet_tf
from resnet_tf.weights import cache as weights_lib
from resnet_tf_cli import main


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_release(tmp_path_factory.mktemp("release"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Keras' own cache location, moved by the environment variable Keras reads."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home" / "resnet_tf"


@pytest.fixture
def server(release):
    server = Server(release["served"])
    yield server
    server.stop()


@pytest.fixture
def proxy(release):
    proxy = ReleaseProxy(release["served"])
    yield proxy
    proxy.stop()


RELEASE_URL = f"http://download.tensorflow.org/models/{RELEASE}.tar.gz"


def python(code, env, timeout=600):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_a_url_downloads_once_then_works_offline(release, cache, server):
    url = f"{server.url}/{RELEASE}.tar.gz"
    model = resnet_tf.resnet_v2_50(num_classes=1001, weights=url)
    assert server.requests == [f"/{RELEASE}.tar.gz"]
    logits = model(release["images"], training=False)
    assert relative_error(logits, release["logits"]) < 2e-4  # TF-slim's own graph
    assert sorted(os.listdir(cache)) == [RELEASE, f"{RELEASE}.tar.gz"]
    server.stop()  # offline from here on
    again = resnet_tf.resnet_v2_50(num_classes=1001, weights=url)
    np.testing.assert_allclose(again(release["images"], training=False), logits, rtol=1e-6)
    # Headless: every variable but the logits; the features are the full model's.
    headless = resnet_tf.resnet_v2_50(weights=url)
    assert not any(layer.name == "logits" for layer in headless.layers)
    features = resnet_tf.end_points(model)(release["images"], training=False)["global_pool"]
    np.testing.assert_allclose(headless(release["images"], training=False), features,
                               rtol=1e-5, atol=1e-6)


def test_weights_url_and_path(release, cache, server, tmp_path):
    url = f"{server.url}/{RELEASE}.tar.gz"
    model = resnet_tf.create_model("resnet_v2_50", num_classes=1001, weights=url)
    assert relative_error(model(release["images"], training=False), release["logits"]) < 2e-4
    # A local tarball, the unpacked dir and the checkpoint file itself.
    tarball = release["served"] / f"{RELEASE}.tar.gz"
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tarball) as tar:
        tar.extractall(unpacked, filter="data")
    for path in (tarball, unpacked, unpacked / "resnet_v2_50.ckpt"):
        loaded = resnet_tf.resnet_v2_50(num_classes=1001, weights=str(path))
        assert relative_error(loaded(release["images"], training=False),
                              release["logits"]) < 2e-4, path
    assert not [p for p in os.listdir(tmp_path) if p.startswith("resnet-tf-weights")]


def test_wrong_num_classes_is_refused_before_any_download(cache, server):
    with pytest.raises(ValueError, match="with 1001 classes; num_classes must be 1001 or None"):
        resnet_tf.resnet_v2_50(num_classes=10, weights="imagenet")
    with pytest.raises(ValueError, match="slim released no ImageNet weights for resnet_v2_200"):
        resnet_tf.resnet_v2_200(weights="imagenet")
    assert server.requests == []


def test_a_broken_download_never_stays_in_the_cache(release, cache, server):
    good = (release["served"] / f"{RELEASE}.tar.gz").read_bytes()
    broken = release["root"] / "broken"
    broken.mkdir(exist_ok=True)
    (broken / f"{RELEASE}.tar.gz").write_bytes(good[: len(good) // 3])
    truncated = Server(broken)
    try:
        with pytest.raises(ValueError, match="incomplete or corrupt.*removed from the cache"):
            resnet_tf.resnet_v2_50(num_classes=1001,
                                   weights=f"{truncated.url}/{RELEASE}.tar.gz")
    finally:
        truncated.stop()
    assert not cache.exists() or os.listdir(cache) == []
    # A download killed mid-way leaves a partial archive: the next call fetches it again.
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{RELEASE}.tar.gz").write_bytes(good[:1000])
    model = resnet_tf.resnet_v2_50(num_classes=1001, weights=f"{server.url}/{RELEASE}.tar.gz")
    assert server.requests == [f"/{RELEASE}.tar.gz"]
    assert relative_error(model(release["images"], training=False), release["logits"]) < 2e-4


def test_offline_without_a_cache_names_the_url_and_the_place(cache, server):
    server.stop()
    url = f"{server.url}/{RELEASE}.tar.gz"
    with pytest.raises(ValueError) as error:
        resnet_tf.resnet_v2_50(num_classes=1001, weights=url)
    message = str(error.value)
    assert f"Could not download {url}" in message
    assert f"place it at {cache / (RELEASE + '.tar.gz')}" in message


def test_the_cache_is_where_keras_puts_its_downloads(tmp_path, monkeypatch):
    """$KERAS_HOME, else ~/.keras, else /tmp/.keras when that is not writable: keras.utils.
    get_file's own rule (Keras keeps its resolver private)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert weights_lib.cache_dir() == str(tmp_path / "kh" / "resnet_tf")
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert weights_lib.cache_root() == str(tmp_path / "home" / ".keras")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        monkeypatch.setenv("KERAS_HOME", str(locked))
        assert weights_lib.cache_root() == "/tmp/.keras"


@pytest.mark.large
def test_weights_url_as_a_user_runs_it_then_offline(release, server, tmp_path):
    """`resnet_v2_50(num_classes=1001, weights=URL)` in a fresh process, with nothing but the
    environment set: the real cache location under $KERAS_HOME, then offline from it."""
    code = f"""
import numpy as np, resnet_tf
model = resnet_tf.resnet_v2_50(num_classes=1001, weights={server.url + '/' + RELEASE + '.tar.gz'!r})
np.save({str(tmp_path / 'logits.npy')!r}, model(np.load({str(release['root'] / 'images.npy')!r}), training=False))
"""
    np.save(release["root"] / "images.npy", release["images"])
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "home"), TF_CPP_MIN_LOG_LEVEL="3")
    result = python(code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert relative_error(np.load(tmp_path / "logits.npy"), release["logits"]) < 2e-4
    assert sorted(os.listdir(tmp_path / "home" / "resnet_tf")) == [RELEASE, f"{RELEASE}.tar.gz"]
    server.stop()
    os.remove(tmp_path / "logits.npy")
    result = python(code, env)  # offline: the cache answers
    assert result.returncode == 0, result.stderr[-3000:]
    assert relative_error(np.load(tmp_path / "logits.npy"), release["logits"]) < 2e-4


@pytest.mark.large
def test_imagenet_download_and_predict_through_the_real_url(release, proxy, tmp_path):
    """`resnet-tf download` and `--weights imagenet` fetch slim's real release URL (through a
    proxy on 127.0.0.1), fill Keras' cache once, and then work offline."""
    home = tmp_path / "home"
    env = proxy.env(home)
    result = resnet_tf_command("download", "--model", "resnet_v2_50", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1001 classes, inception preprocessing, 299 px" in result.stdout
    assert proxy.requests == [RELEASE_URL]
    assert sorted(os.listdir(home / "resnet_tf")) == [RELEASE, f"{RELEASE}.tar.gz"]
    proxy.stop()
    image = tmp_path / "photo.jpg"
    image.write_bytes(tf.io.encode_jpeg(np.full((80, 60, 3), 100, np.uint8)).numpy())
    result = resnet_tf_command("predict", "--model", "resnet_v2_50", "--weights", "imagenet",
                               "--image-size", "65", str(image), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == str(image) and len(lines) == 6
    result = resnet_tf_command("predict", "--model", "resnet_v2_50", "--weights", "imagenet",
                               "--num-classes", "5", str(image), env=env)
    assert result.returncode == 2 and "num_classes must be 1001 or None" in result.stderr
    # The Python API through the same real URL, offline from the same cache.
    code = ("import resnet_tf; m = resnet_tf.resnet_v2_50(num_classes=1001, weights='imagenet');"
            " print(m.count_params())")
    result = python(code, env)
    assert result.returncode == 0 and int(result.stdout.split()[-1]) > 25_000_000, result.stderr


@pytest.mark.large
def test_two_processes_filling_one_cache_both_succeed(release, server, tmp_path):
    """Processes sharing a cache download and unpack under a lock: neither sees the other's
    half-written archive, and the good download stays."""
    code = (f"import resnet_tf; resnet_tf.resnet_v2_50(num_classes=1001, "
            f"weights={server.url + '/' + RELEASE + '.tar.gz'!r}); print('ok')")
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "home"), TF_CPP_MIN_LOG_LEVEL="3")
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(3)]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in outputs]
    assert server.requests == [f"/{RELEASE}.tar.gz"]  # one download, shared
    assert sorted(os.listdir(tmp_path / "home" / "resnet_tf")) == [RELEASE, f"{RELEASE}.tar.gz"]


def test_a_tarball_with_paths_outside_is_refused(tmp_path):
    """Members that would land outside the cache are refused, links are never unpacked: on
    every Python the project supports (tarfile's own filter is used where it exists)."""
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = tmp_path / "x.ckpt"
        data.write_bytes(b"0" * 10)
        tar.add(data, arcname="../escaped.ckpt")
    with pytest.raises(ValueError, match="would be written outside"):
        resnet_tf.resnet_v2_50(num_classes=1001, weights=str(evil))
    assert not (tmp_path.parent / "escaped.ckpt").exists()
    linked = tmp_path / "linked.tar.gz"
    with tarfile.open(linked, "w:gz") as tar:
        info = tarfile.TarInfo("resnet_v2_50.ckpt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match="holds no checkpoints"):
        resnet_tf.resnet_v2_50(num_classes=1001, weights=str(linked))


@pytest.mark.large
def test_v1_weights_take_vgg_preprocessing(tmp_path):
    """slim's V1 releases expect VGG preprocessing at 224 px: the model source records it,
    and the exports carry it."""
    from slim_reference import save_slim_checkpoint

    from resnet_tf.export.runtimes import open_export
    from resnet_tf.training.loading import load_model_source

    model = resnet_tf.resnet_v1_50(num_classes=1000)
    values = {n: np.asarray(v) for n, v in resnet_tf.slim_variables(model).items()}
    checkpoint = save_slim_checkpoint(values, str(tmp_path / "resnet_v1_50.ckpt"))
    source = load_model_source(weights=checkpoint, model_name="resnet_v1_50")
    assert (source.prep.method, source.prep.image_size, len(source.class_names)) == ("vgg", 224,
                                                                                     1000)
    image = np.random.default_rng(0).uniform(0, 255, (300, 200, 3)).astype(np.float32)
    assert main(["export", "--model", "resnet_v1_50", "--weights", checkpoint, "--output",
                 str(tmp_path / "e"), "--format", "onnx"]) == 0
    runner, info, names = open_export(str(tmp_path / "e"))
    assert (info["preprocessing"], info["mean_rgb"], info["resize_side"]) == (
        "vgg", [123.68, 116.78, 103.94], 256)
    from resnet_tf.data import preprocessing
    from resnet_tf.data.pixels import EvalPreprocessing

    pixels = preprocessing.prepare_pixels(tf.constant(image),
                                          EvalPreprocessing("vgg", 224)).numpy()
    expected = tf.nn.softmax(source.model(pixels[None] - np.array([123.68, 116.78, 103.94]),
                                          training=False)).numpy()
    np.testing.assert_allclose(runner(pixels[None]), expected, atol=1e-5)


@pytest.mark.large
def test_a_v1_export_at_another_size_scales_its_resize_side(tmp_path):
    """slim's VGG eval resizes the smaller side to 256 for 224 px crops; at 32 px the side
    scales with the size (37), so the crop still keeps the same share of the image."""
    from slim_reference import save_slim_checkpoint

    model = resnet_tf.resnet_v1_50(num_classes=1000)
    values = {n: np.asarray(v) for n, v in resnet_tf.slim_variables(model).items()}
    checkpoint = save_slim_checkpoint(values, str(tmp_path / "resnet_v1_50.ckpt"))
    assert main(["export", "--model", "resnet_v1_50", "--weights", checkpoint, "--output",
                 str(tmp_path / "e"), "--image-size", "32"]) == 0
    info = json.load(open(tmp_path / "e" / "preprocessing.json"))
    assert (info["image_size"], info["resize_side"]) == (32, 37)
