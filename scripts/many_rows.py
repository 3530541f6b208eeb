"""Write a large input file of short rows cut from the demo corpus, for
memory and size runs (not committed: a million rows is about 60 MB).

    .venv/bin/python -m scripts.many_rows /tmp/rows_1m.csv --rows 1000000

Row i is a clause of a demo review (split at Chinese punctuation), cycling
through the corpus, with the id `r<i>`; with `--whole-reviews`, row i is a
whole review (the classification demo's length mix). The same arguments
always give the same file. `--long-row-chars N` makes row 0 a single text of N characters
(the pathological-row case).
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys

from scripts.demo_corpus import load_reviews

CLAUSE_END = re.compile(r"(?<=[，。！？；,.!?;])")


def short_texts() -> list[str]:
    clauses = []
    for review in load_reviews():
        clauses += [c.strip() for c in CLAUSE_END.split(review.text) if len(c.strip()) >= 2]
    return clauses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help=".csv to write")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--long-row-chars", type=int, default=0)
    parser.add_argument("--whole-reviews", action="store_true",
                        help="whole demo reviews instead of clauses")
    args = parser.parse_args(argv)
    texts = [review.text for review in load_reviews()] if args.whole_reviews else short_texts()
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(args.rows):
            text = texts[i % len(texts)]
            if i == 0 and args.long_row_chars:
                text = (text * (args.long_row_chars // len(text) + 1))[:args.long_row_chars]
            writer.writerow([f"r{i}", text])
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {args.rows} rows from {len(texts)} distinct texts, "
          f"{os.path.getsize(args.output) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
