"""Anatomy expert: lung (right/left) and heart segmentation trained by radlens, and measures derived from it.

    from radlens.anatomy import segment
    masks = segment(["chest.dcm"])[0]        # or decoded 2-D float arrays in [0,1], or Radiographs
    masks.lung_right, masks.lung_left, masks.heart    # bool (H, W), the input's size
    masks.measures().ctr                     # cardiothoracic ratio; lung areas, right/left ratio, flags

The weights ship in the package (`weights/radlens-anatomy-v1`: model card with data, recipe and held-out
metrics); `radlens train-anatomy` reproduces them and `radlens segment` runs the model over folders of images.
"""

from radlens.anatomy.api import PACKAGED_WEIGHTS, STRUCTURES, AnatomyMasks, AnatomyModel, load, segment
from radlens.anatomy.measures import AnatomyMeasures, measure

__all__ = ["PACKAGED_WEIGHTS", "STRUCTURES", "AnatomyMasks", "AnatomyMeasures", "AnatomyModel", "load", "measure",
           "segment"]
