"""Every released ResNet weight file resnet_tf knows, one row each (`Published`): slim's
releases (`weights="imagenet"`) beside torchvision's, timm's and keras.applications'. A row
says where the file is and how to check it (its published hash), what its makers say (their
name, their top-1) and what it needs (its classes, the preprocessing it was evaluated with).
`weights.sources.resolve_weights` is the one dispatcher over these rows and over files;
`weights.cache` fetches and checks them. Data only: no Keras, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse

from resnet_tf.data.pixels import EvalPreprocessing
from resnet_tf.errors import UserError

TORCHVISION_URL = "https://download.pytorch.org/models/{file}"
TIMM_URL = "https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/{file}"
KERAS_RS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet_rs/{file}"
BIT_URL = "https://storage.googleapis.com/bit_models/{name}.npz"

SLIM_URL = "http://download.tensorflow.org/models/{release}.tar.gz"


@dataclasses.dataclass(frozen=True)
class SlimConventions:
    """What a slim checkpoint of a family expects: its classes and its eval preprocessing."""

    num_classes: int
    preprocessing: str  # "inception" | "vgg"
    image_size: int

    def eval_preprocessing(self, image_size=None) -> EvalPreprocessing:
        return EvalPreprocessing(self.preprocessing, image_size or self.image_size)


# Any slim checkpoint of a family follows its family's conventions.
FAMILIES = {
    "resnet_v1": SlimConventions(1000, "vgg", 224),
    "resnet_v2": SlimConventions(1001, "inception", 299),
}


def slim_conventions(model_name: str) -> SlimConventions:
    """The conventions of slim's checkpoints for `model_name` (its family's)."""
    for family, conventions in FAMILIES.items():
        if model_name.startswith(family + "_"):
            return conventions
    raise UserError(f"slim released no checkpoints of {model_name!r}'s family; slim "
                    f"checkpoints are {sorted(FAMILIES)} models")


@dataclasses.dataclass(frozen=True)
class Published:
    """A source's released weights for one builder: where they are, how to check them, what
    their makers say of them and what they need."""

    # "imagenet" (slim's releases) | "torchvision" | "timm" | "keras" | "bit-m" | "bit-m-in1k"
    source: str
    model: str  # the builder, e.g. "resnet_v1_50"
    name: str  # the source's own name, e.g. "ResNet50_Weights.IMAGENET1K_V2"
    url: str
    top1: float | None  # ImageNet-1k top-1 (%) as the source publishes it
    preprocessing: EvalPreprocessing
    # The file's MD5 or SHA-256, or the SHA-256's first hex digits (`cache.hash_matches`),
    # where the source publishes one: a cached file is checked before it is used.
    file_hash: str | None = None
    num_classes: int = 1000

    @property
    def is_slim(self) -> bool:
        """A slim checkpoint tarball, loaded by slim's variable names (`weights.slim`)."""
        return self.source == "imagenet"

    @property
    def fname(self) -> str:
        """Its name in the cache: the source, its name and the file's (slim's releases keep
        their archive's, as earlier versions cached them)."""
        file = os.path.basename(urllib.parse.urlparse(self.url).path)
        if self.is_slim:
            return file
        if os.path.splitext(file)[0] == self.name:  # (BiT's files are named as the weights)
            return f"{self.source}-{file}"
        return f"{self.source}-{self.name.replace('/', '-')}-{file}"

    @property
    def former_fname(self) -> str | None:
        """Its name in caches filled by resnet_tf 0.1.0 (keras' rows named the file twice),
        taken over by `cache.fetch`."""
        file = os.path.basename(urllib.parse.urlparse(self.url).path)
        return (f"keras-{os.path.splitext(file)[0]}-{file}" if self.source == "keras" and
                self.model.startswith("resnet_v") else None)


def _slim(model, date, top1):
    conventions = slim_conventions(model)
    return Published("imagenet", model, f"{model}_{date}", SLIM_URL.format(
        release=f"{model}_{date}"), top1, conventions.eval_preprocessing(),
        num_classes=conventions.num_classes)


def _torchvision(depth, file, version, top1, resize_side, model=None, weights_enum=None):
    # torchvision's file names end in the first hex digits of the file's SHA-256 (its check).
    sha256_prefix = os.path.splitext(file)[0].rsplit("-", 1)[1]
    return Published("torchvision", model or f"resnet_v1_{depth}",
                     f"{weights_enum or f'ResNet{depth}_Weights'}.{version}",
                     TORCHVISION_URL.format(file=file), top1,
                     EvalPreprocessing("torchvision", 224, resize_side=resize_side),
                     sha256_prefix)


def _timm(depth, name, top1):
    # timm's test recipe for these (pretrained_cfg test_input_size, test_crop_pct), at which
    # its results table measures top-1: 288 px, the whole smaller side (crop 1.0), bicubic.
    return Published("timm", f"resnet_v1_{depth}", name, TIMM_URL.format(name=name), top1,
                     EvalPreprocessing("torchvision", 288, resize_side=288))


