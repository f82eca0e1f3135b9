"""``python -m help_plugin`` = ``help-nas``."""
import sys

from .cli import main

sys.exit(main())
