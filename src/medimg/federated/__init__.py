"""Federated training: one segmentation model from several sites' data without moving the data (Flower), with
optional differential privacy (Opacus). See docs/federated.md.

* :func:`train_federated` -- all sites on this machine (Flower's simulation runtime), a complete model folder.
* :mod:`medimg.federated.flower` -- ``serve`` / ``connect`` for real sites over gRPC.
* :class:`Site` -- a site's local trainer; :mod:`medimg.federated.dp` -- DP-SGD and its accounting.
"""

from medimg.federated.site import Site
from medimg.federated.train import merge_fingerprints, train_federated

__all__ = ["Site", "merge_fingerprints", "train_federated"]
