"""Inference: sliding-window prediction, ensembles, post-processing and model export.

Entry points: :func:`autoseg.inference.predict.load_predictor` and
:func:`autoseg.inference.predict.predict_cases` (``autoseg predict``).
"""
