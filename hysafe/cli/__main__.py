"""``python -m hysafe.cli`` (what ``torchrun ... -m hysafe.cli`` runs)."""

import sys

from .main import main

sys.exit(main())
