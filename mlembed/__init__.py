"""ML-Embed: elastic (3D Matryoshka) text embeddings on stock transformers backbones.

The model classes load lazily, so `import mlembed.data` or `mlembed.losses` does not pay for transformers.

Modules that moved into the layered folders keep their old import paths (`MOVED`): `import mlembed.convert` or
`from mlembed.hub import export_hub` still work, with a DeprecationWarning naming the new home. They are served by a
finder rather than files left at the old paths, so git follows the moves when it merges edits made to the old files.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

__all__ = ["CITATION", "MLEmbedConfig", "MLEmbedModel", "MLEmbedOutput"]
__version__ = "0.1.0"
CITATION = """@inproceedings{zhang2026mlembed,
    title={ML-Embed: Inclusive and Efficient Embeddings for a Multilingual World},
    author={Ziyin Zhang and Zihan Liao and Hang Yu and Peng Di and Rui Wang},
    booktitle={ICML},
    year={2026},
    eprint={2605.15081},
    archivePrefix={arXiv},
}"""

# old import path -> the modules that now hold its names
MOVED: dict[str, tuple[str, ...]] = {
    "mlembed.cards": ("mlembed.export.cards",),
    "mlembed.convert": ("mlembed.export.convert", "mlembed.export.compat", "mlembed.export.slim"),
    "mlembed.engines": ("mlembed.export.engines",),
    "mlembed.hub": ("mlembed.export.hub",),
    "mlembed.search": ("mlembed.corpus.search",),
}


def __getattr__(name: str) -> Any:
    if name == "MLEmbedConfig":
        from configuration_mlembed import MLEmbedConfig

        return MLEmbedConfig
    if name in ("MLEmbedModel", "MLEmbedOutput"):
        import modeling_mlembed

        return getattr(modeling_mlembed, name)
    raise AttributeError(f"module 'mlembed' has no attribute {name!r}")


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path of `MOVED` as a module holding the public names of its new homes."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # a plain module

    def exec_module(self, module: types.ModuleType) -> None:
        homes = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {' and '.join(homes)}; import from there", DeprecationWarning, stacklevel=2
        )
        for home in homes:
            names = vars(importlib.import_module(home))
            module.__dict__.update({key: value for key, value in names.items() if not key.startswith("__")})


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
