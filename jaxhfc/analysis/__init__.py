"""Analyses of what a trained model uses: LFC/HFC predictions, accuracy vs radius, Fourier
sensitivity heat maps, spectra of adversarial perturbations and occlusion maps.

Every sweep here is one compiled, batched call per chunk of images (and, for heat maps, per
chunk of frequencies) instead of a Python loop over images, radii or frequencies, run by
:func:`jaxhfc.parallel.sweep`: with a ``mesh`` (a 1-D :class:`jax.sharding.Mesh` with axis
``"data"``, see :func:`jaxhfc.parallel.make_mesh`) the images of each chunk are sharded
over the devices; the last chunk is padded and the padding dropped, so each image counts
exactly once, and results equal the unsharded ones (also with several processes, each
passing the same full arrays). The arrays of a
``logits_fn`` (the bound arguments of a ``jax.tree_util.Partial``, e.g. the model variables
of :func:`jaxhfc.train.logits_fn`) are arguments of the compiled sweeps, replicated over the
mesh, never constants; sweeps are cached on the rest of ``logits_fn`` (its function and
non-array leaves, :func:`jaxhfc.parallel.split_callable`), the mesh and static settings, so
the same model with other parameters (e.g. smoothed kernels) reuses one compiled program.

Conventions (see ``docs/architecture.md``):

* ``images`` arguments named ``images`` are the dataset's ``(N, H, W, C)`` 0..255 pixels
  (uint8 or float); the filters run on that scale, as in the paper's code.
* ``x`` arguments are unit-scale model inputs: ``(N, H, W, C)`` float32 in [0, 1].
* A ``logits_fn`` is a jittable ``x: (B, H, W, C) unit scale -> logits (B, K)`` whose
  examples are independent (eval mode), e.g. :func:`jaxhfc.train.logits_fn`.
* Filtered images become model inputs with ``scaling``: ``"paper"`` (the released code,
  the default) divides each filtered image by its own maximum over (H, W, C), and gives an
  all-zero input where that maximum is ``<= EMPTY_IMAGE_MAX`` (e.g. the LFC at r=0);
  ``"unit"`` divides by 255. Original images are always divided by 255. This is the rule of
  :func:`jaxhfc.datasets.to_model_input`, applied on the device.

Public API:

* :func:`prediction_counts`, :func:`cell_indices`, :data:`COUNT_COLUMNS` -- the paper's
  Fig. 1/2 counts of {LFC right/wrong} x {HFC right/wrong}.
* :func:`radius_predictions` (jitted, ``logits_fn``): predictions on LFC/HFC versions at many radii.
* :func:`accuracy_vs_radius`, :func:`crossing_point`,
  :func:`ring_edges`, :func:`ring_accuracy`.
* :func:`fourier_heatmap`, :func:`heatmap_signs`, :func:`heatmap_perturbation`
  (Yin et al. 2019).
* :func:`perturbation_spectrum`, :func:`energy_share_outside`, :func:`pgd_perturbations`.
* :func:`occlusion_map` (Zeiler and Fergus 2014).
"""

from jaxhfc.datasets.transforms import EMPTY_IMAGE_MAX, SCALINGS
from jaxhfc.analysis.counts import COUNT_COLUMNS, cell_indices, prediction_counts
from jaxhfc.analysis.radius import accuracy_vs_radius, crossing_point, radius_predictions, ring_accuracy, ring_edges
from jaxhfc.analysis.heatmap import fourier_heatmap, heatmap_perturbation, heatmap_signs
from jaxhfc.analysis.spectra import energy_share_outside, perturbation_spectrum, pgd_perturbations
from jaxhfc.analysis.occlusion import occlusion_map, occlusion_positions

__all__ = [
    "SCALINGS",
    "EMPTY_IMAGE_MAX",
    "COUNT_COLUMNS",
    "prediction_counts",
    "cell_indices",
    "radius_predictions",
    "accuracy_vs_radius",
    "crossing_point",
    "ring_edges",
    "ring_accuracy",
    "heatmap_signs",
    "heatmap_perturbation",
    "fourier_heatmap",
    "perturbation_spectrum",
    "energy_share_outside",
    "pgd_perturbations",
    "occlusion_positions",
    "occlusion_map",
]
