"""The playing side: a USI engine for nets, engine matches and their statistics (docs/play.md)."""
