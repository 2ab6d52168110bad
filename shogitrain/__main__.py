"""`python -m shogitrain` and the `shogitrain` console script.

The command's modules (click, then torch inside a command) are imported inside ``run`` so that a
Ctrl-C while they load ends the process with 130 and one word, not a traceback."""

import os
import sys


def run() -> None:
    try:
        from shogitrain.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        os._exit(130)
    main()


if __name__ == "__main__":
    run()
