"""bench/gpu/defense_matrix.py: its job list is valid for defense.py, and its scheduler runs jobs,
records their status and packs their small files (checked with --report-only jobs: no training)."""

import json
import tarfile

import pytest

from bench_helpers import bench_modules

SHARED_SETTINGS = ("train_rows", "epochs", "lr", "micro_batch_size", "sequence_len", "sample_packing", "seed",
                   "eval_rows", "task", "gen_task", "max_new_tokens", "max_steps", "target")


@pytest.fixture(scope="module")
def modules():
    with bench_modules("defense", "defense_matrix") as both:
        yield both


def test_jobs_parse_and_jobs_sharing_a_folder_share_their_training_settings(modules):
    defense, matrix = modules
    by_folder = {}
    for folder, job_args in matrix.JOBS:
        args = defense.parse_args(job_args)  # a typo in a flag fails here, not on the GPU machine
        settings = {k: getattr(args, k) for k in SHARED_SETTINGS}
        # one work folder = one clean model: every job in it must train with the same settings
        assert by_folder.setdefault(folder, settings) == settings, folder
    assert len(matrix.JOBS) >= 18 and {"sst2-10pct", "sst2-2pct", "gen-refusal"} <= set(by_folder)


def test_scheduler_runs_jobs_and_packs_their_files(modules, tiny_model, shared_data, tmp_path, capsys):
    _, matrix = modules
    out = tmp_path / "out"
    gen = next(j for j, (folder, _) in enumerate(matrix.JOBS, 1) if folder == "gen-negsentiment")
    matrix.main(["--model", str(tiny_model), "--data-dir", str(shared_data), "--root", str(tmp_path / "root"),
                 "--out", str(out), "--jobs", f"1,{gen}", "--workers", "2", "--extra", "--report-only"])
    with tarfile.open(out / "defense_arms.tar.gz") as tar:
        names = set(tar.getnames())
        status = json.load(tar.extractfile("jobs.json"))
    assert {status["1"]["exit"], status[str(gen)]["exit"]} == {0}, status
    assert status["1"]["folder"] == "sst2-10pct" and status[str(gen)]["folder"] == "gen-negsentiment"
    assert {"job1.log", f"job{gen}.log", "sst2-10pct/badnets-10pct-dirty/attack.json"} <= names
    assert not any(name.endswith((".safetensors", ".jsonl")) for name in names)  # results only, no weights/data
    assert "not finished yet" in (tmp_path / "root" / "job1.log").read_text()


def test_report_covers_every_arm_of_a_folder_split_between_jobs(modules):
    """Jobs that each train some arms of a folder (--arms) are reported together: the report's flags
    are the union of the jobs' lists."""
    defense, matrix = modules
    args = defense.parse_args(matrix.report_args("sst2-2pct"))
    assert set(args.arms) == {"no-defense", "p2p", "clean"}
    assert set(args.attacks) == set(matrix.ATTACKS) and args.rates == [0.02] and args.train_rows == 4000
    authors = defense.parse_args(matrix.report_args("sst2-authors"))
    assert set(authors.selections) == {"avoid_shortcuts", "random"} and authors.micro_batch_size == 32
    ten = defense.parse_args(matrix.report_args("sst2-10pct"))
    assert ten.decoys == [0.0, 0.5] and authors.decoys is None  # the decoy jobs' arms and the plain ones
    assert ten.train_seeds == [0, 1, 2] and authors.train_seeds is None  # the seed-0 arms and the seed jobs'
    audit = defense.parse_args(matrix.report_args("sst2-10pct-audit"))
    assert audit.benign_triggers == [1, 3] and authors.benign_triggers is None  # the vote arms and the one-trigger ones
    assert "p2p-avoid_shortcuts-triggers3-seed1" in defense.p2p_arms(audit)
    assert audit.clean_seeds == [0, 1, 2] and ten.clean_seeds is None  # the clean seed jobs' models and the seed-0 one


def test_scheduler_starts_nothing_after_the_soft_deadline(modules, tiny_model, shared_data, tmp_path):
    _, matrix = modules
    out = tmp_path / "out"
    matrix.main(["--model", str(tiny_model), "--data-dir", str(shared_data), "--root", str(tmp_path / "root"),
                 "--out", str(out), "--jobs", "1,2", "--soft-deadline", "0"])
    with tarfile.open(out / "defense_arms.tar.gz") as tar:
        status = json.load(tar.extractfile("jobs.json"))
    assert {s["exit"] for s in status.values()} == {"not started (soft deadline)"}


def test_pack_only_then_resume_carries_finished_arms(modules, tiny_model, shared_data, tmp_path):
    """Results of an earlier call travel to the next one: --pack-only here, --resume there."""
    _, matrix = modules
    arm = tmp_path / "old" / "sst2-10pct" / "badnets-10pct-dirty" / "no-defense.result.json"
    arm.parent.mkdir(parents=True)
    arm.write_text('{"readings": {}}')
    (arm.parent / "no-defense" / "adapter_model.safetensors").parent.mkdir()
    (arm.parent / "no-defense" / "adapter_model.safetensors").write_bytes(b"weights stay here")
    (tmp_path / "old" / "jobs.json").write_text('{"call1/job1": {"exit": 0}}')
    matrix.main(["--pack-only", "--root", str(tmp_path / "old"), "--out", str(tmp_path / "carry")])
    matrix.main(["--model", str(tiny_model), "--data-dir", str(shared_data), "--root", str(tmp_path / "new"),
                 "--out", str(tmp_path / "out"), "--resume", str(tmp_path / "carry" / "defense_arms.tar.gz"),
                 "--jobs", "1", "--soft-deadline", "0"])
    resumed = tmp_path / "new" / "sst2-10pct" / "badnets-10pct-dirty"
    assert (resumed / "no-defense.result.json").read_text() == '{"readings": {}}'
    assert not (resumed / "no-defense" / "adapter_model.safetensors").exists()
    with tarfile.open(tmp_path / "out" / "defense_arms.tar.gz") as tar:
        status = json.load(tar.extractfile("jobs.json"))
    assert status["call1/job1"] == {"exit": 0} and status["1"]["exit"] == "not started (soft deadline)"
