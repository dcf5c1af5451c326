"""mteb 2.x integration: an ML-Embed model at one elastic setting, evaluated like any mteb model, offline.

`MLEmbedMTEBEncoder` implements mteb's encoder protocol (`AbsEncoder.encode(inputs, task_metadata=, prompt_type=)`)
for fixed `layers` / `dim` / `rank`. Prompts follow the paper: queries (and both sides of symmetric tasks such as
STS) get `Instruct: {instruction}\\nQuery: `, documents get the model's `document` prompt (none). The instruction is
taken, first match wins, from: `instructions[task name]`, the task's own `metadata.prompt`,
`instructions[task type]` (defaults in `TASK_TYPE_INSTRUCTIONS`), mteb's default for the task class, and finally the
model's configured `query` prompt. Its `ModelMeta` carries the setting in `experiment_kwargs`, so mteb keeps results
of different settings apart, and counts the parameters that setting actually uses.

`local_retrieval_task` / `local_sts_task` build mteb tasks from in-memory data (nothing is downloaded), e.g.:

    import mteb
    task = local_retrieval_task("MyRetrieval", queries={"q1": "..."}, corpus={"d1": "..."}, qrels={"q1": {"d1": 1}})
    results = mteb.evaluate(MLEmbedMTEBEncoder(model, layers=8, dim=256), [task], cache=None)
    results.task_results[0].get_score()  # nDCG@10
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder, PromptSource
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

from configuration_mlembed import DEFAULT_INSTRUCTION, QUERY_TEMPLATE
from mlembed import CITATION

from .data import RetrievalData

logger = logging.getLogger(__name__)

TASK_TYPE_INSTRUCTIONS = {
    "Retrieval": DEFAULT_INSTRUCTION,
    "Reranking": DEFAULT_INSTRUCTION,
    "STS": "Retrieve semantically similar text",
    "PairClassification": "Retrieve semantically similar text",
}


class MLEmbedMTEBEncoder(AbsEncoder):
    """An `MLEmbedModel` at fixed (`layers`, `dim`, `rank`) as an mteb encoder.

    Args:
        model: the elastic model (with its tokenizer attached or loadable from `name_or_path`).
        layers, dim, rank: the elastic setting (`None` = full); validated here, before any task runs.
        batch_size, max_length: passed to `model.encode` (`max_length=None`: the model's `max_seq_length`).
        instructions: extra instructions by task name or task type (override `TASK_TYPE_INSTRUCTIONS`).
        name: model name for mteb's results (`org/name`); default from the model's path.
        revision: recorded in the results; default the checkpoint's commit hash, else `local`.
    """

    prompt_priority = (PromptSource.CUSTOM_PROMPT, PromptSource.DEFAULT_TASK_PROMPT, PromptSource.TASK_TYPE_PROMPT)
    instruction_template = QUERY_TEMPLATE

    def __init__(
        self,
        model: Any,
        layers: int | None = None,
        dim: int | None = None,
        rank: int | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        instructions: Mapping[str, str] | None = None,
        name: str | None = None,
        revision: str | None = None,
    ) -> None:
        self.model = model
        self.layers, self.dim, self.rank = model.resolve_axes(layers, dim, rank)
        self.batch_size = batch_size
        self.max_length = model.config.sequence_length if max_length is None else max_length
        self.prompts_dict = {**TASK_TYPE_INSTRUCTIONS, **(instructions or {})}
        self.mteb_model_meta = self._model_meta(name, revision)

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text of an mteb DataLoader with the prompt for this task and side. -> (N, dim) float32."""
        texts = [text for batch in inputs for text in batch["text"]]
        prompt = self.prompt_for(task_metadata, prompt_type)
        logger.info("%s (%s): %d texts, prompt %r", task_metadata.name, prompt_type, len(texts), prompt)
        return self.model.encode(
            texts,
            layers=self.layers,
            dim=self.dim,
            rank=self.rank,
            prompt=prompt,
            batch_size=kwargs.get("batch_size", self.batch_size),
            max_length=self.max_length,
        )

    def prompt_for(self, task_metadata: TaskMetadata, prompt_type: PromptType | None) -> str:
        """The text prepended for this task and side: none for documents, the instruction template otherwise."""
        prompts = self.model.config.prompts or {}
        if prompt_type == PromptType.document:
            return prompts.get("document", "")
        instruction = self.get_instruction(task_metadata, prompt_type)
        return self.format_instruction(instruction, prompt_type) if instruction else prompts.get("query", "")

    def _model_meta(self, name: str | None, revision: str | None) -> ModelMeta:
        config, model = self.model.config, self.model
        path = str(getattr(model, "name_or_path", "") or "ml-embed")
        hub_id = "/" in path and not path.startswith(("/", ".")) and not Path(path).exists()
        name = name or (path if hub_id else f"local/{Path(path).name or 'ml-embed'}")  # mteb wants org/name
        params = model.num_parameters(layers=self.layers, rank=self.rank)
        embedding = model.num_parameters(rank=self.rank) - model.num_parameters(exclude_embeddings=True)
        setting = {"layers": self.layers, "dim": self.dim, "rank": self.rank}
        return ModelMeta(
            loader=load_mteb_encoder,
            name=name,
            revision=revision or getattr(config, "_commit_hash", None) or "local",
            release_date=None,
            languages=None,
            n_parameters=params,
            n_embedding_parameters=embedding,
            memory_usage_mb=round(params * next(model.parameters()).element_size() / 2**20, 1),
            max_tokens=self.max_length,
            embed_dim=self.dim,
            license="apache-2.0",
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch", "Transformers"],
            similarity_fn_name="cosine",
            use_instructions=True,
            training_datasets=None,
            citation=CITATION,
            experiment_kwargs={k: v for k, v in setting.items() if v is not None},
        )


def load_mteb_encoder(model_name: str, revision: str | None = None, device: str | None = None, **kwargs: Any):
    """mteb loader (`ModelMeta.load_model`): load an ML-Embed folder and wrap it; `kwargs` hold layers/dim/rank."""
    from modeling_mlembed import MLEmbedModel

    model = MLEmbedModel.from_pretrained(model_name, revision=revision or "main").eval()
    if device:
        model = model.to(device)
    return MLEmbedMTEBEncoder(model, name=model_name if "/" in model_name else None, revision=revision, **kwargs)


# ---------------------------------------------------------------------------------------------------- local tasks
def _local_metadata(name: str, task_type: str, main_score: str, languages: Sequence[str], split: str) -> TaskMetadata:
    return TaskMetadata(
        name=name,
        type=task_type,
        main_score=main_score,
        description=f"Local {task_type} task built in memory.",
        reference=None,
        dataset={"path": f"local/{name}", "revision": "local"},
        category="t2t",
        eval_splits=[split],
        eval_langs=list(languages),
        modalities=["text"],
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
    )


class LocalRetrievalTask(AbsTaskRetrieval):
    """A retrieval task whose data is given in memory (`load_data` touches no network)."""

    metadata = _local_metadata("LocalRetrievalTask", "Retrieval", "ndcg_at_10", ["eng-Latn"], "test")

    def __init__(self, metadata: TaskMetadata, split_data: dict[str, Any], **kwargs: Any) -> None:
        self.metadata = metadata  # per instance: each local task has its own name
        self._split_data = split_data
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        self.dataset = {"default": {self.metadata.eval_splits[0]: self._split_data}}
        self.data_loaded = True


class LocalSTSTask(AbsTaskSTS):
    """An STS task whose sentence pairs and gold scores are given in memory."""

    metadata = _local_metadata("LocalSTSTask", "STS", "cosine_spearman", ["eng-Latn"], "test")

    def __init__(self, metadata: TaskMetadata, pairs: Dataset, min_score: float, max_score: float, **kw: Any) -> None:
        self.metadata = metadata
        self._pairs = pairs
        self.min_score, self.max_score = min_score, max_score
        super().__init__(**kw)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        self.dataset = DatasetDict({self.metadata.eval_splits[0]: self._pairs})
        self.data_loaded = True


def local_retrieval_task(
    name: str,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    languages: Sequence[str] = ("eng-Latn",),
    split: str = "test",
) -> LocalRetrievalTask:
    """An mteb retrieval task from {query id: text}, {doc id: text} and {query id: {doc id: relevance}}."""
    missing = sorted({d for rel in qrels.values() for d in rel} - set(corpus)) + sorted(set(qrels) - set(queries))
    if missing:
        raise ValueError(f"qrels name ids that are not in queries / corpus: {missing[:5]}")
    split_data = {
        "queries": Dataset.from_dict({"id": list(queries), "text": list(queries.values())}),
        "corpus": Dataset.from_dict({"id": list(corpus), "text": list(corpus.values())}),
        "relevant_docs": {q: dict(rel) for q, rel in qrels.items()},
        "top_ranked": None,
    }
    return LocalRetrievalTask(_local_metadata(name, "Retrieval", "ndcg_at_10", languages, split), split_data)


def retrieval_task_from_data(name: str, data: RetrievalData, languages: Sequence[str] = ("eng-Latn",)):
    """The mteb retrieval task of a loaded local file (ids `q<i>` / `d<j>` are list positions)."""
    return local_retrieval_task(
        name,
        {f"q{i}": text for i, text in enumerate(data.queries)},
        {f"d{j}": text for j, text in enumerate(data.corpus)},
        {f"q{i}": {f"d{j}": 1 for j in rel} for i, rel in enumerate(data.relevant)},
        languages,
    )


def local_sts_task(
    name: str,
    pairs: Sequence[tuple[str, str]],
    scores: Sequence[float],
    min_score: float = 0.0,
    max_score: float = 5.0,
    languages: Sequence[str] = ("eng-Latn",),
    split: str = "test",
) -> LocalSTSTask:
    """An mteb STS task from sentence pairs and gold similarity scores in [`min_score`, `max_score`]."""
    if len(pairs) != len(scores) or not pairs:
        raise ValueError(f"need one score per pair (at least one pair): got {len(pairs)} pairs, {len(scores)} scores")
    if any(not min_score <= s <= max_score for s in scores):
        raise ValueError(f"scores must lie in [{min_score}, {max_score}]")
    dataset = Dataset.from_dict(
        {"sentence1": [a for a, _ in pairs], "sentence2": [b for _, b in pairs], "score": [float(s) for s in scores]}
    )
    metadata = _local_metadata(name, "STS", "cosine_spearman", languages, split)
    return LocalSTSTask(metadata, dataset, min_score, max_score)
