"""Dependency audit of the installed environment: known vulnerabilities per package, with fixes.

    pip install -e ".[audit]"
    python benchmarks/dependency_audit.py [--service pypi|osv] [--json OUT]

Runs `pip-audit` on the environment of this Python and prints a report: packages audited, packages
that could not be audited (and why), and each known vulnerability with the versions that fix it.
pip-audit prints "No known vulnerabilities found" even when it could look up no package at all (a
mirror without PyPI's JSON API, no route to OSV); this report counts what was actually checked and
exits 2 when that is nothing, 1 when a vulnerability is known, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path


def run_pip_audit(service: str) -> dict:
    cmd = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off", "-s", service]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if "No module named pip_audit" in done.stderr:
        sys.exit("pip-audit is not installed: pip install -e '.[audit]'")
    if not done.stdout.strip():
        last = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        print(f"NOT AUDITED: pip-audit could not query {service}: {last[0]}")
        sys.exit(2)
    return json.loads(done.stdout)


def report(result: dict, service: str) -> int:
    deps = result.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = [d for d in deps if not d.get("skip_reason")]
    vulnerable = [d for d in audited if d.get("vulns")]
    print(f"service: {service}; packages installed: {len(deps)}; audited: {len(audited)}; "
          f"not audited: {len(skipped)}; with known vulnerabilities: {len(vulnerable)}")
    reasons = Counter(d["skip_reason"].split(":")[0] for d in skipped)
    for reason, count in reasons.most_common():
        print(f"  not audited ({count}): {reason}")
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix released"
            print(f"  {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    if not audited:
        print("NOT AUDITED: no package could be looked up; run where the vulnerability service is reachable")
        return 2
    return 1 if vulnerable else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=["pypi", "osv"], default="pypi")
    parser.add_argument("--json", type=Path, help="also write pip-audit's JSON here")
    args = parser.parse_args()
    result = run_pip_audit(args.service)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    sys.exit(report(result, args.service))


if __name__ == "__main__":
    main()
