"""``python -m ellrobust`` (also what ``torchrun -m ellrobust`` runs)."""

from ellrobust.cli import main

if __name__ == "__main__":
    main()
