"""Background masking against background bias (Aniraj et al., ICCV 2023 workshops).

- Early masking (:class:`EarlyMasking`): the background is removed at the input, in training and
  at test time (:func:`mask_background` fills it with the dataset mean, zeros, a blur or noise).
- Late masking (:class:`LateMasking`): the backbone's feature maps are multiplied by the mask,
  downsampled to their resolution, and only foreground positions enter the global pooling.
- Predicted masks (:func:`train_mask_predictor`): where exact masks exist only for the training
  data, a small segmentation network learns them and supplies masks at test time.

Masks are float (B, 1, H, W) in [0, 1] (1 = foreground), exact or predicted.
"""
from flowaug.masking.early import FILLS, EarlyMasking, check_mask, mask_background
from flowaug.masking.late import LateMasking
from flowaug.masking.predictor import MaskPredictor, mask_iou, train_mask_predictor

__all__ = ["FILLS", "EarlyMasking", "LateMasking", "MaskPredictor", "check_mask", "mask_background", "mask_iou",
           "train_mask_predictor"]
