"""What exists only to serve the notebooks: widget computations and plots.

:mod:`~relkd_tutorial.tutorial.widgets` computes (pure functions, plain outputs) and
:mod:`~relkd_tutorial.tutorial.plots` draws (onto a given ``Axes``); the ``*_refilled_grkd``
modules do the same for notebooks 04 and 05. Nothing in the core imports this package.
"""
