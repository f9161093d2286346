"""Writes tests/data/sources/*.npz: the logits torchvision's and timm's own ResNet code gives on
random weights (`source_weights.torch_state`, from a seed) and random inputs, so that the fast
tier proves parity with them without PyTorch. Run where PyTorch, torchvision and timm are
installed (`pip install -e ".[torch]"`):

    python tests/make_source_outputs.py

Each file holds `logits` [2, 1000] for one case: the source, the depth, the image size and the
output stride (16: torchvision's `replace_stride_with_dilation=[False, False, True]`, timm's
`output_stride=16`).
"""

import importlib.util
import os
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from source_weights import DATA, images, torch_state, write_bit_npz  # noqa: E402

# (source, depth or builder name (`source_weights.TORCH_VARIANTS`), image size, output stride)
CASES = [("torchvision", 18, 224, None), ("torchvision", 50, 224, None),
         ("torchvision", 50, 225, 16), ("timm", 50, 224, None), ("timm", 34, 161, None),
         ("torchvision", "resnext50_32x4d", 224, None),
         ("torchvision", "resnext50_32x4d", 225, 16),
         ("torchvision", "wide_resnet50_2", 161, None),
         ("torchvision", "resnext101_64x4d", 224, None),
         ("timm", "resnet50d", 224, None), ("timm", "resnet50d", 225, 16),
         ("timm", "seresnext50_32x4d", 161, None), ("timm", "seresnext50_32x4d", 224, 16),
         ("timm", "resnet101d", 225, None), ("timm", "seresnext101d_32x8d", 224, None),
         ("timm", "seresnext101d_32x8d", 193, 16),
         ("timm", "resnetv2_50x1_bit", 224, None), ("timm", "resnetv2_50x1_bit", 161, 16),
         ("timm", "resnetv2_101x1_bit", 225, None),
         # Google's BiT .npz layout of the same weights, read by timm's npz loader:
         ("bit", "resnetv2_50x1_bit", 224, None), ("bit", "resnetv2_50x1_bit", 161, 16),
         ("bit", "resnetv2_101x1_bit", 225, None)]


def import_torchvision():
    """torchvision's Python code. PyPI's Linux torchvision wheels link CUDA's torch, whose
    C++ ops (NMS, RoIAlign: not used by ResNet) fail to register beside a CPU-only torch; then
    the package is imported without running its `__init__`."""
    try:
        import torchvision
        return torchvision
    except (RuntimeError, OSError):
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        spec = importlib.util.find_spec("torchvision")
        package = types.ModuleType("torchvision")
        package.__path__, package.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules["torchvision"] = package
        import torchvision.models  # noqa: F401
        return package


def arch_name(arch) -> str:
    """The source's name of a case's network: `resnet<depth>`, or the builder's."""
    return f"resnet{arch}" if isinstance(arch, int) else arch


def source_model(source, arch, output_stride):
    import_torchvision()
    if source == "torchvision":
        from torchvision.models import resnet

        dilation = [False, False, output_stride == 16]
        return getattr(resnet, arch_name(arch))(replace_stride_with_dilation=dilation)
    import timm

    return timm.create_model(arch_name(arch), pretrained=False, **(
        {"output_stride": output_stride} if output_stride else {}))


def source_logits(source, arch, size, output_stride, seed=0):
    """The logits of the source's own model on `torch_state(arch, seed)`; source "bit": timm's
    model loaded by timm's loader of Google's `.npz` files from `write_bit_npz`'s file, which
    must give what the same weights as a state dict give (every array read, none missed)."""
    import tempfile

    import torch

    model = source_model("timm" if source == "bit" else source, arch, output_stride)
    if source == "bit":
        from timm.models.resnetv2 import _load_weights

        with tempfile.TemporaryDirectory() as tmp:
            _load_weights(model, write_bit_npz(torch_state(arch, seed), f"{tmp}/bit.npz"))
    else:
        state = {k: torch.from_numpy(v) for k, v in torch_state(arch, seed).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (
            missing, unexpected)
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(images(size).transpose(0, 3, 1, 2).copy())
        logits = model(x).numpy()
    if source == "bit":
        np.testing.assert_allclose(logits, source_logits("timm", arch, size, output_stride,
                                                         seed), rtol=1e-5, atol=1e-5)
    return logits


def case_path(source, arch, size, output_stride):
    return os.path.join(DATA, f"{source}_{arch_name(arch)}_{size}px_os{output_stride or 32}.npz")


if __name__ == "__main__":
    os.makedirs(DATA, exist_ok=True)
    for case in CASES:
        if os.path.exists(case_path(*case)) and "--all" not in sys.argv:
            continue  # (stored logits stay as they were; --all writes every case again)
        logits = source_logits(*case)
        np.savez_compressed(case_path(*case), logits=logits.astype(np.float32))
        print(case_path(*case), logits.shape, float(np.abs(logits).max()))
