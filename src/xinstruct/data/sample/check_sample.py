"""Check the bundled sample files of one or more languages (format, length, NFC, language ID).

Usage: python check_sample.py sw ta ...
"""
import json
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).parent


def check(code: str) -> list[str]:
    problems = []
    for kind, lo, hi, minimum in (("webtext", 300, 1500, 24), ("seeds", 100, 1500, 16)):
        path = HERE / kind / f"{code}.jsonl"
        if not path.exists():
            return [f"{path} missing"]
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{n}: bad JSON ({e})")
        if len(rows) < minimum:
            problems.append(f"{path}: {len(rows)} rows, need >= {minimum}")
        ids = [r.get("id") for r in rows]
        if len(set(ids)) != len(ids):
            problems.append(f"{path}: duplicate ids")
        field = "text" if kind == "webtext" else "output"
        for r in rows:
            t = r.get(field, "")
            if not (lo <= len(t) <= hi):
                problems.append(f"{path} {r.get('id')}: {field} has {len(t)} chars, want {lo}..{hi}")
            if unicodedata.normalize("NFC", t) != t:
                problems.append(f"{path} {r.get('id')}: not NFC")
            if kind == "seeds" and not r.get("instruction", "").strip():
                problems.append(f"{path} {r.get('id')}: empty instruction")
            if r.get("language") != code:
                problems.append(f"{path} {r.get('id')}: language field {r.get('language')!r} != {code!r}")
        try:
            from lingua import LanguageDetectorBuilder

            det = LanguageDetectorBuilder.from_all_languages().build()
            for r in rows:
                lang = det.detect_language_of(r.get(field, ""))
                got = lang.iso_code_639_1.name.lower() if lang else None
                if got != code:
                    problems.append(f"{path} {r.get('id')}: lingua detects {got!r}, not {code!r}")
        except ImportError:
            problems.append("lingua not installed: language ID not checked")
    return problems


if __name__ == "__main__":
    bad = 0
    for code in sys.argv[1:]:
        p = check(code)
        print(f"{code}: {'OK' if not p else str(len(p)) + ' problem(s)'}")
        for line in p:
            print("  ", line)
        bad += len(p)
    sys.exit(1 if bad else 0)
