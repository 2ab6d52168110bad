"""Playing a net: a USI engine (policy mode or a dlshogi-style PUCT search) for any trained net.

``evaluator`` runs the net behind one batched call, ``tree`` and ``search`` hold the Monte Carlo
tree search, ``timeman`` the time management, ``options`` the engine's USI options and ``usi`` the
protocol loop (``shogitrain usi``). Matches between engines (``shogitrain match``): ``usi_client``
drives engine processes, ``referee`` plays and adjudicates a game, ``csa_writer`` records it,
``match`` runs the schedule, ``elo`` and ``results`` hold the statistics. The board is cshogi's,
the optional ``[play]`` extra. How to use it: docs/play.md.
"""

from __future__ import annotations

INSTALL_HINT = 'pip install "shogitrain[play]"'


class PlayError(Exception):
    """A model or an input the engine cannot use; the message is one line naming the file or option."""


def import_cshogi():
    """The cshogi module, or a PlayError saying how to install it."""
    try:
        import cshogi
    except ImportError:
        raise PlayError(f"the USI engine needs cshogi: {INSTALL_HINT}") from None
    return cshogi
