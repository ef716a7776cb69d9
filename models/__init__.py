"""The transformer backbone: embeddings -> pre-LN blocks -> pooling -> head.

Knows nothing of data or Lightning: it takes token tensors and a padding mask (True = real token).
"""

from models.transformer import LRATransformer

__all__ = ["LRATransformer"]
