"""Limits on the images the pipeline ingests and the served model decodes, declared once for both (no TensorFlow
import, so command-line checks can read them in a second)."""

# The largest image (width x height, for GIF all frames together) ingestion accepts and the served model decodes:
# ~300 MB of decoded RGB, enough for 108 MP phone photos; larger claims are refused from the header, before decoding.
MAX_IMAGE_PIXELS = 100_000_000
