"""ML-Embed: elastic (3D Matryoshka) text embeddings on stock transformers backbones.

The model classes load lazily, so `import mlembed.data` or `mlembed.losses` does not pay for transformers.
"""

from __future__ import annotations

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


def __getattr__(name: str) -> Any:
    if name == "MLEmbedConfig":
        from configuration_mlembed import MLEmbedConfig

        return MLEmbedConfig
    if name in ("MLEmbedModel", "MLEmbedOutput"):
        import modeling_mlembed

        return getattr(modeling_mlembed, name)
    raise AttributeError(f"module 'mlembed' has no attribute {name!r}")
