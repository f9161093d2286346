"""TensorFlow's own kernels where Keras' TensorFlow backend is slower, set by `import resnet_tf`
on that backend (the model code stays Keras only: `models.layers.set_grouped_convolution`)."""

from __future__ import annotations

import tensorflow as tf


def grouped_convolution(inputs, kernel, strides, padding, dilation_rate):
    """A grouped convolution (kernel [h, w, in / groups, out]) as TensorFlow's Conv2D, which
    has groups on the CPU since TensorFlow 2.x: one plain Conv2D node, what every converter
    reads, and no XLA function around it (Keras' `ops.conv` compiles one per call)."""
    return tf.nn.convolution(inputs, kernel, strides=strides, padding=padding.upper(),
                             dilations=dilation_rate)
