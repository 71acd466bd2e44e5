"""Runs rallypoint's ClickHouse schema and queries on the modern engine
in-process (chDB), for what the Debian 18.16 server used by the other tests
cannot show: that the same DDL, the TTL statements and the queries work on
current ClickHouse.

Input: a JSON file with {"ddl": [statements...], "ttl": [statements...],
"checks": [{"name":..., "sql":..., "expect": [[row values as strings]...]}],
"parse": [statements...]}. Statements run in a fresh database; sample rows
are inserted between the DDL and the checks. "parse" statements are only
parsed (formatQuery): ones that need what an in-process engine lacks, such as
a cluster and ZooKeeper. Exits non-zero naming the first statement that
failed.
"""
import json
import sys
import tempfile

from chdb import session as chs


def main(path):
    spec = json.load(open(path))
    with tempfile.TemporaryDirectory() as tmp:
        sess = chs.Session(tmp)
        sess.query("CREATE DATABASE IF NOT EXISTS rp")
        sess.query("USE rp")

        def run(sql, fmt="TSV"):
            try:
                return str(sess.query(sql, fmt))
            except Exception as e:  # chDB raises its own error types
                print(f"FAILED on modern ClickHouse: {e}\n--- statement ---\n{sql}", file=sys.stderr)
                sys.exit(1)

        print("chDB", run("SELECT version()").strip())
        for sql in spec.get("parse", []):
            literal = sql.replace("\\", "\\\\").replace("'", "\\'")
            run(f"SELECT formatQuery('{literal}')")
        for sql in spec.get("ddl", []) + spec.get("ttl", []):
            run(sql)
        for sql in spec.get("seed", []):
            run(sql)
        for check in spec.get("checks", []):
            out = run(check["sql"]).strip()
            rows = [line.split("\t") for line in out.splitlines()] if out else []
            if "expect" in check and rows != check["expect"]:
                print(f"check {check['name']!r}: expected {check['expect']}, got {rows}", file=sys.stderr)
                sys.exit(1)
            print(f"ok: {check['name']}")


if __name__ == "__main__":
    main(sys.argv[1])
