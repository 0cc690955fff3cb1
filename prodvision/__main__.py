import sys

from .cli import main

if __name__ == "__main__":  # `python -m prodvision`; importing this module (as Sphinx's autosummary does) runs nothing
    sys.exit(main())
