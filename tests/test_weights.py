"""weights="imagenet" / URL / PATH: slim's release layout, made from TF-slim's own graph (random
values, legacy single-file checkpoint), served from 127.0.0.1; never the internet."""

import functools
import http.server
import os
import shutil
import tarfile
import threading

import numpy as np
import pytest
import tensorflow as tf

import resnet_tf
from resnet_tf import weights as weights_lib
from resnet_tf.cli import main
from resnet_tf.slim_reference import relative_error, run_slim

RELEASE = "resnet_v2_50_2017_04_14"


class Server:
    """A static file server on 127.0.0.1 that counts requests and can be stopped."""

    def __init__(self, directory):
        self.requests = []
        handler = functools.partial(self._Handler, directory=str(directory), server_ref=self)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    class _Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, server_ref=None, **kwargs):
            self.server_ref = server_ref
            super().__init__(*args, **kwargs)

        def do_GET(self):
            self.server_ref.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """slim's resnet_v2_50 release layout from TF-slim's graph: the tarball, and slim's logits."""
    root = tmp_path_factory.mktemp("release")
    content = root / "content"
    content.mkdir()
    images = np.random.default_rng(0).uniform(-1, 1, (2, 65, 65, 3)).astype(np.float32)
    logits, _, _ = run_slim("v2", images, str(content / "resnet_v2_50.ckpt"), depth=50,
                            num_classes=1001, scope="resnet_v2_50", legacy_format=True,
                            graph_path=str(content / "eval.graph"))
    shutil.copy(content / "eval.graph", content / "train.graph")
    served = root / "served"
    served.mkdir()
    with tarfile.open(served / f"{RELEASE}.tar.gz", "w:gz", compresslevel=1) as tar:
        for name in ("resnet_v2_50.ckpt", "eval.graph", "train.graph"):
            tar.add(content / name, arcname=name)
    assert sorted(os.listdir(content)) == ["checkpoint", "eval.graph", "resnet_v2_50.ckpt",
                                           "train.graph"]  # one legacy single-file checkpoint
    return dict(root=root, served=served, images=images, logits=np.squeeze(logits, (1, 2)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_lib, "cache_root", lambda: str(tmp_path / "keras_home"))
    return tmp_path / "keras_home" / "resnet_tf"


@pytest.fixture
def server(release, monkeypatch):
    server = Server(release["served"])
    monkeypatch.setattr(weights_lib, "URL", server.url + "/{release}.tar.gz")
    yield server
    server.stop()


def test_imagenet_downloads_once_then_works_offline(release, cache, server):
    model = resnet_tf.resnet_v2_50(num_classes=1001, weights="imagenet")
    assert server.requests == [f"/{RELEASE}.tar.gz"]
    logits = model(release["images"], training=False)
    assert relative_error(logits, release["logits"]) < 2e-4  # TF-slim's own graph
    assert sorted(os.listdir(cache)) == [RELEASE, f"{RELEASE}.tar.gz"]
    server.stop()  # offline from here on
    again = resnet_tf.resnet_v2_50(num_classes=1001, weights="imagenet")
    np.testing.assert_allclose(again(release["images"], training=False), logits, rtol=1e-6)
    # Headless: every variable but the logits; the features are the full model's.
    headless = resnet_tf.resnet_v2_50(weights="imagenet")
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
    model = resnet_tf.resnet_v2_50(num_classes=1001, weights="imagenet")
    assert server.requests == [f"/{RELEASE}.tar.gz"]
    assert relative_error(model(release["images"], training=False), release["logits"]) < 2e-4


def test_offline_without_a_cache_names_the_url_and_the_place(cache, server):
    server.stop()
    with pytest.raises(ValueError) as error:
        resnet_tf.resnet_v2_50(num_classes=1001, weights="imagenet")
    message = str(error.value)
    assert f"Could not download {server.url}/{RELEASE}.tar.gz" in message
    assert f"place it at {cache / (RELEASE + '.tar.gz')}" in message


def test_cli_weights_and_download(release, cache, server, tmp_path, capsys):
    assert main(["download", "--model", "resnet_v2_50"]) == 0
    assert "1001 classes, inception preprocessing, 299 px" in capsys.readouterr().out
    server.stop()
    image = tmp_path / "photo.jpg"
    image.write_bytes(tf.io.encode_jpeg(np.full((80, 60, 3), 100, np.uint8)).numpy())
    assert main(["predict", "--model", "resnet_v2_50", "--weights", "imagenet", "--image-size",
                 "65", str(image)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(image) and len(lines) == 6
    assert main(["predict", "--model", "resnet_v2_50", "--weights", "imagenet",
                 "--num-classes", "5", str(image)]) == 2
    assert "num_classes must be 1001 or None" in capsys.readouterr().err


def test_v1_weights_take_vgg_preprocessing(tmp_path):
    """slim's V1 releases expect VGG preprocessing at 224 px: the model source records it,
    and the exports carry it."""
    from resnet_tf.slim_reference import save_slim_checkpoint
    from resnet_tf.export import load_model_source
    from resnet_tf.runtimes import open_export

    model = resnet_tf.resnet_v1_50(num_classes=1000)
    values = {n: np.asarray(v) for n, v in resnet_tf.slim_variables(model).items()}
    checkpoint = save_slim_checkpoint(values, str(tmp_path / "resnet_v1_50.ckpt"))
    source = load_model_source(weights=checkpoint, model_name="resnet_v1_50")
    assert (source.preprocessing, source.image_size, len(source.class_names)) == ("vgg", 224,
                                                                                 1000)
    image = np.random.default_rng(0).uniform(0, 255, (300, 200, 3)).astype(np.float32)
    assert main(["export", "--model", "resnet_v1_50", "--weights", checkpoint, "--output",
                 str(tmp_path / "e"), "--format", "onnx"]) == 0
    runner, info, names = open_export(str(tmp_path / "e"))
    assert (info["preprocessing"], info["mean_rgb"], info["resize_side"]) == (
        "vgg", [123.68, 116.78, 103.94], 256)
    from resnet_tf import preprocessing

    pixels = preprocessing.vgg_eval_pixels(tf.constant(image), 224).numpy()
    expected = tf.nn.softmax(source.model(pixels[None] - np.array([123.68, 116.78, 103.94]),
                                          training=False)).numpy()
    np.testing.assert_allclose(runner(pixels[None]), expected, atol=1e-5)
