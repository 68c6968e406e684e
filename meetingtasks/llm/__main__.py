"""``python -m meetingtasks.llm``: the reference inference node (see ``node.py``)."""

import sys

from meetingtasks.llm.node import main

sys.exit(main())
