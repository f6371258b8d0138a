from pneumonia_monai.cli.main import main
import sys

sys.exit(main())
