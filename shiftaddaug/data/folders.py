"""Image-folder loading that survives a corrupt file: the file is named, then skipped (counted) or the run stops."""
from __future__ import annotations

import sys

from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.dataloader import default_collate

from ..errors import UserError


class BadSample(Exception):
    """A dataset item that cannot be used (e.g. a mask holding an unknown class): named, then skipped or fatal."""


def _path(ds, i: int) -> str:
    while isinstance(ds, Subset):  # a subset's index points into the dataset below it
        ds, i = ds.dataset, ds.indices[i]
    samples = getattr(ds, "samples", None) or getattr(ds, "_image_files", None)
    if samples is not None:
        s = samples[i]
        return str(s[0] if isinstance(s, tuple) else s)
    return f"image {i}"


class _Guarded(Dataset):
    """``ds[i]``, or ``(None, what)`` when the item cannot be used (decoded in a worker: errors come back as data)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        try:
            return self.ds[i]
        except BadSample as e:
            return None, str(e)
        except (OSError, SyntaxError) as e:  # PIL's errors for truncated or foreign files (not a transform's)
            return None, f"corrupt image {_path(self.ds, i)} ({type(e).__name__}: {str(e).splitlines()[0][:80]})"


def _collate(batch):
    good = [b for b in batch if b[0] is not None]
    return (*(default_collate(good) if good else (None, None)), [b[1] for b in batch if b[0] is None])


class CheckedLoader:
    """A DataLoader over an image folder whose corrupt images stop the run with one line (default) or are skipped
    with a warning that names each file and counts the skips (``skip=True``)."""

    def __init__(self, ds, loader_kw: dict, batch_size: int, skip: bool, **kw):
        if "sampler" in loader_kw:  # a distributed sampler shuffles itself
            kw.pop("generator", None)
        self.loader = DataLoader(_Guarded(ds), batch_size, collate_fn=_collate, **loader_kw, **kw)
        self.skip, self.skipped = skip, 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader.sampler, "set_epoch"):  # DistributedSampler: this epoch's order
            self.loader.sampler.set_epoch(epoch)

    def __iter__(self):
        for x, y, bad in self.loader:
            for what in bad:
                if not self.skip:
                    raise UserError(f"{what}; remove it, or set skip_corrupt_images=true to skip such files")
                self.skipped += 1
                print(f"warning: skipped {what} ({self.skipped} skipped so far)", file=sys.stderr)
            if x is not None:
                yield x, y
