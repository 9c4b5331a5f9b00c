"""Image registration: rigid/affine (SimpleITK), deformable instance optimisation (PyTorch, diffeomorphic), applying,
composing, inverting and saving transforms, label propagation and atlas fusion (see docs/registration.md)."""

from medimg.register.deformable import register_deformable
from medimg.register.linear import register_linear
from medimg.register.transform import Transform

__all__ = ["Transform", "register_deformable", "register_linear"]
