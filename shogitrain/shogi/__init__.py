"""Shogi itself: the vocabulary (pieces, squares, SFEN, move16) and a position with exact move legality."""
