"""``python -m runner`` is the ``spotrun`` command (used to start agents with the same interpreter)."""

from runner.cli.app import main

main()
