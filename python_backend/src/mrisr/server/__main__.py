"""`python -m mrisr.server [--host H] [--port P] [--token T] …`: the same as `mrisr serve`."""

import sys

from mrisr.server.commands import main

if __name__ == "__main__":
    sys.exit(main())
