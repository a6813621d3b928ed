"""``nnUNetTrainerBudget`` where nnU-Net looks for trainers it does not ship.

``nnUNetv2_predict -tr nnUNetTrainerBudget`` builds the network through the checkpoint's
trainer class, found by name in nnU-Net's package or in the folders of the
``nnUNet_extTrainer`` environment variable; ``benchmarks/nnunet_peer.py`` sets it to this
folder. The class itself is ``bench_accuracy.py``'s (nnU-Net's trainer with a wall-clock
budget; its network is nnUNetTrainer's, unchanged). Imported only in ``.venv-bench``, by file
(``bench_inference.NNUNET_SHIM``), in a process whose ``PYTHONPATH`` starts with this checkout
(``bench_accuracy.Context.nn_env``): hence the package import, without any ``sys.path`` edit.
"""

from benchmarks.bench_accuracy import _budget_trainer_class

nnUNetTrainerBudget = _budget_trainer_class()  # noqa: N816 (nnU-Net's naming)
