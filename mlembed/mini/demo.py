"""The demo of ml-embed-mini: multilingual semantic search over a dozen texts, at the full setting and at the
reduced one, side by side."""

from __future__ import annotations

from typing import Any

from mlembed.mini.report import REDUCED

DEMO_CORPUS = (
    ("en", "apt installs, upgrades and removes software packages on Debian systems."),
    ("fr", "Le gestionnaire de paquets dpkg installe les fichiers .deb sur le système."),
    ("de", "Mit git verwaltet man Versionen von Quellcode und arbeitet im Team zusammen."),
    ("it", "Il compilatore gcc traduce il codice sorgente C in programmi eseguibili."),
    ("pl", "Przepis na pierogi: ugotuj ziemniaki, zagnieć ciasto z mąki i wody, nadziej i gotuj."),
    ("es", "Receta de paella: arroz, azafrán, pollo y mariscos cocinados en una sartén grande."),
    ("vi", "Phở bò là món ăn truyền thống của Việt Nam, gồm bánh phở, thịt bò và nước dùng."),
    ("en", "Bake the bread at 220 degrees for forty minutes until the crust is golden."),
    ("de", "Morgen wird es in Berlin regnerisch und windig, bei Temperaturen um zehn Grad."),
    ("pl", "Jutro w Warszawie słonecznie, temperatura do dwudziestu pięciu stopni."),
    ("vi", "Dự báo thời tiết: ngày mai Hà Nội có mưa rào và dông."),
    ("fr", "Il neigera demain sur les Alpes ; les routes de montagne seront fermées."),
)
DEMO_QUERIES = (
    "How do I install software packages?",
    "przepis na obiad",
    "Wie wird das Wetter morgen?",
    "thời tiết ngày mai",
)


def demo(model: Any, top: int = 3, width: int = 44) -> str:
    """Top hits per query at the full setting and at layers=3, dim=96, rank=64, side by side."""
    import numpy as np

    texts = [text for _, text in DEMO_CORPUS]
    settings = {"full": {}, "layers=3 dim=96 rank=64": dict(REDUCED)}
    if model.mel is None:
        settings = {"full": {}, "layers=3 dim=96": {"layers": REDUCED["layers"], "dim": REDUCED["dim"]}}
    hits = {}
    for label, kwargs in settings.items():
        docs = model.encode(texts, prompt_name="document", **kwargs)  # (N, dim)
        queries = model.encode(list(DEMO_QUERIES), prompt_name="query", **kwargs)  # (Q, dim)
        hits[label] = queries @ docs.T  # (Q, N) cosine similarities
    lines = ["  " + " | ".join(f"{label:<{width}}" for label in settings)]
    for q, query in enumerate(DEMO_QUERIES):
        lines.append(f"query: {query}")
        ranked = {label: np.argsort(-scores[q])[:top] for label, scores in hits.items()}
        for i in range(top):
            cells = []
            for label, scores in hits.items():
                j = ranked[label][i]
                lang, text = DEMO_CORPUS[j]
                cells.append(f"{scores[q, j]:.3f} [{lang}] {text[: width - 13]:<{width - 13}}")
            lines.append("  " + " | ".join(cells))
    return "\n".join(lines)


def print_demo(repo_id: str) -> None:
    """The demo through the installed model id, as a user would load it."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    print(f"\nMultilingual semantic search with {repo_id} ({len(DEMO_CORPUS)} texts, cosine scores):\n")
    print(demo(model))
