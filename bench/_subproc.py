"""Run one benchmark function in a process of its own: ``python -m bench._subproc MODULE FUNC IN OUT``.

The keyword arguments are read from the pickle ``IN``; the result is pickled to ``OUT``.
"""

import importlib
import pickle
import sys


def main(argv):
    module, func, path_in, path_out = argv
    with open(path_in, "rb") as f:
        kwargs = pickle.load(f)
    result = getattr(importlib.import_module(module), func)(**kwargs)
    with open(path_out, "wb") as f:
        pickle.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1:])
