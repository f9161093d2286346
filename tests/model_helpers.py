"""Small helpers the model tests share."""

import numpy as np


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)
