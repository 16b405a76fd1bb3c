"""The load test both servers take: concurrent clients, each sending its own sequence of requests for a while."""
import threading
import time

import torch

from mst_clipiqa.integrations.serving import RemoteReward


def check_concurrent_clients(url: str, reward, *, clients: int = 16, seconds: float = 3.0, token: str | None = None
                             ) -> int:
    """``clients`` threads score random subsets of a pool for ``seconds``; every request is answered once, in order
    per client, with the in-process scores. Returns how many requests were answered."""
    pool = torch.rand(48, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    prompts = [f"p{i}" for i in range(48)]
    expected = reward(pool, prompts)
    answers: dict[int, list] = {c: [] for c in range(clients)}
    errors = []
    stop = time.monotonic() + seconds

    def client(c):
        remote = RemoteReward(url, token=token)
        k = 0
        try:
            while time.monotonic() < stop:
                index = [(c * 7 + k * 3 + j) % 48 for j in range(1 + (c + k) % 4)]
                answers[c].append((k, index, remote(pool[index], [prompts[i] for i in index])))
                k += 1
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    for c, got in answers.items():
        assert got and [k for k, _, _ in got] == list(range(len(got))), c
        for _, index, scores in got:
            assert torch.allclose(scores, expected[index], atol=1e-5, rtol=0)
    return sum(len(got) for got in answers.values())
