"""`python -m resnet_tf_cli`: the `resnet-tf` command."""

import sys

from resnet_tf_cli import main

sys.exit(main())
