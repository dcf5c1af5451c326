"""ml-embed-mini: the example pipeline that builds a small elastic multilingual model on a CPU.

It is a *user* of the library (data source, recipe, export, evaluation, demo), kept apart from it:

* `debian`: Debian's translated package descriptions as (summary, description) retrieval pairs (the training
  data and the in-domain held-out split);
* `catalogues`: the out-of-domain test set (program messages translated from English, never trained on);
* `pipeline`: the steps (data, data-ood, convert, train, train-exits, export, eval), each cached;
* `report`: the tables, and the goals against the models trained for each setting alone;
* `demo`: the search demo at two elastic settings;
* `configs/`: the recipes (`mini.json`, then `mini-exits.json`: the two stages; `mini-plain.json`, the plain
  fine-tuning anchor of `bench/ablation.py`), shipped inside the package.

Run: `mlembed mini`.
"""
