"""`python -m resnet_tf.cli`: the `resnet-tf` command (defined beside the package, in
`resnet_tf_cli`, so that `resnet-tf --help` needs no Keras)."""

import sys

from resnet_tf_cli import main

if __name__ == "__main__":
    sys.exit(main())
