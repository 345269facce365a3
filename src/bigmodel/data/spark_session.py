"""The Spark side of ``data prepare --engine spark``: a session on the user's master, started only
after the checks that fail in seconds (Java, a master that answers), and the source read as a
DataFrame. pyspark is imported only inside these functions: it is an optional extra."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigmodel.errors import BigModelError

_LOG4J2 = Path(__file__).with_name("spark_log4j2.properties")


def is_spark_dataframe(obj: object) -> bool:
    """Whether ``obj`` is a pyspark DataFrame, without importing pyspark (it may not be installed)."""
    return any(
        c.__module__.startswith("pyspark.sql") and c.__name__ == "DataFrame" for c in type(obj).__mro__
    )


def check_java() -> None:
    """Spark needs a JVM: one line saying how to get one, before pyspark tries and prints pages."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").is_file():
        return
    if shutil.which("java"):
        return
    raise BigModelError(
        "--engine spark needs Java 17+ and none was found (JAVA_HOME unset or wrong, no java on PATH); "
        "install it (e.g. apt-get install openjdk-17-jre-headless) or use --engine local"
    )


def check_master(master: str) -> None:
    """A standalone master that does not answer fails in seconds, not after Spark's minute of retries."""
    m = re.fullmatch(r"spark://([^:/]+):(\d+)", master)
    if not m:
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=5).close()
    except OSError as err:
        raise BigModelError(f"cannot reach Spark master {master}: {err.strerror or err}") from None


def _not_py4j(record: logging.LogRecord) -> bool:
    return "py4j" not in record.pathname


def session(master: str, conf: dict[str, str]) -> Any:
    """A Spark session on ``master`` with ``conf`` (``--spark-conf key=value``)."""
    check_java()
    check_master(master)
    from pyspark.sql import SparkSession

    # Python workers run this interpreter, which has bigmodel (the executors call into it).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Ctrl-C mid-call makes py4j log its broken connection with whole tracebacks; the CLI says
    # "interrupted" (and a real failure reaches us as an exception, told in one line)
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
    logging.getLogger().addFilter(_not_py4j)  # some of it goes to the root logger itself

    if "spark.master" in conf:
        raise BigModelError("--spark-conf spark.master=... : use --master for that")
    builder = SparkSession.builder.master(master).appName("bigmodel data prepare")
    ours = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",  # ours (``stage_progress``) is shown instead
        # columns "A" and "a" are two columns, as in the local engine (Spark folds case by default)
        "spark.sql.caseSensitive": "true",
    }
    java_opts = f"-Dlog4j2.configurationFile=file:{_LOG4J2} {conf.get('spark.driver.extraJavaOptions', '')}"
    for k, v in {**ours, **conf, "spark.driver.extraJavaOptions": java_opts.strip()}.items():
        builder = builder.config(k, v)
    import psutil

    before = {c.pid for c in psutil.Process().children()}
    with _jvm_stderr() as said:
        try:
            spark = builder.getOrCreate()
            spark.sparkContext.setLogLevel("FATAL")
        except BaseException as err:  # a JVM that cannot start, a master that refuses the app, Ctrl-C
            # pyspark starts the JVM ignoring SIGINT and adopts it only once it answers: one that is
            # still starting would outlive us
            for child in psutil.Process().children():
                if child.pid not in before:
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            if not isinstance(err, Exception):
                raise
            why = _java_reason("\n".join(said)) or first_line(err)
            raise BigModelError(f"cannot start Spark on {master}: {why}") from None
    if spark.sparkContext.master != master:  # getOrCreate hands back a running session as it is
        raise BigModelError(
            f"a Spark session on {spark.sparkContext.master} is already running in this process; "
            f"pass its DataFrame to prepare(), or stop it to use --master {master}"
        )
    return spark


