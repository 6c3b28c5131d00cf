"""``python -m astrosage`` == the ``astrosage`` command."""

from .cli import main

main()
