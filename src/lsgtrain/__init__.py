"""lsgtrain: fine-tune LSG-Pegasus on long documents."""

from . import embedded  # noqa: F401  (registers the `lsgtrain_embedded` config resolver)
