"""Optical-flow representation alignment: flow estimators, Eq. 13 flow images, representation
nets, the alignment loss and the ``flow-features`` cache."""

from medvid.flow.alignment import AlignConfig, AlignmentLoss, FlowAligner, build_alignment, flow_targets
from medvid.flow.estimators import DISFlow, RAFTFlow, build_flow_estimator
from medvid.flow.repnet import DinoViT, EfficientNetLite0, build_repnet, load_dino_state_dict
from medvid.flow.rgb import flow_to_rgb, hsv_to_rgb

__all__ = [
    "AlignConfig", "AlignmentLoss", "FlowAligner", "build_alignment", "flow_targets",
    "DISFlow", "RAFTFlow", "build_flow_estimator",
    "DinoViT", "EfficientNetLite0", "build_repnet", "load_dino_state_dict",
    "flow_to_rgb", "hsv_to_rgb",
]
