import sys

from harness.cli import main

# Guarded: a process pool started with "spawn" (the result index's first build) imports the
# parent's main module in each worker, which must not run the command again.
if __name__ == "__main__":
    sys.exit(main())
