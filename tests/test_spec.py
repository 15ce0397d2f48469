"""The job spec: the examples load, and every bad input is one SpecError line naming file, field and expectation."""

from __future__ import annotations

import copy
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
import pytest
import yaml

from runner.errors import SpecError
from runner.paths import spotrun_home
from runner.spec import DEFAULT_CHECKPOINT_EVERY_S, JobSpec, load_spec

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits.py"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

COMMAND_JOB: dict[str, Any] = {"name": "job", "train": {"command": "python train.py --epochs 5"}}
MODEL_JOB: dict[str, Any] = {
    "name": "job",
    "train": {
        "model": f"{DIGITS}:DigitsClassifier",
        "model_args": {"lr": 0.1},
        "data": f"{DIGITS}:DigitsData",
        "data_args": {"batch_size": 32},
        "trainer": {"max_epochs": 2},
    },
}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """A SPOTRUN_HOME of the test's own."""
    monkeypatch.setenv("SPOTRUN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def job(base: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """``base`` with sections merged in one level deep; a value of None removes the key."""
    data = copy.deepcopy(base)
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
            data[key] = {k: v for k, v in data[key].items() if v is not None}
        else:
            data[key] = value
    return data


def write(tmp_path: Path, data: Any, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def load(tmp_path: Path, data: Any) -> JobSpec:
    return load_spec(write(tmp_path, data), workdir=tmp_path, now=NOW)


def problem(tmp_path: Path, data: Any, *expected: str) -> str:
    """The one-line message loading ``data`` fails with; checks that it names the file and each of ``expected``."""
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as caught:
        load_spec(path, workdir=tmp_path, now=NOW)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for text in expected:
        assert text in message
    assert caught.value.exit_code == 2
    return message


# ------------------------------------------------------------------ examples


def test_demo_spec_loads_resolved(home):
    spec = load_spec(REPO / "examples" / "digits.yaml", workdir=REPO, now=NOW)
    assert spec.name == "digits"
    assert spec.train.model == f"{DIGITS}:DigitsClassifier"
    assert spec.train.data == f"{DIGITS}:DigitsData"
    assert spec.train.seed == 0
    assert spec.workdir == str(REPO)
    assert spec.checkpoint.url == f"file://{home}/checkpoints/digits"
    assert spec.checkpoint.every_s == 15.0 and spec.checkpoint.every_steps is None
    assert spec.resources.provider == "local"
    assert spec.local is not None and spec.local.preempt_every_s == 120.0 and spec.local.notice_s == 5.0 and spec.local.cpus == 1
    assert spec.budget.deadline_at == NOW + timedelta(hours=1)


def test_command_example_loads():
    spec = load_spec(REPO / "examples" / "custom_script" / "job.yaml", workdir=REPO, now=NOW)
    assert spec.train.command is not None and spec.train.command.startswith("python examples/custom_script/train.py")
    assert spec.train.model is None and spec.train.seed is None
    assert spec.checkpoint.every_steps == 500 and spec.checkpoint.every_s is None


def test_defaults(tmp_path, home):
    spec = load(tmp_path, COMMAND_JOB)
    assert spec.checkpoint.url == f"file://{home}/checkpoints/job"
    assert spec.checkpoint.every_s == DEFAULT_CHECKPOINT_EVERY_S and spec.checkpoint.keep == 3
    assert spec.resources.market == "spot" and spec.resources.nodes == 1
    assert spec.local is not None and spec.local.preempt_every_s == 0.0
    assert spec.budget.max_usd is None and spec.budget.deadline_at is None


def test_spotrun_home_defaults_to_dot_spotrun(monkeypatch, tmp_path):
    monkeypatch.delenv("SPOTRUN_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert spotrun_home() == tmp_path / ".spotrun"


# ------------------------------------------------------------ JSON round trip


def test_json_round_trip_needs_no_import_checks(tmp_path):
    model_file = tmp_path / "model.py"
    shutil.copy(DIGITS, model_file)
    relative = {"model": "model.py:DigitsClassifier", "data": "model.py:DigitsData"}
    spec = load(tmp_path, job(MODEL_JOB, train=relative, budget={"deadline": "2h"}))
    model_file.unlink()  # reading back must not look at the file again

    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.train.model == f"{model_file}:DigitsClassifier" and spec.train.data == f"{model_file}:DigitsData"
    assert spec.budget.deadline_at == NOW + timedelta(hours=2)


def test_json_keeps_seconds(tmp_path):
    spec = load(tmp_path, job(COMMAND_JOB, checkpoint={"every": "90s"}, local={"preempt_every": "2m", "notice": "5s"}))
    dumped = spec.model_dump(mode="json")
    assert dumped["checkpoint"]["every_s"] == 90.0
    assert dumped["local"] == dumped["local"] | {"preempt_every_s": 120.0, "notice_s": 5.0}


# ------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90.0), ("5m", 300.0), ("2h", 7200.0), ("1.5m", 90.0), (45, 45.0)])
def test_durations(tmp_path, text, seconds):
    assert load(tmp_path, job(COMMAND_JOB, checkpoint={"every": text})).checkpoint.every_s == seconds


@pytest.mark.parametrize("text", ["5 minutes", "-3s", "soon", True])
def test_bad_duration(tmp_path, text):
    problem(tmp_path, job(COMMAND_JOB, checkpoint={"every": text}), "checkpoint.every: expected a duration such as 90s, 5m or 2h, got")


def test_zero_checkpoint_interval(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, checkpoint={"every": "0s"}), "checkpoint.every: expected a positive duration")


def test_deadline_as_iso_time(tmp_path):
    spec = load(tmp_path, job(COMMAND_JOB, budget={"deadline": "2030-01-02T08:00:00+02:00"}))
    assert spec.budget.deadline_at == datetime(2030, 1, 2, 6, 0, tzinfo=UTC)


def test_deadline_as_yaml_timestamp(tmp_path):
    spec = load(tmp_path, "name: job\ntrain: {command: python x.py}\nbudget: {deadline: 2030-01-02T06:00:00Z}\n")
    assert spec.budget.deadline_at == datetime(2030, 1, 2, 6, 0, tzinfo=UTC)


def test_deadline_without_timezone(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, budget={"deadline": "2030-01-02T08:00:00"}), "budget.deadline: expected a timezone", "2030-01-02T08:00:00")


def test_deadline_as_bare_date(tmp_path):
    problem(tmp_path, "name: job\ntrain: {command: python x.py}\nbudget: {deadline: 2030-01-02}\n", "budget.deadline: expected a duration such as 12h or an ISO-8601 time")


def test_deadline_in_the_past(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, budget={"deadline": "2029-12-31T00:00:00Z"}), "budget.deadline: expected a deadline in the future")


# ---------------------------------------------------------- checkpoint URLs


def test_default_checkpoint_url_follows_spotrun_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTRUN_HOME", str(tmp_path / "elsewhere"))
    assert load(tmp_path, COMMAND_JOB).checkpoint.url == f"file://{tmp_path}/elsewhere/checkpoints/job"


@pytest.mark.parametrize(
    ("url", "resolved"),
    [("ckpts/run1", "file://{tmp}/ckpts/run1"), ("/data/ckpts/", "file:///data/ckpts"), ("file:///data/x", "file:///data/x")],
)
def test_plain_paths_become_absolute_file_urls(tmp_path, url, resolved):
    spec = load(tmp_path, job(COMMAND_JOB, checkpoint={"url": url}))
    assert spec.checkpoint.url == resolved.format(tmp=tmp_path)


def test_s3_url_on_aws(tmp_path):
    spec = load(tmp_path, job(COMMAND_JOB, checkpoint={"url": "s3://bucket/runs/"}, resources={"provider": "aws", "instance_types": ["g5.xlarge"]}))
    assert spec.checkpoint.url == "s3://bucket/runs"
    assert spec.local is None


def test_unknown_protocol(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, checkpoint={"url": "ftps3://bucket/x"}), "checkpoint.url: expected a URL with a protocol fsspec knows", "s3://bucket/prefix", "'ftps3://bucket/x'")


def test_protocol_whose_backend_is_missing(tmp_path, monkeypatch):
    def missing(protocol: str):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    problem(tmp_path, job(COMMAND_JOB, checkpoint={"url": "s3://bucket/x"}), "checkpoint.url: expected a protocol whose fsspec backend is installed (Install s3fs")


def test_memory_url_is_not_shared(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, checkpoint={"url": "memory://x"}), "checkpoint.url: expected storage shared between processes")


def test_aws_needs_an_object_store_url(tmp_path):
    aws = {"provider": "aws", "instance_types": ["g5.xlarge"]}
    problem(tmp_path, job(COMMAND_JOB, resources=aws), "checkpoint.url: expected a URL the instances can reach", "got nothing")
    problem(tmp_path, job(COMMAND_JOB, resources=aws, checkpoint={"url": "/data/x"}), "checkpoint.url: expected a URL the aws instances can reach")


# ------------------------------------------------------------- bad sections


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"nmae": "x"}, ["nmae: expected one of the keys budget, checkpoint, local, name,", "(did you mean name?)", "got unknown key 'nmae'"]),
        ({"train": {"modle": "x.py:M"}}, ["train.modle: expected one of the keys", "(did you mean model?)"]),
        ({"checkpoint": {"every_step": 5}}, ["checkpoint.every_step:", "(did you mean every_steps?)"]),
        ({"name": None}, ["name: expected a value (required), got nothing"]),
        ({"name": "Digits_1"}, ["name: expected lowercase letters, digits and '-'", "got 'Digits_1'"]),
        ({"name": "x" * 64}, ["name: expected lowercase letters"]),
        ({"name": 7}, ["name: expected a valid string, got 7"]),
        ({"tags": {"cost-center": 1234}}, ["tags.cost-center: expected a valid string, got 1234"]),
        ({"checkpoint": {"keep": "3"}}, ["checkpoint.keep: expected a valid integer, got '3'"]),
        ({"checkpoint": {"keep": 0}}, ["checkpoint.keep: expected greater than or equal to 1, got 0"]),
        ({"checkpoint": {"keep_every": 0}}, ["checkpoint.keep_every: expected greater than or equal to 1, got 0"]),
        ({"checkpoint": {"every": "5m", "every_steps": 200}}, ["checkpoint: expected every or every_steps, not both, got both"]),
        ({"checkpoint": ["every", "5m"]}, ["checkpoint: expected a mapping of keys to values, got ['every', '5m']"]),
        ({"resources": {"market": "cheap"}}, ["resources.market: expected 'spot', 'on-demand' or 'auto', got 'cheap'"]),
        ({"resources": {"provider": "gcp"}}, ["resources.provider: expected 'local' or 'aws', got 'gcp'"]),
        ({"resources": {"nodes": 0}}, ["resources.nodes: expected", "greater than or equal to 1", "got 0"]),
        ({"resources": {"max_restarts_on_errors": -1}}, ["resources.max_restarts_on_errors: expected greater than or equal to 0"]),
        ({"resources": {"instance_types": "g5.xlarge"}}, ["resources.instance_types: expected a valid list, got 'g5.xlarge'"]),
        ({"resources": {"provider": "aws"}, "checkpoint": {"url": "s3://b/x"}}, ["resources.instance_types: expected at least one EC2 instance type"]),
        (
            {"resources": {"provider": "aws", "instance_types": ["g5.xlarge", "big gpu"]}, "checkpoint": {"url": "s3://b/x"}},
            ["resources.instance_types[1]: expected an EC2 instance type such as g5.xlarge, got 'big gpu'"],
        ),
        (
            {"resources": {"provider": "aws", "instance_types": ["g5.xlarge"]}, "checkpoint": {"url": "s3://b/x"}, "local": {"notice": "5s"}},
            ["local: expected no local section with provider aws"],
        ),
        ({"local": {"spot_price": -0.1}}, ["local.spot_price: expected greater than or equal to 0, got -0.1"]),
        ({"local": {"on_demand_price": "1.0"}}, ["local.on_demand_price: expected a valid number, got '1.0'"]),
        ({"local": {"spot_price": 2.0, "on_demand_price": 1.0}}, ["local.spot_price: expected at most on_demand_price (1.0), got 2.0"]),
        ({"local": {"seed": True}}, ["local.seed: expected a valid integer, got True"]),
        ({"local": {"cpus": 0}}, ["local.cpus: expected greater than or equal to 1, got 0"]),
        ({"budget": {"max_usd": -5}}, ["budget.max_usd: expected greater than 0, got -5"]),
        ({"budget": {"deadline": "tomorrow"}}, ["budget.deadline: expected a duration such as 12h or an ISO-8601 time"]),
        ({"train": {"command": None}}, ["train: expected exactly one of model (a LightningModule class) or command (your own script), got neither"]),
        ({"train": {"model": "m.py:M"}}, ["train: expected exactly one of model", "got both"]),
        ({"train": {"data": "d.py:D"}}, ["train.data: expected no data with train.command", "got 'd.py:D'"]),
        ({"train": {"model_args": {"lr": 1}}}, ["train.model_args: expected no model_args with train.command"]),
        ({"train": {"trainer": {"max_epochs": 1}}}, ["train.trainer: expected no trainer with train.command"]),
        ({"train": {"seed": 1}}, ["train.seed: expected no seed with train.command"]),
        ({"train": {"command": "python 'unclosed"}}, ["train.command: expected a shell command line (No closing quotation)"]),
        ({"train": {"command": "   "}}, ["train.command: expected a command line such as"]),
        ({"workdir": "/elsewhere"}, ["workdir: expected no workdir (spotrun records the directory it runs from)"]),
    ],
)
def test_bad_input_is_one_line_naming_file_field_and_expectation(tmp_path, sections, expected):
    problem(tmp_path, job(COMMAND_JOB, **sections), *expected)


def test_several_problems_report_the_first_and_count_the_rest(tmp_path):
    message = problem(tmp_path, job(COMMAND_JOB, checkpoint={"keep": "x", "every_steps": "y"}, resources={"nodes": "z"}))
    assert message.endswith("(+2 more)")


# ----------------------------------------------------------------- the file


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: expected a readable job spec file, got No such file or directory"):
        load_spec(tmp_path / "nope.yaml")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(SpecError, match="expected a readable job spec file, got Is a directory"):
        load_spec(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "expected valid YAML, got"),
        ("name: a\nname: b\ntrain: {command: x}\n", "line 2: expected valid YAML, got duplicate key 'name'"),
        ("train:\n  command: x\n  command: y\nname: a\n", "line 3: expected valid YAML, got duplicate key 'command'"),
        ("", "expected a mapping of job fields (name:, train:, ...), got an empty file"),
        ("- name: a\n", "expected a mapping of job fields (name:, train:, ...), got a list [{'name': 'a'}]"),
        ("just words\n", "got a str 'just words'"),
    ],
)
def test_not_a_yaml_mapping(tmp_path, text, expected):
    problem(tmp_path, text, expected)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    spec = load(tmp_path, "name: job\ntrain: {command: python x.py}\ncheckpoint:\n  <<: {keep: 2, every: 1m}\n  keep: 5\n")
    assert spec.checkpoint.keep == 5 and spec.checkpoint.every_s == 60.0


# ------------------------------------------------ model references and imports


def test_relative_reference_prefers_the_current_directory(tmp_path):
    (tmp_path / "jobs").mkdir()
    shutil.copy(DIGITS, tmp_path / "model.py")
    shutil.copy(DIGITS, tmp_path / "jobs" / "model.py")
    path = write(tmp_path, job(MODEL_JOB, train={"model": "model.py:DigitsClassifier"}), name="jobs/job.yaml")
    assert load_spec(path, workdir=tmp_path, now=NOW).train.model == f"{tmp_path}/model.py:DigitsClassifier"


def test_relative_reference_falls_back_to_the_spec_directory(tmp_path):
    (tmp_path / "jobs").mkdir()
    shutil.copy(DIGITS, tmp_path / "jobs" / "model.py")
    path = write(tmp_path, job(MODEL_JOB, train={"model": "model.py:DigitsClassifier"}), name="jobs/job.yaml")
    assert load_spec(path, workdir=tmp_path, now=NOW).train.model == f"{tmp_path}/jobs/model.py:DigitsClassifier"


def test_reference_found_nowhere_says_where_it_looked(tmp_path):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"model": "missing.py:Model"}),
        "train.model: expected an existing Python file relative to the current directory",
        f"({tmp_path}) or to the spec's ({tmp_path})",
        "got 'missing.py:Model'",
    )


def test_malformed_reference(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"data": "digits.DigitsData"}), "train.data: expected 'path/to/file.py:Class' or 'package.module:Class', got 'digits.DigitsData'")


def test_class_missing_from_the_file(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"model": f"{DIGITS}:Classifier"}), "train.model: expected a class Classifier", "its LightningModule subclasses: DigitsClassifier")


def test_data_module_given_as_model(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"model": f"{DIGITS}:DigitsData"}), "train.model: expected a LightningModule subclass", "deriving from LightningDataModule")


def test_model_given_as_data_module(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"data": f"{DIGITS}:DigitsClassifier"}), "train.data: expected a LightningDataModule subclass")


def test_model_without_data_needs_its_own_loader(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"data": None, "data_args": None}), "train.data: expected a LightningDataModule, since DigitsClassifier defines no train_dataloader(), got nothing")


def test_data_args_without_data(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"data": None}), "train.data_args: expected no data_args without train.data")


def test_unknown_model_argument(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"model_args": {"learning_rate": 0.1}}), "train.model_args: expected arguments accepted by DigitsClassifier(", "unexpected keyword argument 'learning_rate'")


def test_unknown_trainer_argument(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"trainer": {"max_epoch": 3}}), "train.trainer.max_epoch: expected a lightning.Trainer argument (did you mean max_epochs?), got unknown argument 'max_epoch'")


@pytest.mark.parametrize("value", [0, -2, "three", 2.5, True])
def test_accumulate_grad_batches_is_a_whole_number_of_batches(tmp_path, value):
    problem(tmp_path, job(MODEL_JOB, train={"trainer": {"accumulate_grad_batches": value}}),
            "train.trainer.accumulate_grad_batches: expected a whole number of batches, 1 or more, got")


def test_trainer_callbacks_come_from_the_model(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"trainer": {"callbacks": ["EarlyStopping"]}}), "train.trainer.callbacks: expected callbacks from the model's configure_callbacks()")


def test_valid_model_job(tmp_path):
    spec = load(tmp_path, MODEL_JOB)
    assert spec.train.model_args == {"lr": 0.1} and spec.train.trainer == {"max_epochs": 2}
    assert spec.train.seed == 0
