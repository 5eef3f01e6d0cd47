import sys

from flowaug.cli import main

sys.exit(main())