def _timm_variant(model, tag, top1, size, crop):
    # timm's test recipe (pretrained_cfg test_input_size, test_crop_pct), at which its results
    # table (results-imagenet.csv) gives top-1; resized as timm does, floor(size / crop).
    return Published("timm", model, f"{model}.{tag}", TIMM_URL.format(name=f"{model}.{tag}"),
                     top1, EvalPreprocessing("torchvision", size,
                                             resize_side=int(size / crop)))


def _timm_bit(depth, width, top1, size):
    # Big Transfer's BiT-M (ImageNet-21k) fine-tuned on ImageNet-1k, as timm hosts it: [-1, 1]
    # pixels, the whole image resized to the fine-tuned size (no crop), as BiT evaluates.
    name = f"resnetv2_{depth}x{width}_bit.goog_in21k_ft_in1k"
    return Published("timm", f"resnet_v2_{depth}x{width}_bit", name, TIMM_URL.format(name=name),
                     top1, EvalPreprocessing("inception", size, central_fraction=None))


def _bit(depth, width, top1=None, size=None):
    # Google's own Big Transfer files (BiT's repository), its .npz layout. BiT-M ("bit-m"):
    # pre-trained on ImageNet-21k, 21,843 classes, at 224 px (timm's recipe for them: the
    # central 87.5 %). Fine-tuned on ImageNet-1k ("bit-m-in1k", `BiT-M-R50x1-ILSVRC2012`): the
    # files timm converted to its goog_in21k_ft_in1k (the same weights), so their top-1 is
    # timm's results-imagenet.csv at its size, the whole image resized.
    name = f"BiT-M-R{depth}x{width}" + ("-ILSVRC2012" if size else "")
    model = f"resnet_v2_{depth}x{width}_bit"
    if size is None:
        return Published("bit-m", model, name, BIT_URL.format(name=name), None,
                         EvalPreprocessing("inception", 224, central_fraction=0.875),
                         num_classes=21843)
    return Published("bit-m-in1k", model, name, BIT_URL.format(name=name), top1,
                     EvalPreprocessing("inception", size, central_fraction=None))


def _keras_rs(depth, size, md5, top1):
    # tf_keras' ResNetRS{depth}(weights="imagenet"): its largest published input size. Its
    # model normalises x / 255 with ImageNet's mean and std ("torchvision"); the Model
    # Garden evaluates with a central crop of size / (size + 32).
    return Published("keras", f"resnet_rs_{depth}", f"ResNetRS{depth}",
                     KERAS_RS_URL.format(file=f"resnet-rs-{depth}-i{size}.h5"), top1,
                     EvalPreprocessing("torchvision", size, resize_side=size + 32), md5)


def _keras(model, file, file_hash, top1):
    prep = (EvalPreprocessing("caffe", 224, resize_side=256) if "v1" in model
            else EvalPreprocessing("inception", 224, central_fraction=None))
    application = {"50": "ResNet50", "101": "ResNet101", "152": "ResNet152"}[
        model.rsplit("_", 1)[1]] + ("V2" if "v2" in model else "")
    return Published("keras", model, application, KERAS_URL.format(file=file), top1, prep,
                     file_hash)


# Big Transfer's BiT-M fine-tuned on ImageNet-1k: (depth, width, top-1 in timm's
# results-imagenet.csv, the size it measures at).
BIT_IN1K = ((50, 1, 80.386, 448), (50, 3, 83.982, 448), (101, 1, 82.332, 448),
            (101, 3, 84.430, 448), (152, 2, 84.468, 448), (152, 4, 84.936, 480))
