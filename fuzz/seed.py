#!/usr/bin/env python3
"""Seed the fuzzers' corpora: catalogs of the repository for `catalog`,
the JSON Schema Test Suite's schemas and the catalogs' schemas for `schema`
(each with a leading options byte)."""
import glob, json, os, sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
suite = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "corpus", "json-schema-test-suite")

def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

n = 0
for path in glob.glob(os.path.join(root, "**", "evgen.yaml"), recursive=True):
    if "/target" in path or "/fuzz/" in path:
        continue
    n += 1
    put("catalog", "seed-%d" % n, open(path, "rb").read())
for path in glob.glob(os.path.join(root, "templates", "**", "*.json"), recursive=True) + glob.glob(
    os.path.join(root, "tests", "fixtures", "**", "*.json"), recursive=True
):
    n += 1
    put("schema", "seed-%d" % n, b"\x07" + open(path, "rb").read())
for path in sorted(glob.glob(os.path.join(suite, "tests", "draft*", "**", "*.json"), recursive=True)):
    for case in json.load(open(path)):
        n += 1
        flags = b"\x0e" if "draft2020-12" in path else b"\x0f"
        put("schema", "seed-%d" % n, flags + json.dumps(case["schema"]).encode())
print("%d seeds" % n)
