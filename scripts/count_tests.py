"""Prints "N passed, N failed" over every test run of scripts/test.sh.

Arguments: pairs of (meson testlog.json, GoogleTest XML directory), then
optionally --fuzz FILE with the summary lines of scripts/fuzz.sh. A GoogleTest
program counts its cases (its XML file is named after its binary, which is
its meson test name), and so does the pytest run (python.xml, JUnit XML;
skipped cases are not counted); a program that failed without reporting a
failing case (a crash, a timeout, a sanitizer report) adds one failure; any
other test program, and each fuzz target, counts as one test. Exits 1 when
anything failed or nothing ran.
"""
import json
import pathlib
import sys
import xml.etree.ElementTree as ElementTree


def count_meson(testlog, xml_dir):
    passed = failed = 0
    for line in pathlib.Path(testlog).read_text().splitlines():
        entry = json.loads(line)
        ok = entry["result"] in ("OK", "EXPECTEDFAIL", "SKIP")
        binary = entry["name"].split(" / ")[-1]  # "project:suite / name"
        report = pathlib.Path(xml_dir) / (binary + ".xml")
        if report.exists():
            root = ElementTree.parse(report).getroot()
            # GoogleTest's root carries the totals; pytest's (JUnit XML)
            # holds one <testsuite> that does.
            suites = root if root.get("tests") is not None else root.find("testsuite")
            cases = (int(suites.get("tests")) - int(suites.get("disabled", 0)) -
                     int(suites.get("skipped", 0)))
            bad = int(suites.get("failures")) + int(suites.get("errors"))
            passed += cases - bad
            failed += bad
            if not ok and bad == 0:
                failed += 1
        elif ok:
            passed += 1
        else:
            failed += 1
    return passed, failed


def count_fuzz(summary):
    passed = failed = 0
    for line in pathlib.Path(summary).read_text().splitlines():
        if " executions, " in line:
            if line.endswith("no crash"):
                passed += 1
            else:
                failed += 1
    return passed, failed


def main(args):
    passed = failed = 0
    fuzz = None
    if "--fuzz" in args:
        fuzz = args[args.index("--fuzz") + 1]
        args = args[:args.index("--fuzz")]
    for testlog, xml_dir in zip(args[0::2], args[1::2]):
        if not pathlib.Path(testlog).exists():
            failed += 1  # the run did not even start
            continue
        p, f = count_meson(testlog, xml_dir)
        passed, failed = passed + p, failed + f
    if fuzz is not None:
        p, f = count_fuzz(fuzz)
        passed, failed = passed + p, failed + f if p + f > 0 else failed + 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
