"""A corpus encoded once at full width into resumable parquet shards, and its funnel search in Qdrant.

Modules, bottom up: `inputs` (the rows to encode, validated once), `precision` (how vectors are stored, the MRL cut
of stored vectors) and `manifest` (what a corpus folder holds, the model's fingerprint); `encoder` (one model:
texts to vectors, shards written atomically); `ray_pool` (the Ray engine: an actor pool of encoders); `run`
(`encode_corpus`, resumption, `read_corpus`); `search` (the Qdrant index: a short quantised prefix for the
shortlist, the full vector for rescoring).
"""

from mlembed.corpus.encoder import EncodeJob, ShardEncoder, write_shard, write_vectors
from mlembed.corpus.inputs import CorpusInput
from mlembed.corpus.manifest import (
    FORMAT,
    MANIFEST_NAME,
    PROBE_TEXT,
    check_fingerprint,
    job_summary,
    read_manifest,
    shard_name,
)
from mlembed.corpus.precision import PRECISIONS, calibration_ranges, dequantize, quantize, truncate_vectors
from mlembed.corpus.run import ENGINES, encode_corpus, read_corpus

prefix = truncate_vectors  # its name until the MRL cut went through truncate_embeddings; kept for existing code

__all__ = [
    "ENGINES",
    "FORMAT",
    "MANIFEST_NAME",
    "PRECISIONS",
    "PROBE_TEXT",
    "CorpusInput",
    "EncodeJob",
    "ShardEncoder",
    "calibration_ranges",
    "check_fingerprint",
    "dequantize",
    "encode_corpus",
    "job_summary",
    "quantize",
    "read_corpus",
    "read_manifest",
    "shard_name",
    "truncate_vectors",
    "write_shard",
    "write_vectors",
]
