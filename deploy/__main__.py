"""Entry point of the packaged application (``python deploy`` / the MAP's ``python3 /opt/holoscan/app``)."""

from app import main

main()
