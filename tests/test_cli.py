"""The `fastcorr` command: `bench` at a tiny size (what it reports, not how fast) and `info`."""

import json
import subprocess
import sys
import time

import pytest

from fastcorr import _bench, cli
from fastcorr._bench_run import check, in_turn, prepare


def test_implementations_are_timed_in_turn():
    """One call of each a round, so that the rows of a problem meet the same moments of a
    shared machine; one whose calls have used up the budget stops after three."""
    log = []
    calls = [(lambda i=i: log.append(i), lambda: None) for i in range(3)]
    out = in_turn(calls, 4)
    assert log == [0, 1, 2] * 4
    assert [len(t) for t in out] == [4, 4, 4]
    log.clear()
    slow = (lambda: (log.append("slow"), time.sleep(0.02)), lambda: None)
    out = in_turn([calls[0], slow], 5, budget=0.05)
    assert log == [0, "slow"] * 3 + [0, 0]
    assert [len(t) for t in out] == [5, 3] and min(out[1]) >= 0.02


def test_bench_json_table_and_skipped_peers(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert cli.main(["bench", "--shape", "2,4,4,8", "--repeats", "3", "--axis", "-1", "1",
                     "--ops", "corr_loss_and_grad", "correlation_vjp",
                     "--peers", "numpy", "torch", "jax.jit", "cupy",
                     "--json", str(path)]) == 0
    table = capsys.readouterr().out
    d = json.loads(path.read_text())
    rows = d["results"]
    assert {(r["op"], r["axis"]) for r in rows} == {
        (op, ax) for op in ("corr_loss_and_grad", "correlation_vjp") for ax in (-1, 1)}
    for r in rows:
        assert r["backend"] == "cpu" and r["calls"] == 3 and r["shape"] == [2, 4, 4, 8]
        assert r["q1_s"] <= r["median_s"] <= r["q3_s"]
        assert r["bytes"] == 4 * 2 * 4 * 4 * 8 * 4  # 4 float32 array passes
        assert r["gb_per_s"] == pytest.approx(r["bytes"] / r["median_s"] / 1e9)
        if r["impl"] == "numpy":
            assert r["x_numpy"] == pytest.approx(1.0)
    impls = {r["impl"] for r in rows}
    assert {"fastcorr", "fastcorr out=", "numpy"} <= impls
    # a peer that is not installed is listed, with why, and not an error; CuPy has no CPU
    # rows at all
    skipped = {s["impl"]: s["why"] for s in d["skipped"]}
    assert "cupy" not in impls and "cupy" not in skipped
    for peer in ("torch", "jax.jit"):
        assert (peer in impls) != (peer in skipped)
        if peer in skipped:
            assert "installed" in skipped[peer]
            assert f"skipped: {peer} on cpu" in table
    assert d["info"]["machine"]["cores"] >= 1 and "numba" in d["info"]
    assert "corr_loss_and_grad  axis=-1" in table and "x numpy" in table


def test_bench_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "s.png"
    assert cli.main(["bench", "--shape", "1,8,8,4", "--repeats", "1", "--axis", "1",
                     "--ops", "product_loss_and_grad", "--peers", "numpy",
                     "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_checks_peers_before_timing_them():
    p = _bench.Problem("corr_loss_and_grad", (2, 3, 4), "float32", 1, "cpu")
    data = p.inputs()
    *_, want = prepare(_bench.IMPLS["fastcorr"], p, data)
    *_, got = prepare(_bench.IMPLS["numpy"], p, data)
    check(p, got, want)
    wrong = (want[0], want[1] * 1.01, want[2])
    with pytest.raises(AssertionError):
        check(p, wrong, want)


def test_bad_arguments_are_refused(capsys):
    """A mistake on the command line: one line naming it, exit status 2, no usage block."""
    for argv, word in ((["bench", "--shape", "2,x"], "shape"),
                       (["bench", "--shape", "2,0"], "positive"),
                       (["bench", "--ops", "nope"], "nope"),
                       (["bench", "--axis", "one"], "axis"),
                       (["bench", "--threads", "99"], "threads"),
                       (["bench", "--threads", "0"], "threads"),
                       (["bench", "--repeats", "0"], "repeats"),
                       (["bench", "--load", "-1"], "load"),
                       (["bench", "--json", "/nonexistent/x.json"], "no folder"),
                       (["bench", "--plot", "."], "it is a folder"),
                       (["bench-volume", "--json", "/nonexistent/x.json"], "no folder"),
                       (["bench-volume", "--threads", "x"], "threads"),
                       (["stereo", "missing.png", "other.png"], "missing.png"),
                       (["stereo", "left.png"], "both"),
                       (["frobnicate"], "frobnicate")):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert word in err and err.count("\n") == 1, err


def test_mistakes_found_while_running_are_one_line():
    """A value the command can only refuse once it runs (here a volume with no output)."""
    r = subprocess.run([sys.executable, "-m", "fastcorr", "bench-volume", "--shape",
                        "1,4,4,2", "--max-displacement", "9", "--pad", "0", "--peers"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if not line.startswith("[")]
    assert len(lines) == 1 and "leaves no output" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_busy_processes_end_with_the_bench_however_it_ends():
    """`bench --load`'s busy processes end when the block ends, and when the process that
    started them is killed without running it (SIGKILL, or SIGTERM's default)."""
    code = ("import os, time\nfrom fastcorr._bench import Load\n"
            "with Load(2) as load:\n"
            "    print(*(p.pid for p in load.procs), flush=True)\n"
            "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
    with _bench.Load(1) as load:
        (proc,) = load.procs
    assert proc.poll() is not None


def _alive(pid):
    try:  # a child of a killed parent is reaped by init: gone, not a zombie of ours
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_bench_over_every_axis_with_out():
    """axis None: the correlation's out= row takes a 0-d array (the fresh call gives a
    scalar)."""
    assert cli.main(["bench", "--shape", "2,4,4,4", "--peers", "--repeats", "1", "--ops",
                     "correlation", "corr_loss_and_grad", "--axis", "None"]) == 0


def test_an_interrupted_command_says_so_in_one_line(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_main", interrupted)
    assert cli.main(["bench"]) == 130
    assert capsys.readouterr().err == "fastcorr bench: interrupted\n"


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "fastcorr", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("bench", "bench-volume", "info", "compile", "stereo"):
        assert command in out


def test_info_and_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "fastcorr", "info"], capture_output=True,
                         text=True, check=True).stdout
    for word in ("fastcorr: ", "numba: ", "threads: ", "kernel cache: ",
                 "cuda:", "usable: "):
        assert word in out, out


def test_bench_volume(tmp_path, capsys):
    path = tmp_path / "v.json"
    assert cli.main(["bench-volume", "--shape", "1,8,9,3", "--max-displacement", "1",
                     "--stride2", "1", "--repeats", "2", "--peers", "numpy",
                     "spatial-correlation-sampler", "--json", str(path)]) == 0
    text = capsys.readouterr().out
    for op in ("forward", "forward+backward", "loss_and_grad"):
        assert f"\n{op}\n" in text
    assert "numpy" in text and "memory" in text
    assert "spatial-correlation-sampler" in text  # a row, or skipped with the reason
    data = json.loads(path.read_text())
    names = {(r["op"], r["impl"]) for r in data["results"]}
    assert ("forward", "fastcorr") in names and ("loss_and_grad", "numpy") in names
    assert data["memory_bytes"]["volume"] == 1 * 8 * 9 * 9 * 4
    # the row format of `fastcorr bench`, less what only its table shows
    for r in data["results"]:
        assert r["calls"] == len(r["times"]) == 2 and r["shape"] == [1, 8, 9, 3]
        assert r["q1_s"] <= r["median_s"] <= r["q3_s"] and r["first_result_s"] >= 0
        if r["impl"] == "fastcorr":
            assert r["x_fastcorr"] == pytest.approx(1.0)
    for s in data["skipped"]:
        assert s["impl"] == "spatial-correlation-sampler" and "installed" in s["why"]


def test_bench_volume_quick_leaves_out_torch_compile():
    """--quick is quick: torch.compile (minutes of compilation) only where --peers names it."""
    parse = cli.Parser(prog="fastcorr")
    sub = parse.add_subparsers(dest="command", parser_class=cli.Parser)
    cli._volume_parser(sub.add_parser("bench-volume"))
    quick = cli._volume_settings(parse.parse_args(["bench-volume", "--quick"]))
    assert "torch.compile" not in quick["impls"] and "torch" in quick["impls"]
    full = cli._volume_settings(parse.parse_args(["bench-volume"]))
    assert "torch.compile" in full["impls"]
    named = cli._volume_settings(parse.parse_args(["bench-volume", "--quick", "--peers",
                                                   "torch.compile"]))
    assert named["impls"] == ["fastcorr", "torch.compile"]
