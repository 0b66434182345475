import sys

from distillab.cli import main

sys.exit(main())
