"""`python -m stylerelight` (and `torchrun -m stylerelight ...`) runs the CLI."""

from .cli import main

if __name__ == "__main__":
    main()
