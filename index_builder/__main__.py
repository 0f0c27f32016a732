"""``python -m index_builder ...`` (and ``torchrun -m index_builder ...``) == ``build_index ...``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
