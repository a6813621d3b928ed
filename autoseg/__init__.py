"""autoseg: a self-configuring segmentation system for peripheral-nerve imaging.

Data flows one way, every arrow a file on disk::

    raw --fingerprint--> fingerprint.json --plan--> plans.json --preprocess--> arrays
        --train--> checkpoints --predict--> segmentations --evaluate--> metrics

Each stage is a subpackage; the command-line interface in :mod:`autoseg.cli` is a thin layer
over the functions they export.
"""

import os as _os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting make a PyTorch CPU step 30-60x slower whenever another
# process holds a core (measured on 2 cores: 3.2-5.8 s instead of 0.1 s per step); passive
# waiting costs little when the machine is quiet. It must be set before torch is imported, and
# a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
