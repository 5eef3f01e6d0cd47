"""Attribution maps: where does a classifier look? FIDO (Chang et al., ICLR 2019) with the original
or the simplified concrete dropout (Korsch et al., GCPR 2023), and scores against known foregrounds.

    result = flowaug.attribution.fido(model, images, labels, objective="ssr", sampler="simplified",
                                      generator=torch.Generator().manual_seed(0))
    result.maps                      # (B,1,H,W) in [0,1]
    background_reliance(result.maps, masks)
"""
from flowaug.attribution.fido import OBJECTIVES, FidoResult, fido, make_infill, total_variation
from flowaug.attribution.samplers import SAMPLERS, sample_masks
from flowaug.attribution.scores import background_reliance, centre_square, region_auc, region_iou

__all__ = ["OBJECTIVES", "SAMPLERS", "FidoResult", "background_reliance", "centre_square", "fido", "make_infill",
           "region_auc", "region_iou", "sample_masks", "total_variation"]
