"""The detector on NAB's development files: the three profile scores beside the published detectors'.

`./scripts/bench nab [--nab-dir DIR]`: runs `telecare nab detect`'s code over DIR/data into a
temporary directory, scores it with DIR/labels.json and prints the scores, the published table
(../shared/nab/README.md) and the detector's throughput (rows per second through Detector.update,
reading and writing the files not counted, on one core: the files are scored one after another)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from anomaly.nab.detect import data_files, read_data, score_rows, write_results
from anomaly.nab.files import load_corpus
from anomaly.nab.scoring import PROFILES, score_corpus

REPO = Path(__file__).resolve().parents[1]
# ../shared/nab/README.md: NAB's own scorer on these 31 files (standard; both profiles where given).
PUBLISHED = (
    ("ARTime", "73.6", "", ""),
    ("Numenta HTM", "69.52", "62.88", "74.02"),
    ("CAD OSE", "66.1", "", ""),
    ("Random Cut Forest", "61.26", "50.68", "68.51"),
    ("Relative Entropy", "54.1", "", ""),
    ("KNN CAD", "52.5", "", ""),
    ("Windowed Gaussian", "37.7", "", ""),
    ("random", "17.2", "", ""),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab-dir", type=Path, default=REPO / ".." / "shared" / "nab")
    args = parser.parse_args()
    data = args.nab_dir / "data"
    files = {path: read_data(path) for path in data_files(data)}
    with tempfile.TemporaryDirectory() as out:
        scoring = 0.0
        for path, rows in files.items():
            started = time.perf_counter()
            scores = score_rows(rows)
            scoring += time.perf_counter() - started
            write_results(Path(out) / path.relative_to(data), rows, scores)
        corpus = load_corpus(Path(out), args.nab_dir / "labels.json")
    count = sum(len(rows) for rows in files.values())
    print(f"{len(files)} files, {count} rows, {sum(len(s.windows) for s in corpus)} windows; "
          f"Detector.update: {scoring:.1f} s, {count / scoring:,.0f} rows/s on one core")
    results = [score_corpus(corpus, profile) for profile in PROFILES]
    print(f"\n{'detector':<22} {'standard':>9} {'low FP':>9} {'low FN':>9}")
    print(f"{'telecare (this run)':<22} " + " ".join(f"{r.normalised:>9.2f}" for r in results))
    for name, *scores in PUBLISHED:
        print(f"{name:<22} " + " ".join(f"{s:>9}" for s in scores))
    print("\nthresholds: " + ", ".join(f"{r.profile.name} {r.threshold:.6f}" for r in results))


if __name__ == "__main__":
    main()
