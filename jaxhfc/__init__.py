"""jaxhfc: JAX/Flax reproduction of Wang et al., "High-frequency Component Helps Explain
the Generalization of Convolutional Neural Networks" (CVPR 2020).

Submodules are imported lazily by the user (``from jaxhfc import fourier``); importing the
package does no work and has no side effects.
"""

__version__ = "0.1.0"
