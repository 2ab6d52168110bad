"""Training: the step (``step.py``) and the loop around it (``loop.py``), the loss, batches from the
shards (``data.py``), the evaluation pass and its metrics, checkpoints and the run directory's logs.

Kept free of imports so that one part (the loss, the metrics) can be used without pulling in the rest.
"""


class TrainingError(Exception):
    """A run that cannot go on: bad data, too many non-finite steps, an unusable checkpoint."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal (SIGINT, SIGTERM) after saving a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
