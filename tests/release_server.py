"""slim's resnet_v2_50 release, made from TF-slim's own graph (random values), served on
127.0.0.1: directly (a URL), or through an HTTP proxy standing in for download.tensorflow.org
(the real release URL, reached as any user behind a proxy reaches it). Never the internet."""

import functools
import http.server
import os
import shutil
import tarfile
import threading
import urllib.parse

import numpy as np
from slim_reference import run_slim

RELEASE = "resnet_v2_50_2017_04_14"


def make_release(root):
    """slim's release layout: the tarball (a legacy single-file checkpoint, eval.graph,
    train.graph) under root/served, and slim's logits on two images."""
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
    return dict(root=root, served=served, images=images, logits=np.squeeze(logits, (1, 2)),
                checkpoint=content / "resnet_v2_50.ckpt")


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


class ReleaseProxy(Server):
    """An HTTP proxy on 127.0.0.1 standing in for download.tensorflow.org: the real release
    URLs, reached through `http_proxy` as any user behind a proxy reaches them."""

    class _Handler(Server._Handler):
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            self.server_ref.requests.append(self.path)
            if url.netloc != "download.tensorflow.org" or not url.path.startswith("/models/"):
                self.send_error(404)
                return
            self.path = "/" + url.path[len("/models/"):]
            http.server.SimpleHTTPRequestHandler.do_GET(self)

    def env(self, home):
        environment = {k: v for k, v in os.environ.items()
                       if k.lower() not in ("no_proxy", "https_proxy", "all_proxy")}
        return dict(environment, http_proxy=self.url, HTTP_PROXY=self.url, KERAS_HOME=str(home))


