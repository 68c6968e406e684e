"""``python -m meetingtasks`` is the ``meetingtasks`` command."""

from meetingtasks.cli import main

main()
