"""Prints "N passed, N failed" from a meson test log and GoogleTest XML files.

A GoogleTest program (its meson test name is its binary name) counts its cases; a program that failed without
reporting a failing case (a crash, a timeout) adds one failure; any other
test program counts as one test. Exits 1 when anything failed or nothing ran.
"""
import json
import pathlib
import sys
import xml.etree.ElementTree as ElementTree


def main(testlog_path, xml_dir):
    passed = failed = 0
    for line in pathlib.Path(testlog_path).read_text().splitlines():
        entry = json.loads(line)
        ok = entry["result"] in ("OK", "EXPECTEDFAIL", "SKIP")
        report = pathlib.Path(xml_dir) / (entry["name"] + ".xml")  # gtest names it after the binary
        if report.exists():
            suites = ElementTree.parse(report).getroot()
            cases = int(suites.get("tests")) - int(suites.get("disabled", 0))
            bad = int(suites.get("failures")) + int(suites.get("errors"))
            passed += cases - bad
            failed += bad
            if not ok and bad == 0:
                failed += 1
        elif ok:
            passed += 1
        else:
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
