"""Deprecated: `python -m resnet_tf.cli` is `python -m resnet_tf` (or the `resnet-tf`
command), which this still runs, with a warning."""

import sys
import warnings

from resnet_tf_cli import main

if __name__ == "__main__":
    warnings.warn("`python -m resnet_tf.cli` is deprecated: use `resnet-tf` or "
                  "`python -m resnet_tf`", FutureWarning, stacklevel=1)
    sys.exit(main())
