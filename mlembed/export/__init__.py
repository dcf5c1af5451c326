"""ML-Embed folders in and out: conversion from a backbone, and the exports stock code, engines and the Hub load.

* `convert`: a backbone (SVD) or a reference release -> an ML-Embed folder; reading and saving folders; the stock
  backbone of one setting (the dense embedding baked in, cut to k layers);
* `engines`: what serving engines read from an exported folder (standard library only);
* `cards`: model cards rendered from a config (`templates/card.md`);
* `hub`: the Hub folder (stock loaders and the elastic model from one folder), the offline cache install, push.
"""
