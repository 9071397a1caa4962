"""Load on ns-localize-server: N concurrent clients x M requests each, on 2 CPU cores.

    python -m benchmarks.server_load --load-config RUN/config.yml --query-dir DIR [--clients 4 --requests 5]

Starts the server as its own process (as a robot's host would run it), waits for /health, then every client posts
the folder's queries in turn (with their intrinsics from transforms.json). Reports latency p50 / p95 of the answered
requests, how many were answered 200 / 503 (busy) / other or lost, and the server's resident memory before, during
and after (psutil; also after each answered request, to see whether it grows), as JSON.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import httpx
import numpy as np
import psutil
import tyro
from rich.console import Console

from benchmarks.server_process import running_server
from crossfire_ns.io.atomic import write_json_atomic
from crossfire_ns.io.queries import load_query_set

CONSOLE = Console()


def tree_memory(process: psutil.Process) -> Dict[str, object]:
    """Resident memory (MB) of ``process`` with all its descendants, and of each Ray Serve replica among them."""
    members = [process, *process.children(recursive=True)]
    total, replicas = 0.0, []
    for member in members:
        try:
            rss = member.memory_info().rss / 2**20
            title = " ".join(member.cmdline())
        except psutil.Error:
            continue
        total += rss
        if "ServeReplica" in title:
            replicas.append(round(rss, 1))
    return {"tree_mb": round(total, 1), "replica_mb": sorted(replicas)}


@dataclass
class ServerLoad:
    load_config: Path
    """config.yml of a trained crossfire map."""
    query_dir: Path
    """Queries to post (a transforms.json with intrinsics)."""
    clients: int = 4
    """Concurrent clients."""
    requests: int = 5
    """Requests per client."""
    queue_size: int = 8
    """The server's queue (more waiting requests are answered 503)."""
    output: Optional[Path] = None
    """Also write the figures here as JSON."""
    replicas: int = 0
    """> 0: the server runs this many replicas on Ray Serve (one torch thread each); memory is then reported per
    replica and for the server's whole process tree (Ray's own processes included)."""

    def main(self) -> Dict:
        queries, _ = load_query_set(self.query_dir)
        payloads = [(q.path.name, q.path.read_bytes(), q.K) for q in queries]
        started = time.perf_counter()
        flags = ["--queue-size", str(self.queue_size)]
        if self.replicas > 0:
            flags += ["--replicas", str(self.replicas), "--torch-threads", "1"]
        with running_server(self.load_config, *flags) as (server, url):
            load_seconds = time.perf_counter() - started
            process = psutil.Process(server.pid)
            memory = {"after_load_mb": process.memory_info().rss / 2**20, **tree_memory(process)}
            samples: List[float] = []
            after_request: List[float] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append(process.memory_info().rss / 2**20)
                    stop.wait(0.5)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            def client(index: int) -> List[tuple]:
                out = []
                with httpx.Client(timeout=600) as session:
                    for request in range(self.requests):
                        name, data, K = payloads[(index + request) % len(payloads)]
                        form = {} if K is None else {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}
                        start = time.perf_counter()
                        try:
                            code = session.post(
                                f"{url}/localize",
                                files={"image": (name, data)},
                                data={k: str(v) for k, v in form.items()},
                            ).status_code
                        except httpx.HTTPError as err:
                            code = f"lost: {type(err).__name__}"
                        out.append((code, time.perf_counter() - start))
                        after_request.append(process.memory_info().rss / 2**20)
                return out

            wall = time.perf_counter()
            with ThreadPoolExecutor(self.clients) as pool:
                calls = [c for batch in pool.map(client, range(self.clients)) for c in batch]
            wall = time.perf_counter() - wall
            stop.set()
            sampler.join()
            memory.update({f"after_{key}": value for key, value in tree_memory(process).items()})
            memory.update(
                during_max_mb=max(samples) if samples else None,
                after_each_request_mb=[round(m, 1) for m in after_request],
                after_mb=process.memory_info().rss / 2**20,
            )
        answered = [seconds for code, seconds in calls if code == 200]
        codes: Dict[str, int] = {}
        for code, _ in calls:
            codes[str(code)] = codes.get(str(code), 0) + 1
        report = {
            "replicas": self.replicas,
            "clients": self.clients,
            "requests_per_client": self.requests,
            "codes": codes,
            "lost": sum(1 for code, _ in calls if code not in (200, 503)),
            "latency_p50_s": float(np.percentile(answered, 50)) if answered else None,
            "latency_p95_s": float(np.percentile(answered, 95)) if answered else None,
            "throughput_per_s": len(answered) / wall,
            "wall_s": wall,
            "map_load_s": load_seconds,
            "memory_mb": memory,
        }
        CONSOLE.print_json(json.dumps(report))
        if self.output is not None:
            write_json_atomic(self.output, report)
        return report


if __name__ == "__main__":
    tyro.cli(ServerLoad).main()
