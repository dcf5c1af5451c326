"""ML-Embed: elastic (3D Matryoshka) text embeddings on stock transformers backbones."""

from configuration_mlembed import MLEmbedConfig
from modeling_mlembed import MLEmbedModel, MLEmbedOutput

__all__ = ["MLEmbedConfig", "MLEmbedModel", "MLEmbedOutput"]
__version__ = "0.1.0"
