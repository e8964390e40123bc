"""``python -m topformer_deploy`` = the ``topformer-deploy`` command."""
from .cli import main

if __name__ == "__main__":
    main()
