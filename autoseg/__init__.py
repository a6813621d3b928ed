"""autoseg: a self-configuring segmentation system for peripheral-nerve imaging.

Data flows one way, every arrow a file on disk::

    raw --fingerprint--> fingerprint.json --plan--> plans.json --preprocess--> arrays
        --train--> checkpoints --predict--> segmentations --evaluate--> metrics

Each stage is a subpackage; the command-line interface in :mod:`autoseg.cli` is a thin layer
over the functions they export.
"""

__version__ = "0.1.0"
