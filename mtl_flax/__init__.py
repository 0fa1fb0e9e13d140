"""Deep multi-task learning for subtle expressions: stacked ResNet-34s, tensor trace norms, ADA.

Modules: ``models`` (ResNet, the stacked multi-task network with hard sharing and cross-stitch),
``trace_norm`` (LAF / Tucker / TT tensor trace norms with U V^T gradients), ``adversarial``
(gradient reversal, the 512-128-64-2 discriminator), ``train`` (``train_and_evaluate``, the
jitted step), ``evaluate``, ``finetune``, ``checkpoint``, ``metrics`` and ``data``.
"""
