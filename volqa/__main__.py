"""``python -m volqa``: the same as the ``volqa`` command."""

from volqa.cli import main

main()