CATALOG: dict = {}  # source -> {builder name: Published}
for _p in (
        # research/slim's "Pre-trained Models": V1 (VGG preprocessing, 224 px, 1000 classes)
        # and V2 (Inception preprocessing, 299 px, 1001 classes: 0 is background).
        _slim("resnet_v1_50", "2016_08_28", 75.2),
        _slim("resnet_v1_101", "2016_08_28", 76.4),
        _slim("resnet_v1_152", "2016_08_28", 76.8),
        _slim("resnet_v2_50", "2017_04_14", 75.6),
        _slim("resnet_v2_101", "2017_04_14", 77.0),
        _slim("resnet_v2_152", "2017_04_14", 77.8),
        # torchvision's ResNet*_Weights.DEFAULT: IMAGENET1K_V2 where it exists, else V1.
        _torchvision(18, "resnet18-f37072fd.pth", "IMAGENET1K_V1", 69.758, 256),
        _torchvision(34, "resnet34-b627a593.pth", "IMAGENET1K_V1", 73.314, 256),
        _torchvision(50, "resnet50-11ad3fa6.pth", "IMAGENET1K_V2", 80.858, 232),
        _torchvision(101, "resnet101-cd907fc2.pth", "IMAGENET1K_V2", 81.886, 232),
        _torchvision(152, "resnet152-f82ba261.pth", "IMAGENET1K_V2", 82.284, 232),
        # timm's ResNet-strikes-back weights (arXiv:2110.00476, procedure A1 / A1h).
        _timm(18, "resnet18.a1_in1k", 73.158),
        _timm(34, "resnet34.a1_in1k", 77.918),
        _timm(50, "resnet50.a1_in1k", 81.214),
        _timm(101, "resnet101.a1h_in1k", 82.778),
        _timm(152, "resnet152.a1h_in1k", 83.450),
        # keras.applications' ResNet50/101/152 (V1) and ResNet50V2/101V2/152V2.
        _keras("resnet_v1_50", "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
               "2cb95161c43110f7111970584f804107", 74.9),
        _keras("resnet_v1_101", "resnet101_weights_tf_dim_ordering_tf_kernels.h5",
               "f1aeb4b969a6efcfb50fad2f0c20cfc5", 76.4),
        _keras("resnet_v1_152", "resnet152_weights_tf_dim_ordering_tf_kernels.h5",
               "100835be76be38e30d865e96f2aaae62", 76.6),
        _keras("resnet_v2_50", "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
               "3ef43a0b657b3be2300d5770ece849e0", 76.0),
        _keras("resnet_v2_101", "resnet101v2_weights_tf_dim_ordering_tf_kernels.h5",
               "6343647c601c52e1368623803854d971", 77.2),
        _keras("resnet_v2_152", "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5",
               "a49b44d1979771252814e80f8ec446f9", 78.0),
        # The stronger ResNets (`models.variants`). torchvision's DEFAULT weights:
        _torchvision(50, "resnext50_32x4d-1a0047aa.pth", "IMAGENET1K_V2", 81.198, 232,
                     "resnext50_32x4d", "ResNeXt50_32X4D_Weights"),
        _torchvision(101, "resnext101_32x8d-110c445d.pth", "IMAGENET1K_V2", 82.834, 232,
                     "resnext101_32x8d", "ResNeXt101_32X8D_Weights"),
        _torchvision(101, "resnext101_64x4d-173b62eb.pth", "IMAGENET1K_V1", 83.246, 232,
                     "resnext101_64x4d", "ResNeXt101_64X4D_Weights"),
        _torchvision(50, "wide_resnet50_2-9ba9bcbe.pth", "IMAGENET1K_V2", 81.602, 232,
                     "wide_resnet50_2", "Wide_ResNet50_2_Weights"),
        _torchvision(101, "wide_resnet101_2-d733dc28.pth", "IMAGENET1K_V2", 82.510, 232,
                     "wide_resnet101_2", "Wide_ResNet101_2_Weights"),
        # timm's default tags (RandAugment "ra2", "racm"; "ah" for the SE-ResNeXt-101-D).
        _timm_variant("resnet50d", "ra2_in1k", 81.354, 288, 0.95),
        _timm_variant("resnet101d", "ra2_in1k", 83.020, 320, 1.0),
        _timm_variant("resnet152d", "ra2_in1k", 83.684, 320, 1.0),
        _timm_variant("resnet200d", "ra2_in1k", 83.976, 320, 1.0),
        _timm_variant("seresnext50_32x4d", "racm_in1k", 82.186, 288, 0.95),
        _timm_variant("seresnext101d_32x8d", "ah_in1k", 84.380, 288, 1.0),
        # tf_keras' ResNet-RS ([RS] Table; the TPU repository's checkpoints, as tf_keras
        # converted them), with tf_keras' MD5s.
        _keras_rs(50, 160, "69d9d925319f00a8bdd4af23c04e4102", 78.8),
        _keras_rs(101, 192, "eb285be29ab42cf4835ff20a5e3b5d23", 81.2),
        _keras_rs(152, 256, "ba6271b99bdeb4e7a9b15c05964ef4ad", 83.0),
        _keras_rs(200, 256, "a76930b741884e09ce90fa7450747d5f", 83.4),
        _keras_rs(270, 256, "20d575825ba26176b03cb51012a367a8", 83.8),
        _keras_rs(350, 320, "7ccb858cc738305e8ceb3c0140bee393", 84.2),
        _keras_rs(420, 320, "ae0eb9bed39e64fc8d7e0db4018dc7e8", 84.4),
        # Big Transfer (`models.bit`): timm's results-imagenet.csv at the fine-tuned size.
        *(_timm_bit(*row) for row in BIT_IN1K),
        # ... and Google's own files of BiT-M, pre-trained and fine-tuned (the same weights).
        *(_bit(depth, width) for depth, width, _, _ in BIT_IN1K),
        *(_bit(*row) for row in BIT_IN1K)):
    CATALOG.setdefault(_p.source, {})[_p.model] = _p
del _p
# What `weights=` names: "imagenet", "torchvision", "timm", "keras", "bit-m", "bit-m-in1k".
NAMED = tuple(CATALOG)


def published(source: str, model_name: str) -> Published:
    """The row of `source`'s weights for builder `model_name`, or one sentence."""
    if model_name not in CATALOG[source]:
        whose = "slim released no ImageNet" if source == "imagenet" else \
            f"{source} publishes no"
        raise UserError(f"{whose} weights for {model_name}; weights={source!r} is available "
                        f"for {sorted(CATALOG[source])} (or pass weights=URL or PATH of a "
                        "file of your own)")
    return CATALOG[source][model_name]
