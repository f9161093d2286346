"""The residual-unit machinery: [1]'s shortcut options A, B, C."""

import numpy as np
import pytest
from model_helpers import trainable_count

import resnet_tf
from resnet_tf.models.resnet_utils import resnet_arg_scope
from resnet_tf.models.units import make_shortcut


def test_shortcut_options():
    scope = resnet_arg_scope()
    a = make_shortcut("A", 16, 32, 2, True, scope)
    x = np.arange(2 * 4 * 4 * 16, dtype="float32").reshape(2, 4, 4, 16)
    y = np.asarray(a(x))
    assert y.shape == (2, 2, 2, 32) and not a.weights
    np.testing.assert_array_equal(y[..., :16], x[:, ::2, ::2, :])  # subsampled
    np.testing.assert_array_equal(y[..., 16:], 0)                   # zero-padded channels
    assert type(make_shortcut("B", 16, 16, 2, True, scope)).__name__ == "Subsample"
    assert type(make_shortcut("B", 16, 32, 2, True, scope)).__name__ == "Conv2DSame"
    c = make_shortcut("C", 16, 16, 1, True, scope)
    assert type(c).__name__ == "Conv2DSame" and c.use_batch_norm
    with pytest.raises(ValueError, match="cannot reduce"):
        make_shortcut("A", 32, 16, 1, True, scope)
    # Parameter counts: A adds nothing, C adds a projection to every unit.
    counts = {o: trainable_count(resnet_tf.cifar_resnet_v1(20, shortcut=o)) for o in "ABC"}
    assert counts["A"] < counts["B"] < counts["C"]
    assert counts["B"] - counts["A"] == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_strided_projections_train_at_odd_batch_sizes(tmp_path):
    """TensorFlow 2.21's oneDNN kernel for strided 1x1 convolutions corrupts memory in training
    at odd batch sizes (a segfault or abort, seen on AMD Zen 5); Conv2DSame computes them as a
    stride-1 convolution of every stride-th pixel instead. Run in a process of its own: the
    bug kills the process."""
    import subprocess
    import sys

    code = """
import numpy as np, keras, resnet_tf
for batch in (1, 3, 5):
    inputs = keras.Input((48, 48, 3))
    net = resnet_tf.Bottleneck(32, 8, stride=2)(inputs)
    net = resnet_tf.Conv2DSame(16, 1, stride=2, use_batch_norm=True)(net)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(net))
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).uniform(-1, 1, (batch * 6, 48, 48, 3)).astype("float32")
    model.fit(x, np.arange(batch * 6) % 3, batch_size=batch, epochs=2, verbose=0)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode,
                                                                      result.stderr[-2000:])


def test_a_strided_1x1_convolution_is_the_1x1_convolution_of_every_strided_pixel():
    layer = resnet_tf.Conv2DSame(4, 1, stride=2)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 7, 6, 3)).astype("float32")
    y = np.asarray(layer(x))
    expected = np.einsum("nhwc,cd->nhwd", x[:, ::2, ::2], np.asarray(layer.kernel)[0, 0])
    np.testing.assert_allclose(y, expected + np.asarray(layer.bias), rtol=1e-5, atol=1e-6)