@contextlib.contextmanager
def stage_progress(spark: Any, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A bar over the tasks of the running Spark stages (Spark's own console bar is off), polled
    from its status tracker; yields ``phase(name)``, which names the step the bar shows."""
    from bigmodel.console import steps_bar

    state = {"phase": "starting"}
    stop = threading.Event()
    with steps_bar(enabled=enabled) as show:
        tracker = spark.sparkContext.statusTracker()

        def poll() -> None:
            while not stop.wait(0.5):
                with contextlib.suppress(Exception):  # the JVM going away at the end is no error
                    infos = [i for i in map(tracker.getStageInfo, tracker.getActiveStageIds()) if i]
                    total = sum(i.numTasks for i in infos)
                    show(f"spark: {state['phase']}", sum(i.numCompletedTasks for i in infos), total)

        t = threading.Thread(target=poll, name="spark-progress", daemon=True)
        if enabled:
            t.start()
        try:
            yield lambda name: state.update(phase=name)
        finally:
            stop.set()
            if enabled:
                t.join()


# What the JVM says on every start, and says nothing to a user of bigmodel.
_CHATTER = ("WARNING: Using incubator modules", "Setting default log level", "To adjust logging level")


@contextlib.contextmanager
def _jvm_stderr() -> Iterator[list[str]]:
    """Start the Spark JVM (a child process) with its stderr through a pipe: what it says while it
    starts is held (a failed start becomes one line, not a page of Java stack), and afterwards its
    lines are passed on to ours, less the start-up chatter. Our own fd 2 is restored at once."""
    held: list[str] = []
    lock, started = threading.Lock(), [False]
    r, w = os.pipe()
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(w, 2)  # the child inherits this as its stderr
    os.close(w)

    def relay() -> None:
        in_traceback = False  # a Python worker's, when a failed job stops it: told by us in one line
        with os.fdopen(r, "r", errors="replace") as pipe:
            for line in pipe:
                with lock:
                    if not started[0]:
                        held.append(line.rstrip("\n"))
                        continue
                if line.startswith("Traceback (most recent call last)"):
                    in_traceback = True
                if in_traceback:
                    in_traceback = line[:1].isspace() or line.startswith("Traceback")
                    continue  # its last line (the exception's, not indented) goes too
                if not line.startswith(_CHATTER):
                    with contextlib.suppress(OSError):
                        os.write(2, line.encode())

    threading.Thread(target=relay, name="spark-jvm-stderr", daemon=True).start()
    ok = False
    try:
        yield held
        ok = True
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        with lock:
            started[0] = True
            for line in held if ok else []:  # a failed start is told in one line by the caller
                if not line.startswith(_CHATTER):
                    print(line, file=sys.stderr)


def _java_reason(text: str) -> str | None:
    """The message of the first Java exception or spark-submit error in ``text``, if any."""
    found = re.search(r"^(?:Error: |.*?\b[\w.$]*(?:Exception|Error): )(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


def first_line(err: BaseException) -> str:
    """One line for a Spark failure: the BigModelError an executor raised, else the Java exception's
    message (not Py4J's "An error occurred while calling ..."), else the error's first line."""
    text = str(err)
    found = re.search(r"BigModelError: (.*)", text)
    if found:
        return found.group(1).strip()
    ours = re.search(r"\[USER_RAISED_EXCEPTION\] (.*?)(?:\s*SQLSTATE: \w+)?$", text, re.MULTILINE)
    if ours:  # raise_error in one of our expressions: its message alone
        return ours.group(1).strip()
    java = _java_reason(text)
    if java:
        java = re.sub(r"\s*SQLSTATE: \w+", "", java).strip()
        causes = re.findall(r"^Caused by: [\w.$]+: (.+)$", text, re.MULTILINE)
        if causes and causes[-1] not in java:  # the root cause says what: "For input string: "oops""
            java = f"{java} ({causes[-1].strip()})"
    return java or next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)


@dataclass
class Source:
    """A source checked before Spark starts: its files, their columns, the format."""

    recorded: str  # as the manifest records it
    schema: Any  # pyarrow, of the first file with rows
    paths: list[str]  # as Spark opens them; files with no rows left out
    csv_sep: str | None  # None: Parquet
    delta_version: int | None = None
    delta_schema: Any = None  # a partitioned Delta table's schema, and its files' partition values
    delta_partitions: dict[str, dict[str, Any]] | None = None


def inspect(src: str) -> Source:
    """The files of a file, folder or ``delta:`` table, checked as the local engine checks them:
    every file with rows has the same columns (Spark would otherwise align them silently by
    position); empty part files (Spark writes them) are left out. Needs no Spark, so bad input is
    refused before a JVM starts."""
    from bigmodel.data import delta, source

    if delta.is_delta(src):
        snap = delta.snapshot(src)
        if not snap.files:
            raise BigModelError(f"{snap.uri} is empty: no data files")
        if not snap.partitions:
            return Source(snap.uri, None, list(snap.files), None, snap.version)
        return Source(snap.uri, None, list(snap.files), None, snap.version, snap.schema, snap.partitions)
    fs, files = source.list_files(src)
    first, schema = source.first_schema(fs, files, src)
    kept = []
    for f in files:
        try:
            names = source.first_schema(fs, [f], f)[1].names
        except BigModelError:  # no rows: nothing to read, as the local engine has it
            continue
        if names != schema.names:
            raise BigModelError(f"{f}: columns {names} differ from {schema.names} in {first}")
        kept.append(f)
    csv = [f.lower().endswith((".csv", ".tsv", ".csv.gz")) for f in kept]
    if any(csv) and not all(csv):
        raise BigModelError(f"{src} mixes CSV and Parquet files; --engine spark reads one format")
    paths = [fs.unstrip_protocol(f) if not src.startswith("/") else f for f in kept]
    sep = ("\t" if kept[0].lower().endswith(".tsv") else ",") if all(csv) else None
    return Source(src, schema, paths, sep)


def _with_partitions(spark: Any, df: Any, src: Source) -> Any:
    """A partitioned Delta table's data files with each file's partition values (from the log, as the
    local engine adds them) joined on by file name, in the table's column order, plus the file name
    (``spark_tasks.FILE``: the source order with ``--no-shuffle``). Not Spark's own partition
    discovery from folder names: it garbles non-ASCII values and spells floats its own way."""
    from urllib.parse import unquote

    import pyarrow as pa
    from pyspark.sql import functions as sf
    from pyspark.sql import types as T

    from bigmodel.data.spark_tasks import FILE

    assert src.delta_partitions is not None
    # input_file_name spells a file as inputFiles() does: a URI, percent-encoded
    spelled = {unquote(f).removeprefix("file://"): f for f in df.inputFiles()}
    columns = list(next(iter(src.delta_partitions.values())))
    fields = [T.StructField(FILE, T.StringType(), False)]
    for c in columns:
        kind = src.delta_schema.field(c).type
        # a date or timestamp partition goes as text: a feature is then refused as not numeric
        simple = _simple(kind) and kind != pa.uint64()
        spark_type = _spark_schema(pa.schema([(c, kind)]))[c].dataType if simple else T.StringType()
        fields.append(T.StructField(c, spark_type, True))
    rows = []
    for uri, values in src.delta_partitions.items():
        name = spelled.get(uri.removeprefix("file://"))
        if name is None:
            raise BigModelError(f"{src.recorded}: Spark does not list the data file {uri}")
        cells = [
            v if v is None or f.dataType != T.StringType() else str(v)
            for v, f in zip(values.values(), fields[1:], strict=True)
        ]
        rows.append((name, *cells))
    parts = spark.createDataFrame(rows, T.StructType(fields))
    joined = df.withColumn(FILE, sf.input_file_name()).join(sf.broadcast(parts), on=FILE)
    names = [n for n in src.delta_schema.names if n in joined.columns]
    return joined.select(*("`" + n.replace("`", "``") + "`" for n in names), FILE)


def load(spark: Any, src: Source) -> Any:
    """The DataFrame of an inspected source."""
    if src.delta_partitions:
        return _with_partitions(spark, spark.read.parquet(*src.paths), src)
    if src.csv_sep is None:
        # Files whose integer or float widths differ (int32 here, int64 there) read as the local engine
        # reads them, widened; Spark's own schema is the first file's and refuses the others.
        simple = src.schema is not None and all(_simple(t) for t in src.schema.types)
        reader = spark.read.schema(_spark_schema(src.schema)) if simple else spark.read
        return reader.parquet(*src.paths)
    # The types the local engine reads (pyarrow's, from the first rows), not Spark's inferSchema:
    # both engines then agree on a column's type, and Spark skips a whole extra pass to infer it.
    # FAILFAST: a later cell that does not parse as its column's type fails the job, as locally.
    # escape='"': a quote inside a quoted cell is doubled (RFC 4180, as pyarrow reads it).
    import pyarrow as pa

    bools = [f.name for f in src.schema if pa.types.is_boolean(f.type)]
    as_text = pa.schema([(f.name, pa.string() if f.name in bools else f.type) for f in src.schema])
    df = spark.read.csv(
        src.paths, header=True, schema=_spark_schema(as_text), sep=src.csv_sep, mode="FAILFAST", escape='"'
    )
    for name in bools:
        df = df.withColumn(name, _csv_bool(name))
    return df


def _csv_bool(name: str) -> Any:
    """A boolean CSV column read as text, spelled as pyarrow reads it: Spark's own boolean parser
    takes true/false in any case but not 1/0, which pyarrow takes (and pyarrow refuses "tRuE")."""
    import pyarrow.csv as pcsv
    from pyspark.sql import functions as sf

    opts = pcsv.ConvertOptions()
    col = sf.col("`" + name.replace("`", "``") + "`")
    bad = sf.raise_error(sf.concat(sf.lit(f"CSV column '{name}': not a boolean: '"), col, sf.lit("'")))
    return (
        sf.when(col.isNull() | col.isin(list(opts.null_values)), sf.lit(None).cast("boolean"))
        .when(col.isin(list(opts.true_values)), sf.lit(True))
        .when(col.isin(list(opts.false_values)), sf.lit(False))
        .otherwise(bad.cast("boolean"))
    )


def _simple(t: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t)
    )


def _spark_schema(schema: Any) -> Any:
    """A pyarrow schema as Spark's: integers as long, floats as double; anything else as a string
    (a feature then gets the local engine's "not numeric" refusal)."""
    import pyarrow as pa
    from pyspark.sql import types as T

    def spark_type(t: pa.DataType) -> Any:
        if t == pa.uint64():
            return T.DecimalType(20, 0)  # how Spark reads a Parquet UINT64
        if pa.types.is_integer(t):
            return T.LongType()
        if pa.types.is_floating(t):
            return T.DoubleType()
        return T.BooleanType() if pa.types.is_boolean(t) else T.StringType()

    return T.StructType([T.StructField(f.name, spark_type(f.type), True) for f in schema])
