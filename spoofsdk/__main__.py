"""``python -m spoofsdk`` = the ``spoofsdk`` command."""
from .cli import main

main()
