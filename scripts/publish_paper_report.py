"""Copy a `vca-baseline paper` report into the docs: REPORT/report.md -> DOC.md with its figure links
pointing at DOC/ (a folder beside it, named as the file), figures copied there, PNGs wider than
--max-width pixels shrunk to it (the prediction sheets are several MB at full size).

    python scripts/publish_paper_report.py REPORT docs/paper_report_demo.md [--max-width 1600]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import cv2


def publish(report: Path, doc: Path, max_width: int) -> list[Path]:
    source = report / "report.md"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no report (make one with vca-baseline paper --out {report})")
    text = source.read_text()
    folder = doc.with_suffix("")
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "figures").mkdir(parents=True)
    written = []
    for link in sorted(set(re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text))):
        src, dst = report / link, folder / link
        image = cv2.imread(str(src), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{src}: not a readable image (linked from {source})")
        if image.shape[1] > max_width:
            scale = max_width / image.shape[1]
            image = cv2.resize(image, (max_width, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        if not cv2.imwrite(str(dst), image):
            raise OSError(f"{dst}: cannot write")
        written.append(dst)
    text = text.replace("](figures/", f"]({folder.name}/figures/")
    doc.write_text(text)
    return [doc, *written]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("report", type=Path)
    p.add_argument("doc", type=Path)
    p.add_argument("--max-width", type=int, default=1600)
    args = p.parse_args(argv)
    try:
        written = publish(args.report, args.doc, args.max_width)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"publish_paper_report: {e}", file=sys.stderr)
        return 2
    print(f"wrote {written[0]} and {len(written) - 1} figures in {written[0].with_suffix('')}/figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
