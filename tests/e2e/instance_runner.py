"""Plays EC2's part for instances moto only pretends to run.

It watches moto for running spotrun instances and, for each, does what the launch template's user
data does on EC2: serves the instance's metadata (IMDSv2, with its tags) and starts
`spotrun agent --from-instance-tags` in a process group of its own. When the agent exits, the
instance shuts itself down (terminated in moto with the instance-initiated reason); when moto
says an instance is gone, its processes are killed. ``interrupt`` is a spot interruption: the
notice on the metadata service, then, ``notice_s`` later, termination with the spot reason and
the processes killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_support import ACCOUNT, REGION, ec2_client, interrupt_in_moto
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason

from cloud.imds import MetadataServer
from cloud.provider import TAG_JOB

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningInstance:
    instance_id: str
    tags: dict[str, str]
    zone: str
    metadata: MetadataServer
    process: subprocess.Popen[bytes]


class InstanceRunner:
    def __init__(self, moto_endpoint: str, logs: Path, env: dict[str, str]) -> None:
        self.moto_endpoint = moto_endpoint
        self.logs = logs
        self.env = env
        self.instances: dict[str, RunningInstance] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="instance-runner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        client = ec2_client(self.moto_endpoint)
        while not self._stop.wait(0.2):
            described = client.describe_instances(Filters=[{"Name": "tag-key", "Values": [TAG_JOB]}])
            for reservation in described["Reservations"]:
                for instance in reservation["Instances"]:
                    self._step(instance)

    def _step(self, described: dict[str, Any]) -> None:
        instance_id, state = described["InstanceId"], described["State"]["Name"]
        with self._lock:
            running = self.instances.get(instance_id)
            if state == "running" and instance_id not in self._seen:
                self._seen.add(instance_id)
                tags = {tag["Key"]: tag["Value"] for tag in described.get("Tags", [])}
                self.instances[instance_id] = self._boot(instance_id, tags, described["Placement"]["AvailabilityZone"])
            elif running is not None and state in ("shutting-down", "terminated"):
                self._kill(running)
            elif running is not None and running.process.poll() is not None:
                # The user data's last line: the instance shuts itself down when the agent is done.
                backend = ec2_backends[ACCOUNT][REGION]
                backend.terminate_instances([instance_id])
                backend.get_instance(instance_id).state_reason = StateReason(
                    "Client.InstanceInitiatedShutdown: Instance initiated shutdown", "Client.InstanceInitiatedShutdown"
                )
                self._kill(running)

    def _boot(self, instance_id: str, tags: dict[str, str], zone: str) -> RunningInstance:
        metadata = MetadataServer(instance_id, tags=tags)
        endpoint = metadata.start()
        log = open(self.logs / f"{instance_id}.log", "wb")  # owned by the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner",
                "agent",
                "--from-instance-tags",
                "--metadata-endpoint",
                endpoint,
                "--poll-interval",
                "0.5",
                "--heartbeat-interval",
                "1",
            ],
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return RunningInstance(instance_id, tags, zone, metadata, process)

    def _kill(self, instance: RunningInstance) -> None:
        if instance.process.poll() is None:
            os.killpg(instance.process.pid, signal.SIGKILL)
            instance.process.wait()
        instance.metadata.close()
        self.instances.pop(instance.instance_id, None)

    def running(self) -> list[RunningInstance]:
        with self._lock:
            return [instance for instance in self.instances.values() if instance.process.poll() is None]

    def interrupt(self, instance_id: str, notice_s: float) -> None:
        """A spot interruption: the two-step notice, then EC2 takes the instance back."""
        with self._lock:
            instance = self.instances[instance_id]
        instance.metadata.schedule_interruption(time.time() + notice_s)
        time.sleep(notice_s)
        with self._lock:
            interrupt_in_moto(instance_id)
            self._kill(instance)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            for instance in list(self.instances.values()):
                self._kill(instance)
