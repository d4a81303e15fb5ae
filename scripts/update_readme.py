"""Regenerate README.md's generated parts: the zoo table (from the registry) and the
figures taken from committed benchmark runs (see run_excerpts.py).

python scripts/update_readme.py          # rewrite README.md
python scripts/update_readme.py --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from run_excerpts import replace_spans  # beside this script
from zoo_table import replace_table

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> int:
    current = README.read_text(encoding="utf-8")
    updated = replace_spans(replace_table(current))
    if "--check" in sys.argv[1:]:
        if updated != current:
            print("README.md's generated parts are out of date: python scripts/update_readme.py")
            return 1
        return 0
    if updated != current:
        temporary = README.with_suffix(".md.tmp")
        temporary.write_text(updated, encoding="utf-8")
        temporary.replace(README)
        print("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
