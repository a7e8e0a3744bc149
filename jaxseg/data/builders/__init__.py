"""TFDS builders of the segmentation datasets; importing this package registers them with TFDS.

Every builder writes ``{"image": uint8 (H, W, 3), "label": uint8 (H, W), "id": str}`` examples as
``tfds.features.Tensor`` features (no TensorFlow needed to prepare or read) into ArrayRecord files.
"""

from jaxseg.data.builders.ade20k import Ade20k
from jaxseg.data.builders.cityscapes import Cityscapes
from jaxseg.data.builders.synthetic_shapes import SyntheticShapes, SyntheticShapesConfig
from jaxseg.data.builders.voc import Voc2012Seg

BUILDERS = {builder.name: builder for builder in (Voc2012Seg, Ade20k, Cityscapes, SyntheticShapes)}

__all__ = ["BUILDERS", "Ade20k", "Cityscapes", "SyntheticShapes", "SyntheticShapesConfig", "Voc2012Seg"]
