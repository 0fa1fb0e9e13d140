"""Flax models: the ResNet trunk and the stacked multi-task network."""
from mtl_flax.models.multitask import MultiTaskNet, build_multitask, hard_shared_layers
from mtl_flax.models.resnet import ResNet, ResNet18, ResNet34, ResNetTiny, conv_layer_names
