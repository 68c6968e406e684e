"""``python -m meetingtasks`` is the ``meetingtasks`` command."""

from meetingtasks.run.cli import main

main()
