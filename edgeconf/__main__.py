"""``python -m edgeconf`` runs the command line."""
from edgeconf.cli import main

if __name__ == "__main__":
    main()
