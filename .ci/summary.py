"""Print trial's result as the plain closing line 'N passed, N failed[, N skipped]'."""

import re
import sys

text = sys.stdin.read()
sys.stdout.write(text)
counts = dict.fromkeys(("successes", "failures", "errors", "skips", "expectedFailures",
                        "unexpectedSuccesses"), 0)
match = re.search(r"^(PASSED|FAILED) \((.*)\)\s*$", text, re.MULTILINE)
if match:
    for key, value in re.findall(r"(\w+)=(\d+)", match.group(2)):
        counts[key] = int(value)
failed = counts["failures"] + counts["errors"] + counts["unexpectedSuccesses"]
line = f"{counts['successes'] + counts['expectedFailures']} passed, {failed} failed"
if counts["skips"]:
    line += f", {counts['skips']} skipped"
sys.stdout.write(line + "\n")
