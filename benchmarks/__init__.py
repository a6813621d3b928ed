"""autoseg's benchmarks against nnU-Net v2, one script per measured thing.

Each script runs as a module of this package from the repository root, e.g.
``.venv/bin/python -m benchmarks.run_all --quick`` (``make bench`` runs them all); they import
each other and autoseg as packages (``from benchmarks.results import ...``), never through
``sys.path`` edits. A script that starts another one (or itself, for one measured step) does it
with ``results.module_command`` and ``results.checkout_env``, so the child imports this same
checkout's ``benchmarks`` and ``autoseg`` whichever interpreter and folder it runs in. Shared
helpers (the result file shape, timing, thread settings) live in ``results.py``. Not installed
with autoseg (``setup.py`` packages ``autoseg`` only) and not imported by it.
"""
