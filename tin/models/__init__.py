"""TIN, TSM and TSN video ResNets.

build_model(name, num_classes, num_segments=8, **options)   the entry point
MODELS, MODEL_NAMES                                          the model table: family, options, parameters
TemporalInterlace, TemporalShift                             the temporal modules
VideoResNet                                                  the per-frame ResNet with consensus
load_pretrained(model, path)                                 torchvision ImageNet initialisation
param_groups(model, lr, weight_decay)                        optimiser groups of the recipes
"""

from tin.models.build import MODEL_NAMES, MODELS, build_model
from tin.models.param_groups import param_groups
from tin.models.pretrained import PretrainedReport, load_pretrained
from tin.models.resnet import TemporalConv2d, VideoResNet
from tin.models.temporal import TemporalInterlace, TemporalShift

__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "PretrainedReport",
    "TemporalConv2d",
    "TemporalInterlace",
    "TemporalShift",
    "VideoResNet",
    "build_model",
    "load_pretrained",
    "param_groups",
]
