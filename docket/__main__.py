"""``python -m docket``: the same command line as the ``docket`` script."""

from .cli import main

if __name__ == "__main__":
    main()
