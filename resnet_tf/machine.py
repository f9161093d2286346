"""The machine a figure was measured on: the CPU's model name and the instruction sets that
change int8 and bfloat16 results and speed (`cpu_features`), and the versions of the
frameworks and runtimes a process used. Standard library only (Keras is asked for its version
when `versions` runs)."""

from __future__ import annotations

import os
import platform
import sys

# The x86 flags (/proc/cpuinfo) that decide which int8 and bfloat16 kernels a runtime takes:
# without VNNI, int8 convolutions multiply u8 by s8 into a saturating int16 (vpmaddubsw).
CPU_FEATURES = {"avx2": ("avx2",), "avx512": ("avx512f",), "vnni": ("avx512_vnni", "avx_vnni"),
                "avx512_bf16": ("avx512_bf16",), "amx": ("amx_tile",)}


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_features(cpuinfo: dict | None = None) -> dict:
    """{feature: bool} for `CPU_FEATURES`, from the CPU's flags; {} where they are unknown."""
    flags = set((cpuinfo if cpuinfo is not None else _cpuinfo()).get("flags", "").split())
    if not flags:
        return {}
    return {name: any(flag in flags for flag in names) for name, names in CPU_FEATURES.items()}


def onednn_isa_cap() -> str | None:
    """The instruction set oneDNN (inside TensorFlow and OpenVINO) is capped to, where the
    environment caps it (`ONEDNN_MAX_CPU_ISA=AVX2`: the kernels of an x86 CPU without VNNI)."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or None


def machine_description() -> dict:
    """The platform, the CPU's model name, its core count and its int8/bf16 features (and
    oneDNN's ISA cap, where one is set)."""
    cpuinfo = _cpuinfo()
    processor = cpuinfo.get("model name") or platform.processor() or platform.machine()
    features = cpu_features(cpuinfo)
    if onednn_isa_cap():
        features["onednn_max_cpu_isa"] = onednn_isa_cap()
    return {"platform": platform.platform(), "processor": processor, "cores": os.cpu_count(),
            "cpu_features": features}


def versions() -> dict:
    from importlib import metadata

    import keras
    import numpy as np

    out = {"python": platform.python_version(), "keras": keras.__version__,
           "numpy": np.__version__}
    # The frameworks and runtimes this process used, by their distributions' versions.
    for module, distribution in (("tensorflow", "tensorflow"), ("jax", "jax"),
                                 ("ai_edge_litert", "ai-edge-litert"),
                                 ("onnxruntime", "onnxruntime"), ("tf2onnx", "tf2onnx"),
                                 ("openvino", "openvino"), ("nncf", "nncf")):
        if sys.modules.get(module) is not None:  # imported (None: blocked)
            try:
                out[module] = metadata.version(distribution)
            except metadata.PackageNotFoundError:
                out[module] = getattr(sys.modules[module], "__version__", "unknown")
    return out
