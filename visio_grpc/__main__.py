"""`python -m visio_grpc` is the `visio` command."""

import sys

from visio_grpc.cli import main

sys.exit(main())
