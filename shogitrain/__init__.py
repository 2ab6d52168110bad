"""shogitrain: an experiment runner for shogi policy/value networks.

Pipeline: game records --prepare--> compact position shards --train--> run directories
--eval/compare--> metrics and figures. See README.md.
"""

__version__ = "0.1.0"
