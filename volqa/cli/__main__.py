"""``python -m volqa.cli``: the same as the ``volqa`` command."""

from . import main

main()
