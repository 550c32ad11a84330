"""``python -m handprop.demos`` = ``handprop-demo``."""

import sys

from handprop.demos import main

sys.exit(main())
