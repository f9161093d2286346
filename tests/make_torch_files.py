"""Writes tests/data/torch/: small `.pth` files saved by real PyTorch, in both of its formats,
that `resnet_tf.weights.torch_files` must read without PyTorch (test_weight_files.py), and
`state.npz`, what `torch.load(weights_only=True)` gives for them.

Run with PyTorch and torchvision's Python code installed (`pip install torch==2.13.0`, then
`pip install --no-deps torchvision==0.28.0`): python tests/make_torch_files.py. The files hold
every kind of tensor a state dict has: float32, float16, bfloat16 and int64 (batch norm's
num_batches_tracked) tensors, a scalar, a non-contiguous view, two tensors sharing one storage
at an offset, and an nn.Parameter.

`resnet18_views.pth` is a whole torchvision ResNet-18 state dict in 0.4 MB: every tensor is a
strided view (`torch.as_strided`) into one shared random storage, which `torch.save` writes
once. `resnet18_views.npz` holds what torchvision's own ResNet-18 computes with it on
`source_weights.images(64)`.
"""

import collections
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_source_outputs import import_torchvision  # noqa: E402
from source_weights import images, torch_state_shapes  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch")


def state_dict():
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(10, generator=generator)
    return collections.OrderedDict([
        ("conv1.weight", torch.randn(4, 3, 3, 3, generator=generator)),
        ("bn1.running_var", torch.rand(4, generator=generator).half()),
        ("bn1.num_batches_tracked", torch.tensor(7)),
        ("fc.weight", torch.randn(3, 5, generator=generator).t()),  # non-contiguous
        ("head.bias", shared[2:6]),  # a view at an offset
        ("head.scale", shared[6:]),  # the same storage
        ("embed.weight", torch.nn.Parameter(torch.randn(2, 2, generator=generator))),
        ("norm.weight", torch.randn(6, generator=generator).to(torch.bfloat16)),
    ])


def resnet18_views():
    """torchvision's ResNet-18 state dict as strided views into one storage of 150,003
    floats: each tensor starts at its own offset and steps through the storage with strides
    97, 13, 5, 1 (one per axis, from the last), so a transposed or mis-mapped kernel shows."""
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(150_003, generator=generator) * 0.05
    variances = base[:50_000].abs() + 0.5  # a second storage, for the running variances
    state = collections.OrderedDict()
    for index, (key, shape) in enumerate(torch_state_shapes(18).items()):
        strides = (97, 13, 5, 1)[-len(shape):]
        source = variances if key.endswith("running_var") else base
        state[key] = torch.as_strided(source, shape, strides, (index * 7919) % 40_000)
    return base, state


def main():
    os.makedirs(OUT, exist_ok=True)
    state = state_dict()
    torch.save(state, os.path.join(OUT, "state_zip.pth"))
    torch.save(state, os.path.join(OUT, "state_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save({"model": state, "epoch": 3, "lr": 0.1}, os.path.join(OUT, "checkpoint.pth"))
    torch.save(torch.nn.Linear(2, 2), os.path.join(OUT, "whole_model.pth"))
    _, views = resnet18_views()
    torch.save(views, os.path.join(OUT, "resnet18_views.pth"))
    import_torchvision()
    from torchvision.models import resnet

    model = resnet.resnet18().eval()
    model.load_state_dict(torch.load(os.path.join(OUT, "resnet18_views.pth"), weights_only=True),
                          strict=False)  # num_batches_tracked is not in torch_state_shapes
    with torch.no_grad():
        logits = model(torch.from_numpy(images(64)).permute(0, 3, 1, 2)).numpy()
    np.savez(os.path.join(OUT, "resnet18_views.npz"), logits=logits)
    loaded = torch.load(os.path.join(OUT, "state_zip.pth"), weights_only=True)
    np.savez(os.path.join(OUT, "state.npz"), **{
        key: value.detach().float().numpy() if value.is_floating_point() else value.numpy()
        for key, value in loaded.items()})


if __name__ == "__main__":
    main()
