"""Human parts (PASCAL-Context style): segmentation of the parts of people.

Scored, trained and drawn like semantic segmentation (cross-entropy; mIoU, pixel accuracy), with
its own folder. Only pixels on people carry a part; every other pixel is -1 (ignored), as
PASCAL-Context ignores the parts of everything that is not a person, so an image without a person
has no valid pixel (NaN metrics, zero loss).
"""

from __future__ import annotations

from core.tasks.base import register_kind
from core.tasks.segmentation import Segmentation


@register_kind
class Parts(Segmentation):
    """Per-pixel part classes on people, -1 elsewhere. Folder ``human_parts``: (H, W) ids."""

    name = "parts"
    folder = "human_parts"

    @property
    def folder_hint(self) -> str:
        return self.folder

    def discover(self, folders):
        """``human_parts``; its classes (PASCAL-Context: 6 parts, or 7 with a background) come
        from meta.json."""
        return super(Segmentation, self).discover(folders)
