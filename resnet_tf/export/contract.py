"""The names every exported file shares: its input and its output.

The three runtime formats take input `images`, float32 `[N, S, S, 3]`, raw 0..255 RGB pixels
already cropped and resized to the model's size S as `preprocessing.json` says (the
normalisation is inside), and give output `probabilities`, float32 `[N, C]`; the batch is
dynamic. A SavedModel's `serving_default` takes the same input at any size.
"""

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
