"""The residual-unit machinery: [1]'s shortcut options A, B, C."""

import numpy as np
import pytest

import resnet_tf
from model_helpers import trainable_count
from resnet_tf.resnet_utils import resnet_arg_scope
from resnet_tf.units import make_shortcut


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
