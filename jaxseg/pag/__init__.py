"""Tools built on the perceptually aligned gradients of robust models.

Methods and papers: docs/algorithms.md#perceptually-aligned-gradients.

Modules: ``generate`` (images from target label maps, seeds), ``inpaint`` (fill a masked region toward a label
map, penalty or hard mode), ``saliency`` (gradient, gradient x input, SmoothGrad, integrated gradients),
``localize`` (masks, boxes, localisation accuracy, pointing game), ``interpret`` (ROAR / KAR, gradient
alignment), ``common`` (checks and the projected-descent loop), ``io`` (PNG files, models and figures for the
CLI). Submodules are imported explicitly (``from jaxseg.pag import generate``) so the CLI stays light.
"""
