"""Training: the loss (``loss.py``) and, beside it, the loop, checkpoints and run logging.

Kept free of imports so that ``shogitrain.train.loss`` can be used (by ``shogitrain.evaluate``,
by tests) without pulling in the loop and its dependencies.
"""
