"""A burst of concurrent GETs from one OS process (no Django here: spawned processes
import this module)."""

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier


def fire(url: str, key: str, count: int, barrier: Barrier, out: "Queue[list[int]]") -> None:
    """Wait for every process at the barrier, then send ``count`` requests at once and put
    their status codes on ``out``."""

    def one(_: int) -> int:
        request = urllib.request.Request(url, headers={"X-Api-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    barrier.wait()
    with ThreadPoolExecutor(max_workers=count) as pool:
        out.put(list(pool.map(one, range(count))))
