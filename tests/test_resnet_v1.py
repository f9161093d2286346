"""ResNet V1 and the basic-unit ResNet-18/34 of [1]: sizes, spec errors."""

import pytest
from model_helpers import trainable_count

import resnet_tf


# torchvision's resnet18/34/50 at 1000 classes (its counts are trainable parameters: BN moving
# statistics are buffers).
@pytest.mark.parametrize("builder,count", [
    (resnet_tf.resnet_v1_18, 11_689_512),
    (resnet_tf.resnet_v1_34, 21_797_672),
    (resnet_tf.resnet_v1_50, 25_557_032),
])
def test_v1_sizes_are_torchvisions(builder, count):
    assert trainable_count(builder(num_classes=1000)) == count


def test_unknown_depths_are_named():
    with pytest.raises(ValueError, match="Unknown ResNet V1 depth"):
        resnet_tf.resnet_v1_blocks(77)
    with pytest.raises(ValueError, match="Unknown ResNet V2 depth"):
        resnet_tf.resnet_v2_blocks(77)
