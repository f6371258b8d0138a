import sys

from pneumonia_monai.cli.main import main

sys.exit(main())
