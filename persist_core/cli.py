"""The ``backtest-persist`` command line: ``demo``, ``bench``, ``migrate``, ``check``, ``ls``, ``show``, ``prune``.

Results go to stdout, diagnostics to stderr; passwords in URLs are masked in everything printed.
Exit codes are listed in :data:`EXIT_CODES` and in ``backtest-persist --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import IO, Any

from persist_core import __version__
from persist_core.config import resolve_redis_url
from persist_core.domains import DOMAINS
from persist_core.errors import ConfigurationError, PersistError
from persist_core.registry import SQL_DRIVERS, check_driver, create_backend, missing_driver
from persist_core.urls import mask_url, scheme_of, secrets_of

__all__ = ["EXIT_CODES", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: What each exit status means, for ``--help`` and the docs.
EXIT_CODES = {
    EXIT_OK: "success (demo agreed with its reference, every check passed, bench ran)",
    EXIT_FAILED: "the command ran and found a failure (demo disagreed, a check failed, backend unreachable)",
    EXIT_USAGE: "usage or configuration error (bad arguments, unknown URL scheme, missing extra)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


# ------------------------------------------------------------------------------------- secrets


def _passwords(urls: Sequence[str]) -> list[str]:
    """The secrets written into ``urls`` (:func:`secrets_of`), longest first."""
    found = {secret for url in urls for secret in secrets_of(url)}
    # Very short "passwords" would mask unrelated text; mask_url still hides them inside URLs.
    return sorted((p for p in found if len(p) >= 3), key=len, reverse=True)


class _Scrubbed:
    """A text stream that masks passwords in everything written to it.

    It masks URL userinfo passwords and secret query values (:func:`mask_url`), and the literal passwords of
    the URLs given on the command line, in case a driver message quotes one without its URL.
    """

    def __init__(self, stream: IO[str], urls: Sequence[str]) -> None:
        self._stream = stream
        self._secrets = _passwords(urls)

    def scrub(self, text: str) -> str:
        """``text`` with every password masked."""
        text = mask_url(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def write(self, text: str) -> int:
        """Write ``text``, masked."""
        return self._stream.write(self.scrub(text))

    def flush(self) -> None:
        """Flush the underlying stream."""
        self._stream.flush()


Handler = Callable[[argparse.Namespace, _Scrubbed, _Scrubbed], int]


# ------------------------------------------------------------------------------------ commands


def _cmd_demo(args: argparse.Namespace, out: _Scrubbed, err: _Scrubbed) -> int:
    from persist_core.demo import DemoOptions, run_demo

    options = DemoOptions(url=args.url, seed=args.seed, keep=args.keep, reference_url=args.reference_url)
    code, lines = run_demo(options)
    if args.quiet:  # the verdict; with --keep also where the kept state is, or --keep would keep it unseen
        lines = [line for line in lines[:-1] if args.keep and line.startswith("state:")] + lines[-1:]
    for line in lines:
        print(line, file=out)
    return code


def _cmd_bench(args: argparse.Namespace, out: _Scrubbed, err: _Scrubbed) -> int:
    from persist_core.bench import harness

    collected = harness.collect_pairs(args.quick)
    available = sorted({p.backend for p in collected.pairs})
    pairs = collected.pairs
    if args.backend:
        wanted = set(args.backend)
        pairs = [p for p in pairs if p.backend in wanted]
        if not pairs:
            for line in collected.skipped:
                print(f"skipped: {line}", file=err)
            print(
                f"backtest-persist bench: no benchmark pairs for {', '.join(sorted(wanted))}; "
                f"available: {', '.join(available) or 'none'}",
                file=err,
            )
            return EXIT_USAGE
    if args.list:
        backend_width = max((len(p.backend) for p in pairs), default=0)
        operation_width = max((len(p.operation) for p in pairs), default=0)
        for pair in pairs:
            print(
                f"{pair.backend:<{backend_width}}  {pair.operation:<{operation_width}}  n={pair.n:<6} "
                f"raw: {pair.raw_label}",
                file=out,
            )
        for line in collected.skipped:
            print(f"skipped: {line}", file=out)
        return EXIT_OK
    started = time.monotonic()
    results, failed = harness.run_pairs(pairs, progress=lambda line: print(f"bench: {line}", file=err, flush=True))
    skipped = collected.skipped + failed
    if results:
        print(harness.format_table(results), file=out)
    for line in harness.format_targets(results, collected.targets):
        print(line, file=out)
    stalls: list[Any] = []
    if not args.no_loop_stall:
        from persist_core.bench import loop_stall

        print("bench: event-loop stall rows", file=err, flush=True)
        stalls, stall_skips = loop_stall.run_stalls(set(args.backend or ()), 200 if args.quick else 1000)
        skipped = skipped + stall_skips
        if stalls:
            print(loop_stall.format_stalls(stalls), file=out)
    for line in skipped:
        print(f"skipped: {line}", file=out)
    print(
        f"{len(results)} pairs in {time.monotonic() - started:.1f} s; ratio = ours ops/s / raw ops/s, measured "
        "interleaved in this run (compare ratios, not ops/s across runs)",
        file=out,
    )
    if args.json:
        document = harness.results_json(results, skipped, collected.targets, quick=args.quick)
        document["loop_stall"] = [dataclasses.asdict(stall) for stall in stalls]
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}", file=err)
    return EXIT_OK if results else EXIT_FAILED


def _sql_admin(url: str) -> ModuleType:
    """``persist_sql.admin``, imported only when a SQL command runs."""
    check_driver(url)
    try:
        return importlib.import_module("persist_sql.admin")
    except ImportError as exc:
        raise missing_driver(url, exc.name or str(exc)) from exc


def _cmd_migrate(args: argparse.Namespace, out: _Scrubbed, err: _Scrubbed) -> int:
    scheme = scheme_of(args.url)
    if scheme not in SQL_DRIVERS:
        raise ConfigurationError(
            f"migrate applies to SQL URLs ({', '.join(sorted(SQL_DRIVERS))}); {mask_url(args.url)} has no schema "
            "migrations"
        )
    text = _sql_admin(args.url).migrate(args.url, args.revision, sql=args.sql, downgrade=args.downgrade)
    if text:
        print(text, file=out)
    return EXIT_OK


def _backend_checks(url: str) -> list[tuple[str, bool, str]]:
    """Build and open the backend of ``url`` and read one record: what ``check`` reports for non-SQL URLs."""
    options: dict[str, Any] = {}
    if scheme_of(url) == "mongodb":
        options["redis_url"] = resolve_redis_url(None, os.environ)
    backend = create_backend(url, **options)
    checks: list[tuple[str, bool, str]] = []
    started = time.perf_counter()
    try:
        backend.open()
    except PersistError as exc:
        return [("open", False, str(exc))]
    try:
        checks.append(
            ("open", True, f"{type(backend).__name__} opened in {(time.perf_counter() - started) * 1e3:.0f} ms")
        )
        started = time.perf_counter()
        try:
            backend.get(DOMAINS["signal"], ("check", "check", "check"))
        except PersistError as exc:
            checks.append(("read", False, str(exc)))
        else:
            checks.append(("read", True, f"one record lookup in {(time.perf_counter() - started) * 1e3:.1f} ms"))
        caps = backend.capabilities
        stored = "all 16" if caps.domains is None else f"{len(caps.domains)} of 16"
        checks.append(
            (
                "capabilities",
                True,
                f"{stored} domains; shared between processes: {'yes' if caps.shared_between_processes else 'no'}; "
                f"survives a killed process: {'yes' if caps.survives_process_kill else 'no'}",
            )
        )
    finally:
        backend.close()
    return checks


def _cmd_check(args: argparse.Namespace, out: _Scrubbed, err: _Scrubbed) -> int:
    url = args.url
    if scheme_of(url) in SQL_DRIVERS:
        checks: list[tuple[str, bool, str]] = list(_sql_admin(url).check(url))
    else:
        checks = _backend_checks(url)
    print(f"check {mask_url(url)}", file=out)
    width = max((len(name) for name, _, _ in checks), default=0)
    for name, ok, detail in checks:
        print(f"  {'ok' if ok else 'FAIL':<4}  {name:<{width}}  {detail}", file=out)
    failed = sum(1 for _, ok, _ in checks if not ok)
    print(f"{len(checks) - failed} of {len(checks)} checks passed", file=out)
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_ls(args: argparse.Namespace, out: _Scrubbed, err: _Scrubbed) -> int:
    from persist_core.operate import inventory

    rows = list(inventory(args.url, domains=args.domain))
    if args.json:
        json.dump([dataclasses.asdict(row) for row in rows], out, indent=2, ensure_ascii=False)
        print(file=out)
        return EXIT_OK
    for row in rows:
        context = " ".join(f"{name}={value}" for name, value in row.context.items()) or "(the whole domain)"
        print(f"{row.domain:<12} {row.records:>9}  {context}", file=out)
    domains = len({(row.url, row.domain) for row in rows})
    total = sum(row.records for row in rows)
    print(f"{total} records in {len(rows)} contexts of {domains} domains", file=out)
    return EXIT_OK


def _cmd_show(args: argparse.Namespace, out: _Scrubbed, err: _Scrubbed) -> int:
    from persist_core.operate import context_records

    records = [dataclasses.asdict(r) for r in context_records(args.domain, args.context, args.url, mode=args.mode)]
    if args.json:
        json.dump(records, out, indent=2, ensure_ascii=False)
        print(file=out)
    else:
        for record in records:
            print(json.dumps(record, ensure_ascii=False), file=out)
    if not records:
        print(f"backtest-persist: no {args.domain} records in that context", file=err)
    return EXIT_OK


def _cmd_prune(args: argparse.Namespace, out: _Scrubbed, err: _Scrubbed) -> int:
    from persist_core.prune import prune

    last = [time.monotonic()]

    def progress(domain: str, examined: int, deleted: int) -> None:
        # A plain line every few seconds: long work shows it is alive, short work prints nothing.
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            print(f"prune: {domain}: {examined} examined, {deleted} deleted so far", file=err, flush=True)

    report = prune(
        args.url,
        candles_before=args.candles_before,
        keep_last=args.keep_last,
        older_than=args.older_than,
        purge_removed_older_than=args.purge_removed_older_than,
        domains=args.domain,
        dry_run=args.dry_run,
        progress=progress,
    )
    if args.json:
        json.dump(report.to_json(), out, indent=2, ensure_ascii=False)
        print(file=out)
        return EXIT_OK
    verb = "would delete" if report.dry_run else "deleted"
    for part in report.domains:
        undated = f" ({part.undated} kept: no time)" if part.undated else ""
        print(
            f"{part.domain:<12} {verb} {part.deleted:>9} of {part.examined:>9} examined{undated}  {part.url}", file=out
        )
    print(f"{verb} {report.deleted} records" + (" (dry run: nothing deleted)" if report.dry_run else ""), file=out)
    return EXIT_OK


# -------------------------------------------------------------------------------------- parser


def _epilog() -> str:
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    return (
        "examples:\n"
        "  backtest-persist demo                              crash/resume demo on the file backend\n"
        "  backtest-persist demo --url sqlite:///demo.db      the same on another backend\n"
        "  backtest-persist bench --quick --backend file      file backend rows next to their raw operations\n"
        "  backtest-persist check --url postgresql+psycopg://user:pw@127.0.0.1/db\n"
        "  backtest-persist migrate --url postgresql+psycopg://user:pw@127.0.0.1/db --sql\n"
        "  backtest-persist ls --url file:./dump            stored contexts and record counts\n"
        "  backtest-persist show signal symbol=BTC/USDT strategy_name=s exchange_name=binance\n"
        "  backtest-persist prune --candles-before 2024-01-01 --keep-last 1000 --dry-run\n"
        f"\nexit codes:\n{codes}\n"
        "\npasswords in URLs are printed as ***."
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``backtest-persist``."""
    parser = argparse.ArgumentParser(
        prog="backtest-persist",
        description="Crash-safe persistence for a trading engine's state: demo, benchmarks and database tools.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="kill a simulated live strategy mid-trade, resume it, check nothing was lost",
        description=(
            "Run a small simulated live strategy on synthetic candles that persists signal, risk, partial, "
            "candle, log, storage and strategy state; kill it with SIGKILL in the middle of a trade, restart it, "
            "and compare the final persisted state with an uninterrupted reference run. Exits 1 if they disagree."
        ),
    )
    demo.add_argument("--url", help="target backend (default: the file backend in a new temp folder)")
    demo.add_argument("--seed", type=int, default=1, help="market and kill moment; same seed, same run (default: 1)")
    demo.add_argument("--keep", action="store_true", help="keep the temp folder of the default target")
    demo.add_argument(
        "--quiet", action="store_true", help="print only the verdict line (and, with --keep, where the state is)"
    )
    demo.add_argument(
        "--reference-url",
        default="memory://",
        metavar="URL",
        help="scratch store of the uninterrupted reference run (default: memory://)",
    )
    demo.set_defaults(handler=_cmd_demo, urls=("url", "reference_url"))

    bench = commands.add_parser(
        "bench",
        help="time our operations next to the raw operations they are built on",
        description=(
            "For each backend and operation: ops/s and p50/p99 latency of ours and of the raw operation, measured "
            "interleaved in one run, and the ratio ours/raw. Providers whose module or server is missing are "
            "reported as 'skipped'. See docs/benchmarks.md."
        ),
    )
    bench.add_argument(
        "--backend",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="only these backends (e.g. file memory); repeatable",
    )
    bench.add_argument("--quick", action="store_true", help="fewer operations per pair (a rough look)")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    bench.add_argument("--list", action="store_true", help="list the pairs and skipped providers, run nothing")
    bench.add_argument(
        "--no-loop-stall",
        action="store_true",
        help="skip the event-loop stall rows (a 1 ms heartbeat beside writes through the asyncio face)",
    )
    bench.set_defaults(handler=_cmd_bench, urls=())

    migrate = commands.add_parser(
        "migrate",
        help="bring a SQL database's schema to a revision (Alembic)",
        description=(
            "Upgrade the schema of a SQL backend to a revision, or downgrade it to an older one (base: no tables) "
            "with --downgrade. Needs the sql extra."
        ),
    )
    migrate.add_argument("--url", required=True, help="SQLAlchemy URL of the database")
    migrate.add_argument(
        "--revision", default="head", help="target revision: head (default), base, 0001, 0002, or -1 / +1"
    )
    migrate.add_argument(
        "--downgrade",
        action="store_true",
        help="allow a revision older than the database's: drops the later revisions' tables and their records",
    )
    migrate.add_argument("--sql", action="store_true", help="print the SQL instead of running it (offline mode)")
    migrate.set_defaults(handler=_cmd_migrate, urls=("url",))

    check = commands.add_parser(
        "check",
        help="check that a backend URL is reachable and usable",
        description=(
            "SQL URLs: connectivity, schema revision and privileges (persist_sql). Other URLs: open the backend "
            "and look up one record. Exits 0 if every check passed, 1 if one failed."
        ),
    )
    check.add_argument("--url", required=True, help="backend URL, e.g. file:./dump or mongodb://127.0.0.1/db")
    check.set_defaults(handler=_cmd_check, urls=("url",))

    url_help = "backend URL (default: PERSIST_URL and the other PERSIST_* variables, else file:./dump)"
    ls = commands.add_parser(
        "ls",
        help="list the stored contexts of every domain, with their record counts",
        description="List every stored context of every domain (or of --domain ...), with its number of records "
        "(soft-deleted ones included), reading only: no ownership is claimed.",
    )
    ls.add_argument("--url", help=url_help)
    ls.add_argument("--domain", action="extend", nargs="+", metavar="NAME", help="only these domains")
    ls.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    ls.set_defaults(handler=_cmd_ls, urls=("url",))

    show = commands.add_parser(
        "show",
        help="print one context's records as JSON",
        description="Print the records of one context of DOMAIN, e.g. `show signal symbol=BTC/USDT "
        "strategy_name=s exchange_name=binance`, one JSON object per line (key, value, when, removed).",
    )
    show.add_argument("domain", metavar="DOMAIN", help="one of: " + ", ".join(DOMAINS))
    show.add_argument("context", nargs="*", metavar="FIELD=VALUE", help="the context's fields (flags: true/false)")
    show.add_argument("--url", help=url_help)
    show.add_argument("--mode", default="live", choices=("live", "backtest"), help="whose storage (default: live)")
    show.add_argument("--json", action="store_true", help="print one JSON array instead of one object per line")
    show.set_defaults(handler=_cmd_show, urls=("url",))

    prune = commands.add_parser(
        "prune",
        help="delete old candles, log/notification/storage items, and (only if asked) soft-deleted entries",
        description="Retention for the domains that only grow (docs/decisions.md, 'Prune'). A real run claims "
        "ownership like a live process: a live owner in another process refuses it (exit 1). "
        "Soft-deleted measure/interval/memory entries stay unless --purge-removed-older-than is given.",
    )
    prune.add_argument("--url", help=url_help)
    prune.add_argument(
        "--candles-before", metavar="TIME", help="candles opened before TIME (ISO date/time or epoch ms)"
    )
    prune.add_argument(
        "--keep-last", type=int, metavar="N", help="log/notification/storage: keep the newest N per context"
    )
    prune.add_argument(
        "--older-than", metavar="AGE", help="log/notification/storage: items older than AGE (e.g. 30d, 12h)"
    )
    prune.add_argument(
        "--purge-removed-older-than",
        metavar="AGE",
        help="also purge soft-deleted measure/interval/memory entries whose when is older than AGE (0: all removed)",
    )
    prune.add_argument("--domain", action="extend", nargs="+", metavar="NAME", help="only these domains")
    prune.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing, claim nothing")
    prune.add_argument("--json", action="store_true", help="print the report as JSON")
    prune.set_defaults(handler=_cmd_prune, urls=("url",))
    return parser


def main(argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run ``backtest-persist`` with ``argv`` (default: the process arguments); return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(err)
        return EXIT_USAGE
    urls = [u for u in (getattr(args, name, None) for name in args.urls) if isinstance(u, str)]
    # URLs may come from the environment too (ls, show): their passwords are masked as well.
    urls += [v for k, v in os.environ.items() if k.startswith(("PERSIST_", "CC_")) and "://" in v]
    safe_out, safe_err = _Scrubbed(out, urls), _Scrubbed(err, urls)
    try:
        return handler(args, safe_out, safe_err)
    except ConfigurationError as exc:
        print(f"backtest-persist: {exc}", file=safe_err)
        return EXIT_USAGE
    except PersistError as exc:
        print(f"backtest-persist: {type(exc).__name__}: {exc}", file=safe_err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("backtest-persist: interrupted", file=safe_err)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # python -m persist_core.cli, the same as the backtest-persist command
    sys.exit(main())
